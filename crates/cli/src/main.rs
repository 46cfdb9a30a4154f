//! `epoch`: the command-line entry point. Thin by design: it parses arguments and wires crates.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use epoch_core::{Caller, Database, HostConfig, ReducerArgs};

use crate::limits::SHUTDOWN_GRACE;

mod archive_cmd;
mod bench;
mod client;
mod limits;
mod server_config;
mod subscribe_cmd;
mod sync_cmd;

#[derive(Parser)]
#[command(name = "epoch", version, about = "Epoch: a real-time database server for SpacetimeDB 1.3 modules")]
struct Cli {
    /// The server client commands talk to.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    server: String,
    /// Where client commands keep their tokens (default: $EPOCH_CONFIG or ~/.config/epoch/cli.json).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The server's admin key: for `epoch sync …`, `restore`, `backup` and `archive`, and for
    /// `epoch start` (the key the server accepts; else --admin-api-key-file).
    #[arg(long, global = true, env = "EPOCH_ADMIN_API_KEY", hide_env_values = true)]
    admin_api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Options of `epoch start`.
#[derive(clap::Args)]
struct StartArgs {
    /// A TOML file of these options (`default-database = "proj"`, …); flags win over it.
    #[arg(long, env = "EPOCH_SERVER_CONFIG")]
    config_file: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen_addr: String,
    /// Where the server keeps its keys, control plane, modules, logs and snapshots.
    #[arg(long, default_value = "epoch-data")]
    data_dir: PathBuf,
    /// Per-reducer time limit in milliseconds.
    #[arg(long, default_value_t = epoch_host::limits::DEFAULT_REDUCER_TIMEOUT.as_millis() as u64)]
    reducer_timeout_ms: u64,
    /// Let 2.x procedures' HTTP requests reach loopback addresses (127.0.0.1, ::1): for tests
    /// whose HTTP server runs on this machine. Private and other special addresses stay refused.
    #[arg(long)]
    procedure_http_loopback: bool,
    /// Largest module a publish may upload, in bytes.
    #[arg(long, default_value_t = epoch_api::limits::DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: usize,
    /// Most rows one SQL query may return.
    #[arg(long, default_value_t = epoch_query::limits::DEFAULT_MAX_SQL_ROWS)]
    max_sql_rows: usize,
    /// `sync`: answer a reducer call only once its transaction is fsynced (group commit).
    /// `async`: answer after the write and fsync every 50 ms; a machine crash (not a
    /// process crash) can lose the last 50 ms of answered transactions.
    #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
    durability: String,
    /// Write a snapshot after this many transactions.
    #[arg(long, default_value_t = epoch_core::limits::DEFAULT_SNAPSHOT_EVERY)]
    snapshot_every: u64,
    /// If a commitlog is corrupt in the middle, start from its last good transaction instead
    /// of refusing to start.
    #[arg(long)]
    recover_truncate: bool,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long)]
    in_memory: bool,
    /// How many days finished sync workflow instances are kept.
    #[arg(long, default_value_t = epoch_sync::limits::DEFAULT_RETENTION.as_secs() / (24 * 3600))]
    workflow_retention_days: u64,
    /// The database the /admin/… seed paths of the sync API act on.
    #[arg(long)]
    default_database: Option<String>,
    /// File holding the server's admin key (else --admin-api-key or EPOCH_ADMIN_API_KEY).
    #[arg(long)]
    admin_api_key_file: Option<PathBuf>,
    /// Largest message a WebSocket client may send, in bytes.
    #[arg(long, default_value_t = epoch_api::limits::DEFAULT_MAX_MESSAGE_BYTES)]
    max_ws_message_bytes: usize,
    /// Bytes waiting for one WebSocket client before it is disconnected as too slow.
    #[arg(long, default_value_t = epoch_api::limits::DEFAULT_MAX_QUEUED_BYTES)]
    max_ws_queued_bytes: usize,
    /// Bytes waiting for all WebSocket clients together before those with the most waiting are
    /// disconnected as too slow.
    #[arg(long, default_value_t = epoch_api::limits::DEFAULT_MAX_TOTAL_QUEUED_BYTES)]
    max_ws_total_queued_bytes: usize,
    /// Messages waiting for one WebSocket client before it is disconnected as too slow.
    #[arg(long, default_value_t = epoch_api::limits::DEFAULT_MAX_QUEUED_MESSAGES)]
    max_ws_queued_messages: usize,
    /// Most WebSocket clients one database serves at once.
    #[arg(long, default_value_t = epoch_core::limits::DEFAULT_MAX_CLIENTS_PER_DATABASE)]
    max_clients_per_database: usize,
    /// Most subscriptions (query ids) one WebSocket connection may hold.
    #[arg(long, default_value_t = epoch_core::limits::DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT)]
    max_subscriptions_per_client: usize,
    /// Most rows one subscription request may receive initially.
    #[arg(long, default_value_t = epoch_core::limits::DEFAULT_MAX_INITIAL_ROWS)]
    max_initial_rows: usize,
    /// Accept tokens of this OpenID Connect issuer, fetching its keys by discovery
    /// (`/.well-known/openid-configuration`). Repeat for several; then only these are accepted,
    /// wherever they are (plain http and private or loopback addresses included: list a local
    /// development issuer such as http://127.0.0.1:8080 here). Without any, tokens of every
    /// https:// issuer on a public address are accepted this way, as SpacetimeDB 1.3 accepts
    /// any issuer; a token naming a loopback, private or link-local address is refused.
    #[arg(long = "allowed-issuer", value_name = "ISSUER")]
    allowed_issuers: Vec<String>,
    /// An origin (scheme://host[:port]) other than the issuer's own that an issuer's
    /// discovery document may name as its `jwks_uri`, e.g. https://www.googleapis.com for
    /// https://accounts.google.com. Repeat for several; by default key sets must be on their
    /// issuer's origin.
    #[arg(long = "allowed-jwks-origin", value_name = "ORIGIN")]
    allowed_jwks_origins: Vec<String>,
    /// A host (HOST, or HOST:PORT for one port) that AT Protocol sync may resolve DIDs on even
    /// at a loopback or private address: a local PLC directory or did:web host. Repeat for
    /// several. Without it, PLC directories and did:web hosts are fetched on public addresses
    /// only (a DID found on the network cannot aim the server at its own network).
    #[arg(long = "atproto-allowed-host", value_name = "HOST")]
    atproto_allowed_hosts: Vec<String>,
    /// Trust tokens from another OpenID issuer: ISSUER=PATH to its ES256 (P-256) public key, PEM.
    /// Repeat for several issuers.
    #[arg(long = "trusted-issuer", value_name = "ISSUER=PEM_FILE")]
    trusted_issuers: Vec<String>,
    /// Archive every database continuously to this object store (s3://bucket/prefix or
    /// file:///path): closed log segments, snapshots and modules, each database in a folder
    /// named by its identity. S3 credentials come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "URL")]
    archive_url: Option<String>,
    /// The S3 endpoint of the archive (and of restores), for R2, MinIO or moto.
    #[arg(long, value_name = "URL")]
    archive_endpoint: Option<String>,
    /// The S3 region of the archive (and of restores).
    #[arg(long)]
    archive_region: Option<String>,
    /// A transaction reaches the archive at most this many seconds after it commits (the open
    /// segment is closed and shipped when its oldest record has waited this long).
    #[arg(long, default_value_t = epoch_archive::limits::DEFAULT_MAX_LAG.as_secs_f64())]
    archive_max_lag_seconds: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server on a local data directory (no outside services needed).
    Start(Box<StartArgs>),
    /// Load a module in-process, call reducers in order, and print tables.
    Run {
        /// The module's .wasm file.
        module: PathBuf,
        /// A reducer call: NAME followed by its JSON argument array, e.g. --call transfer '[1,2,30]'.
        #[arg(long = "call", num_args = 2, value_names = ["REDUCER", "JSON_ARGS"])]
        calls: Vec<String>,
        /// Print every row of this table as SATS-JSON after the calls.
        #[arg(long = "show")]
        show: Vec<String>,
        /// Print the module's logs after the calls.
        #[arg(long)]
        logs: bool,
        /// Print the module's /schema?version=9 JSON.
        #[arg(long)]
        schema: bool,
        /// Per-reducer time limit in milliseconds.
        #[arg(long, default_value_t = epoch_host::limits::DEFAULT_REDUCER_TIMEOUT.as_millis() as u64)]
        timeout_ms: u64,
    },
    /// Get a server-issued identity and save its token for the server.
    Login,
    /// Publish (create or update) a database from a module.
    Publish {
        /// The database name.
        name: String,
        /// The module's .wasm file.
        #[arg(long)]
        wasm: PathBuf,
        /// Start the database afresh, dropping its data.
        #[arg(long)]
        clear: bool,
    },
    /// Call a reducer; each argument is JSON (anything else is taken as a string).
    Call { database: String, reducer: String, args: Vec<String> },
    /// Run a SQL query and print the result as a table.
    Sql { database: String, query: String },
    /// Subscribe to queries and print each update as a JSON line (as `spacetime subscribe`).
    Subscribe {
        database: String,
        #[arg(required = true)]
        queries: Vec<String>,
        /// Stop after N updates.
        #[arg(short = 'n', long)]
        num_updates: Option<u64>,
        /// Stop after S seconds.
        #[arg(short = 't', long)]
        timeout: Option<u64>,
        /// Print the initial rows too.
        #[arg(long)]
        print_initial_update: bool,
    },
    /// Print a database's module logs.
    Logs {
        database: String,
        /// Only the last N lines.
        #[arg(short = 'n', long)]
        num_lines: Option<usize>,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print a database's schema (the /schema?version=9 document).
    Describe { database: String },
    /// Delete a database.
    Delete { database: String },
    /// The sync engine: resync projections, watch workflows, configure, grant.
    #[command(subcommand)]
    Sync(sync_cmd::SyncCommand),
    /// Rebuilds a database from its archive folder on the server, as a new database: up to a
    /// moment (--at), a transaction (--offset) or the last archived one. Needs the admin key.
    Restore {
        /// The archive folder of the database (`<archive URL>/<identity>`; `epoch archive DB`
        /// prints it).
        #[arg(long, value_name = "URL")]
        from: String,
        /// Restore as of this moment (RFC 3339, e.g. 2026-12-02T07:00:00Z).
        #[arg(long, value_name = "RFC3339", conflicts_with = "offset")]
        at: Option<String>,
        /// Restore up to and including this transaction offset.
        #[arg(long)]
        offset: Option<u64>,
        /// The name of the new database.
        #[arg(long = "as", value_name = "NAME")]
        as_name: String,
        /// The S3 endpoint of the archive, when the server has no --archive-endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// The S3 region of the archive.
        #[arg(long)]
        region: Option<String>,
    },
    /// A consistent backup of a live database, written by the server to URL (s3:// or
    /// file://): a snapshot taken now and the log after it. Writes go on meanwhile. Needs the
    /// admin key. `epoch backup verify URL` checks a backup.
    Backup(BackupArgs),
    /// Writes tables out as JSON lines or CSV (every table when none is named).
    Export {
        database: String,
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        /// A directory for `<table>.<format>` files (else standard output, for one table).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Inserts the rows of a JSON-lines or CSV file (as `export` writes them) into a table, in
    /// one transaction, all or nothing.
    Import {
        database: String,
        #[arg(long)]
        table: String,
        /// The file's format (default: csv for a `.csv` file, else jsonl).
        #[arg(long, value_parser = ["jsonl", "csv"])]
        format: Option<String>,
        file: PathBuf,
    },
    /// A database's continuous archiving. Alone: where it is archived, what is shipped, the lag
    /// and the last error. With --to, --off or --server-default: changes where it goes. Needs
    /// the admin key.
    Archive {
        database: String,
        /// Archive the database to this folder (s3://bucket/prefix or file:///path) instead of
        /// the server's --archive-url.
        #[arg(long, value_name = "URL", conflicts_with_all = ["off", "server_default"])]
        to: Option<String>,
        /// The S3 endpoint of that folder.
        #[arg(long, requires = "to")]
        endpoint: Option<String>,
        /// The S3 region of that folder.
        #[arg(long, requires = "to")]
        region: Option<String>,
        /// The lag bound for this database (seconds; default: the server's).
        #[arg(long, value_name = "SECONDS", conflicts_with_all = ["off", "server_default"])]
        max_lag_seconds: Option<f64>,
        /// Do not archive this database, whatever the server's --archive-url.
        #[arg(long, conflicts_with = "server_default")]
        off: bool,
        /// Forget the database's own setting: the server's --archive-url applies again.
        #[arg(long)]
        server_default: bool,
    },
    /// The side-by-side benchmark: starts Epoch (and, with --reference, SpacetimeDB 1.3), runs
    /// every workload on each in turn, prints the table with ratios and can write it as JSON.
    Bench {
        /// The reference server's run.sh, or the directory build-reference.sh wrote
        /// (usually ~/.cache/epoch-reference).
        #[arg(long, value_name = "PATH")]
        reference: Option<PathBuf>,
        /// Smaller counts and 2-second windows: the whole run in a few minutes.
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Measured seconds per workload and server (default 10, or 2 with --quick).
        #[arg(long)]
        seconds: Option<u64>,
        /// The directory holding bank.wasm, numbers.wasm and projections.wasm.
        #[arg(long, default_value = "tests/fixtures/modules")]
        modules: PathBuf,
        /// Only these workloads: http, calls, fanout, initial, sql, bulk, restart, memory, sync, archive
        /// (repeat or separate with commas).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// A flag for Epoch's server, to measure a setting (repeat for several):
        /// `--epoch-arg=--durability=async`.
        #[arg(long = "epoch-arg", value_name = "FLAG", allow_hyphen_values = true)]
        epoch_args: Vec<String>,
    },
}

/// `epoch backup DATABASE --to URL` or `epoch backup verify URL`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    /// The database to back up.
    #[arg(required = true)]
    database: Option<String>,
    /// Where the backup goes (s3://bucket/prefix or file:///path).
    #[arg(long, value_name = "URL", required = true)]
    to: Option<String>,
    /// The S3 endpoint, when the server has no --archive-endpoint.
    #[arg(long)]
    endpoint: Option<String>,
}

