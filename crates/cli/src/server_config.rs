//! `epoch start --config-file PATH`: server options from a TOML file.
//!
//! Every `epoch start` option may be a key of the file, spelt as the flag without its dashes
//! (`default-database = "proj"` or `default_database = "proj"`). A flag given on the command line
//! or through its environment variable wins over the file. Relative `*-dir` and `*-file` paths
//! are taken relative to the file's directory. The file's values go through the same parser as
//! flags, so a bad value gets the same error a bad flag would; an unknown key is refused.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::CommandFactory;

/// `args` with the options of `epoch start`'s config file (if one is named) appended as flags.
pub fn apply<C: CommandFactory>(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let cmd = C::command();
    // A command line clap rejects is left for the real parse to report.
    let Ok(matches) = cmd.clone().try_get_matches_from(&args) else { return Ok(args) };
    let Some(("start", start)) = matches.subcommand() else { return Ok(args) };
    let Some(path) = start.get_one::<std::path::PathBuf>("config_file").cloned() else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    let start_cmd = cmd.find_subcommand("start").context("the start command")?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut extra = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let known = start_cmd.get_arguments().find(|a| a.get_id() == id.as_str() && a.get_long().is_some());
        let Some(long) = known.and_then(|a| a.get_long()).filter(|_| id != "config_file") else {
            let names: Vec<&str> =
                start_cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config-file").collect();
            bail!("{}: unknown option `{key}` (known: {})", path.display(), names.join(", "));
        };
        if matches!(start.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let is_path = long.ends_with("-dir") || long.ends_with("-file");
        let flag = format!("--{long}");
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) if is_path && Path::new(s).is_relative() => base.join(s).display().to_string(),
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("{}: option `{key}` cannot be {}", path.display(), other.type_str()),
            })
        };
        match &value {
            toml::Value::Boolean(true) => extra.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    extra.push(flag.clone().into());
                    extra.push(scalar(item)?.into());
                }
            }
            v => {
                extra.push(flag.into());
                extra.push(scalar(v)?.into());
            }
        }
    }
    let mut out = args;
    out.extend(extra);
    Ok(out)
}
