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
        // A key names the flag (`trusted-issuer`), in either spelling (`trusted_issuer`).
        let wanted = key.replace('_', "-");
        let known = start_cmd.get_arguments().find(|a| a.get_long() == Some(wanted.as_str()));
        let Some((id, long)) =
            known.and_then(|a| Some((a.get_id().to_string(), a.get_long()?))).filter(|(_, l)| *l != "config-file")
        else {
            let names: Vec<&str> =
                start_cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config-file").collect();
            bail!("{}: unknown option `{key}` (known: {})", path.display(), names.join(", "));
        };
        if matches!(start.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let is_path = long.ends_with("-dir") || long.ends_with("-file");
        let relative = |p: &str| if Path::new(p).is_relative() { base.join(p).display().to_string() } else { p.into() };
        let flag = format!("--{long}");
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) if is_path => relative(s),
                // ISSUER=PEM_FILE: the PEM path follows the file too.
                toml::Value::String(s) if long == "trusted-issuer" => match s.split_once('=') {
                    Some((issuer, pem)) => format!("{issuer}={}", relative(pem)),
                    None => s.clone(),
                },
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("{}: option `{key}` cannot be {}", path.display(), other.type_str()),
            })
        };
        // `--flag=value`, so a value that starts with `-` is not taken for a flag.
        match &value {
            toml::Value::Boolean(true) => extra.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    extra.push(format!("{flag}={}", scalar(item)?).into());
                }
            }
            v => extra.push(format!("{flag}={}", scalar(v)?).into()),
        }
    }
    let mut out = args;
    out.extend(extra);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn keys_in_either_spelling_become_flags_with_values_that_may_start_with_a_dash() {
        let dir = std::env::temp_dir().join(format!("epoch-server-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("epoch.toml");
        std::fs::write(
            &path,
            "trusted-issuer = [\"https://id.example=keys/id.pem\"]\ndefault_database = \"-odd\"\nin-memory = true\n\
             recover-truncate = false\n",
        )
        .unwrap();
        let args = ["epoch", "start", "--config-file", path.to_str().unwrap()].map(std::ffi::OsString::from).to_vec();
        let out = super::apply::<crate::Cli>(args).unwrap();
        let out: Vec<String> = out.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let pem = dir.join("keys/id.pem").display().to_string();
        assert!(out.contains(&format!("--trusted-issuer=https://id.example={pem}")), "{out:?}");
        assert!(out.contains(&"--default-database=-odd".to_string()), "{out:?}");
        assert!(out.contains(&"--in-memory".to_string()), "{out:?}");
        assert!(!out.iter().any(|a| a.contains("recover-truncate")), "{out:?}");
        assert!(crate::Cli::try_parse_from(&out).is_ok(), "{out:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