#[derive(clap::Subcommand)]
enum BackupCommand {
    /// Checks a backup or archive folder here: every snapshot's and log frame's checksum, then
    /// a full replay into a scratch database. S3 credentials come from the AWS environment.
    Verify {
        url: String,
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
}

fn main() -> Result<()> {
    // Logs go to standard error; standard output carries the listening line and command output.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches_from(server_config::apply::<Cli>(std::env::args_os().collect())?);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    refuse_unread_globals(&matches, &cli.command)?;
    let config = cli.config.clone().unwrap_or_else(client::default_config_path);
    let session = || client::Session::open(&cli.server, &config);
    match cli.command {
        Command::Login => client::login_command(&cli.server, &config),
        Command::Publish { name, wasm, clear } => session()?.publish(&name, &wasm, clear),
        Command::Call { database, reducer, args } => session()?.call(&database, &reducer, &args),
        Command::Sql { database, query } => session()?.sql(&database, &query),
        Command::Subscribe { database, queries, num_updates, timeout, print_initial_update } => {
            let opts = subscribe_cmd::Options {
                num_updates,
                timeout: timeout.map(Duration::from_secs),
                print_initial: print_initial_update,
            };
            session()?.subscribe(&database, &queries, opts)
        }
        Command::Logs { database, num_lines, follow } => session()?.logs(&database, num_lines, follow),
        Command::Describe { database } => session()?.describe(&database),
        Command::Delete { database } => session()?.delete(&database),
        Command::Sync(cmd) => sync_cmd::run(cmd, &cli.server, &config, cli.admin_api_key.clone()),
        Command::Restore { from, at, offset, as_name, endpoint, region } => archive_cmd::restore(
            archive_cmd::RestoreArgs { from, at, offset, as_name, endpoint, region },
            &cli.server,
            &config,
            cli.admin_api_key.clone(),
        ),
        Command::Backup(BackupArgs { command: Some(BackupCommand::Verify { url, endpoint, region }), .. }) => {
            archive_cmd::verify(&url, endpoint, region)
        }
        Command::Backup(BackupArgs { command: None, database, to, endpoint }) => archive_cmd::backup(
            &database.unwrap_or_default(),
            &to.unwrap_or_default(),
            endpoint,
            &cli.server,
            &config,
            cli.admin_api_key.clone(),
        ),
        Command::Export { database, tables, format, out } => {
            archive_cmd::export(&database, tables, &format, out, &cli.server, &config)
        }
        Command::Import { database, table, format, file } => {
            let format = import_format(format, &file);
            archive_cmd::import(&database, &table, &format, &file, &cli.server, &config)
        }
        Command::Archive { database, to, endpoint, region, max_lag_seconds, off, server_default } => {
            let change = archive_change(to, endpoint, region, max_lag_seconds, off, server_default);
            archive_cmd::archive(&database, change, &cli.server, &config, cli.admin_api_key.clone())
        }
        Command::Start(args) => {
            let flag = matches.value_source("admin_api_key") == Some(clap::parser::ValueSource::CommandLine);
            start(*args, cli.admin_api_key, flag)
        }
        Command::Run { module, calls, show, logs, schema, timeout_ms } => {
            run(module, calls, show, logs, schema, timeout_ms)
        }
        Command::Bench { reference, quick, json, seconds, modules, only, epoch_args } => {
            bench::run(bench::Options { reference, quick, seconds, modules, only, json, epoch_args })
        }
    }
}

/// `epoch import`'s format: as given, else from the file's extension (`.csv`, else JSONL).
fn import_format(format: Option<String>, file: &std::path::Path) -> String {
    format.unwrap_or_else(|| {
        let csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if csv { "csv" } else { "jsonl" }.to_string()
    })
}

/// What `epoch archive`'s flags ask to change; `None` (no flag) shows the current state.
fn archive_change(
    to: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    max_lag_seconds: Option<f64>,
    off: bool,
    server_default: bool,
) -> Option<archive_cmd::ArchiveChange> {
    if server_default {
        Some(archive_cmd::ArchiveChange::ServerDefault)
    } else if off {
        Some(archive_cmd::ArchiveChange::Off)
    } else if to.is_some() || max_lag_seconds.is_some() {
        Some(archive_cmd::ArchiveChange::To { url: to, endpoint, region, max_lag_seconds })
    } else {
        None
    }
}

/// The global flags (by id) each command reads.
fn globals_read(command: &Command) -> &'static [&'static str] {
    match command {
        Command::Start(_) => &["admin_api_key"],
        Command::Run { .. } | Command::Bench { .. } => &[],
        // Client commands all take the admin key: scripts and aliases pass it once for every
        // command, and a command that needs none simply does not send it.
        _ => &["server", "config", "admin_api_key"],
    }
}

/// A global flag given on the command line to a command that does not read it is an error: an
/// operator who passes `epoch start --server …` or `--config …` must not get a server that
/// silently ignored it.
fn refuse_unread_globals(matches: &clap::ArgMatches, command: &Command) -> Result<()> {
    let read = globals_read(command);
    for (id, flag) in [("server", "--server"), ("config", "--config"), ("admin_api_key", "--admin-api-key")] {
        if read.contains(&id) || matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let (name, _) = matches.subcommand().unwrap_or(("epoch", matches));
        let hint = match (name, id) {
            ("start", "server") => " (the server listens on --listen-addr)",
            ("start", "config") => " (the server's options file is --config-file)",
            _ => "",
        };
        bail!("{flag} has no effect on `epoch {name}`{hint}");
    }
    Ok(())
}

/// Runs the server; `admin_api_key` is the global --admin-api-key (`key_flag`: given on the
/// command line) or EPOCH_ADMIN_API_KEY, used unless --admin-api-key-file names a file.
fn start(args: StartArgs, admin_api_key: Option<String>, key_flag: bool) -> Result<()> {
    if key_flag && args.admin_api_key_file.is_some() {
        bail!("give the admin key once: --admin-api-key or --admin-api-key-file, not both");
    }
    let limits = api_limits(&args);
    let persist = persist_config(&args);
    // Every option is named here, so a new one cannot be silently ignored.
    let StartArgs {
        config_file: _,
        listen_addr,
        data_dir,
        reducer_timeout_ms,
        procedure_http_loopback,
        max_module_bytes: _,
        max_sql_rows: _,
        durability: _,
        snapshot_every: _,
        recover_truncate: _,
        in_memory,
        default_database,
        admin_api_key_file,
        trusted_issuers,
        allowed_issuers,
        allowed_jwks_origins,
        atproto_allowed_hosts,
        workflow_retention_days,
        max_ws_message_bytes: _,
        max_ws_queued_bytes: _,
        max_ws_total_queued_bytes: _,
        max_ws_queued_messages: _,
        max_clients_per_database: _,
        max_subscriptions_per_client: _,
        max_initial_rows: _,
        archive_url,
        archive_endpoint,
        archive_region,
        archive_max_lag_seconds,
    } = args;
    let admin_api_key = read_admin_key(admin_api_key_file, admin_api_key)?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let auth = load_authority(&data_dir, &trusted_issuers, allowed_issuers, &allowed_jwks_origins)?;
    let config = HostConfig {
        reducer_timeout: Duration::from_millis(reducer_timeout_ms),
        procedure_http_loopback,
        ..HostConfig::default()
    };
    let control = open_control(&data_dir, config, persist)?;
    let (runner, live_shadows) = start_sync(&control, workflow_retention_days, atproto_allowed_hosts)?;
    let archive_flags = ArchiveFlags {
        url: archive_url,
        endpoint: archive_endpoint,
        region: archive_region,
        max_lag_seconds: archive_max_lag_seconds,
    };
    let archive = start_archive(&control, archive_flags, in_memory)?;
    let state = epoch_api::AppState {
        archive: Some(archive),
        runner: Some(runner),
        control: control.clone(),
        auth: std::sync::Arc::new(auth),
        metrics: Default::default(),
        limits,
        admin_api_key: admin_api_key.map(std::sync::Arc::from),
        default_database,
        live_shadows: Some(live_shadows.clone()),
        ws_output: Default::default(),
    };
    serve_until_stopped(&listen_addr, &data_dir, state, control, live_shadows)
}

/// The control plane over `data_dir` (in memory without `persist`). Databases open in the
/// background: the server listens at once, and each database serves as soon as it is open
/// (503 "starting" until then); one whose log fails an fsync reopens from disk by itself.
fn open_control(
    data_dir: &std::path::Path,
    config: HostConfig,
    persist: Option<epoch_core::PersistConfig>,
) -> Result<std::sync::Arc<epoch_control::ControlPlane>> {
    let control = match persist {
        Some(p) => epoch_control::ControlPlane::open_in_background(data_dir, config, p)?,
        None => std::sync::Arc::new(epoch_control::ControlPlane::new(config)),
    };
    control.watch_logs();
    Ok(control)
}

/// The API's limits from the command line: body sizes, SQL rows, WebSocket queues and clients.
fn api_limits(args: &StartArgs) -> epoch_api::ApiLimits {
    let ws = epoch_api::ws::WsLimits {
        max_message_bytes: args.max_ws_message_bytes,
        max_queued_bytes: args.max_ws_queued_bytes,
        max_total_queued_bytes: args.max_ws_total_queued_bytes,
        max_queued_messages: args.max_ws_queued_messages,
        clients: epoch_core::ClientLimits {
            max_clients: args.max_clients_per_database,
            max_subscriptions: args.max_subscriptions_per_client,
            max_initial_rows: args.max_initial_rows,
        },
    };
    epoch_api::ApiLimits {
        max_module_bytes: args.max_module_bytes,
        max_sql_rows: args.max_sql_rows,
        ws,
        ..Default::default()
    }
}

/// How databases persist (`None` with --in-memory): durability, snapshots, recovery.
fn persist_config(args: &StartArgs) -> Option<epoch_core::PersistConfig> {
    let durability = match args.durability.as_str() {
        "async" => epoch_core::Durability::Async { interval: epoch_core::limits::ASYNC_FSYNC_INTERVAL },
        _ => epoch_core::Durability::Sync,
    };
    (!args.in_memory).then_some(epoch_core::PersistConfig {
        durability,
        snapshot_every: args.snapshot_every,
        recover_truncate: args.recover_truncate,
        // Any database may be archived (by the server's URL or its own configuration): its log
        // prunes nothing until the archiver's first pass has shipped it or found it unarchived.
        archived: true,
        ..Default::default()
    })
}

/// The admin API key: the file's contents (trimmed) when --admin-api-key-file is given, else
/// `key`; an empty key is no key.
fn read_admin_key(file: Option<PathBuf>, key: Option<String>) -> Result<Option<String>> {
    Ok(match file {
        Some(path) => Some(
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?.trim().to_string(),
        ),
        None => key,
    }
    .filter(|k| !k.is_empty()))
}

/// The server's signing keys (created on first start) and the issuers whose tokens it trusts.
fn load_authority(
    data_dir: &std::path::Path,
    trusted_issuers: &[String],
    allowed_issuers: Vec<String>,
    allowed_jwks_origins: &[String],
) -> Result<epoch_auth::Authority> {
    let mut auth = epoch_auth::Authority::load_or_create(&data_dir.join("keys"), "localhost")?;
    for spec in trusted_issuers {
        let (issuer, path) = spec.split_once('=').context("--trusted-issuer takes ISSUER=PEM_FILE")?;
        let pem = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        auth.trust(epoch_auth::TrustedIssuer::es256(issuer, &pem)?);
        tracing::info!(issuer, "trusting tokens from issuer");
    }
    auth.discover_issuers((!allowed_issuers.is_empty()).then_some(allowed_issuers), allowed_jwks_origins)?;
    Ok(auth)
}

/// Starts the sync engine: the workflow runner (with the kinds of every source in
/// `epoch_api::sync::SOURCES`) and the live MQTT consumers of device shadows.
fn start_sync(
    control: &std::sync::Arc<epoch_control::ControlPlane>,
    workflow_retention_days: u64,
    atproto_allowed_hosts: Vec<String>,
) -> Result<(std::sync::Arc<epoch_sync::Runner>, std::sync::Arc<epoch_sync_shadows::LiveShadows>)> {
    let runner = epoch_api::sync::open_runner(
        control.clone(),
        Duration::from_secs(workflow_retention_days * 24 * 3600),
        &epoch_api::sync::SourceOptions { atproto_allowed_hosts },
    )?;
    let live_shadows = epoch_sync_shadows::LiveShadows::start(control.clone());
    Ok((runner, live_shadows))
}

/// The server-wide archive options from the command line (--archive-…).
struct ArchiveFlags {
    url: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    max_lag_seconds: f64,
}

/// Checks the server-wide archive (if any) and starts continuous archiving.
fn start_archive(
    control: &std::sync::Arc<epoch_control::ControlPlane>,
    flags: ArchiveFlags,
    in_memory: bool,
) -> Result<std::sync::Arc<epoch_api::archive::ArchiveState>> {
    let ArchiveFlags { url: archive_url, endpoint: archive_endpoint, region: archive_region, max_lag_seconds } = flags;
    let archive_options =
        epoch_archive::StoreOptions { endpoint: archive_endpoint, region: archive_region, ..Default::default() };
    let archive_max_lag =
        epoch_archive::max_lag(max_lag_seconds).map_err(|e| anyhow::anyhow!("--archive-max-lag-seconds: {e}"))?;
    if let Some(url) = &archive_url {
        anyhow::ensure!(!in_memory, "--archive-url needs a data directory (not --in-memory)");
        epoch_archive::ArchiveTarget::open(url, &archive_options)
            .with_context(|| format!("opening the archive {url}"))?;
        tracing::info!(url, "archiving every database without an archive configuration of its own");
    }
    let archive = std::sync::Arc::new(epoch_api::archive::ArchiveState {
        // Databases may be archived one by one (PUT /v1/database/:n/archive) even without a
        // server-wide URL.
        service: (!in_memory).then(|| std::sync::Arc::new(epoch_archive::ArchiveService::new())),
        server_url: archive_url,
        max_lag: archive_max_lag,
        options: archive_options,
    });
    archive.start(control.clone());
    Ok(archive)
}

/// Listens on `listen_addr` and serves until SIGINT or SIGTERM, announcing the port and then
/// when every database has opened.
fn serve_until_stopped(
    listen_addr: &str,
    data_dir: &std::path::Path,
    state: epoch_api::AppState,
    control: std::sync::Arc<epoch_control::ControlPlane>,
    live_shadows: std::sync::Arc<epoch_sync_shadows::LiveShadows>,
) -> Result<()> {
    let starting = control.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(&listen_addr).await.with_context(|| format!("binding {listen_addr}"))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to learn the port, and the next one to know that every
        // database has opened. Nobody may be reading by then: a closed pipe is no error.
        announce(&format!("epoch listening on http://{addr}"));
        tracing::info!(%addr, data_dir = %data_dir.display(), "server started");
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            starting.wait_started();
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "every database has opened");
            announce("epoch ready");
        });
        tokio::select! {
            served = epoch_api::serve(listener, state) => served?,
            () = shutdown_signal() => stop_cleanly(control, live_shadows).await,
        }
        Ok(())
    })
}

/// A clean stop: every connected client leaves (client_disconnected runs, durably) before the
/// process ends, unless a database cannot write within [`SHUTDOWN_GRACE`].
async fn stop_cleanly(
    stopping: std::sync::Arc<epoch_control::ControlPlane>,
    stopping_shadows: std::sync::Arc<epoch_sync_shadows::LiveShadows>,
) {
    tracing::info!("stopping: disconnecting clients");
    stopping_shadows.stop_all();
    let disconnecting = tokio::task::spawn_blocking(move || {
        for db in stopping.all() {
            let _ = db.handle.with(|d| d.disconnect_all_clients());
        }
    });
    if tokio::time::timeout(SHUTDOWN_GRACE, disconnecting).await.is_err() {
        // A database that cannot write (a full disk) would hold the stop forever.
        // Everything acknowledged is on disk; what waits is not, as after a crash.
        tracing::warn!(
            "stopping without every client's disconnection: a database could not write within {SHUTDOWN_GRACE:?}; everything acknowledged is on disk"
        );
        std::process::exit(0);
    }
    tracing::info!("stopped");
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Writes one line to standard output, ignoring a reader that has gone away.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn run(
    module: PathBuf,
    calls: Vec<String>,
    show: Vec<String>,
    logs: bool,
    schema: bool,
    timeout_ms: u64,
) -> Result<()> {
    let wasm = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    let config = HostConfig { reducer_timeout: Duration::from_millis(timeout_ms), ..HostConfig::default() };
    let owner = Caller::identity(epoch_core::Identity([1; 32]));
    let mut db = Database::create(&wasm, epoch_core::Identity([2; 32]), owner, config)?;
    if schema {
        println!("{}", epoch_core::schema_json(db.def()));
    }
    let mut failed = false;
    for pair in calls.chunks(2) {
        let [name, args] = pair else { bail!("--call takes a reducer name and a JSON array") };
        let r = db.call(name, ReducerArgs::Json(args.clone()), owner)?;
        match r.outcome.error_message() {
            None => println!("{name}: committed in {:?}", r.duration),
            Some(msg) => {
                failed = true;
                println!("{name}: failed: {msg}");
            }
        }
    }
    for table in show {
        let rows = db.rows_json(&table).with_context(|| format!("no table named {table}"))?;
        println!("{table} ({} rows)", rows.len());
        for row in rows {
            println!("  {row}");
        }
    }
    if logs {
        for l in db.logs().tail(None) {
            println!("{} {} {}", l.level.as_str(), l.target.as_deref().unwrap_or("-"), l.message);
        }
    }
    if failed {
        std::process::exit(2);
    }
    Ok(())
}
