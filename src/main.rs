//! The `hookbridge` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use hookbridge::render_event;
use hookbridge::schema;
use hookbridge::{Config, Exit, ExitStatus};

/// jemalloc rather than glibc's malloc: every event allocates its parsed document, rendered
/// requests and results on one thread and frees them on another, which glibc's per-thread
/// arenas handle poorly (consolidation and lock traffic showed in profiles). Measured against
/// mimalloc 3 on the end-to-end benchmark (mimalloc 2 did no better), jemalloc took about 10 %
/// less CPU per delivery and kept a lower peak RSS (BENCHMARKS.md); its background thread returns freed
/// pages to the system while the process is idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "hookbridge", version, about = "Object-change events to webhooks and chat notifications")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config: exit 0, or non-zero with every error.
    Check {
        /// Config file.
        #[arg(long, env = "HOOKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Print, as JSON, the matched triggers and the exact requests an event causes. Sends nothing.
    Render {
        /// Config file.
        #[arg(long, env = "HOOKBRIDGE_CONFIG")]
        config: PathBuf,
        /// Event file (one JSON event; CloudEvents structured mode accepted).
        #[arg(long)]
        event: PathBuf,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
    },
    /// Run the bridge until SIGTERM/SIGINT, then drain; a file source without follow ends at its end.
    Run {
        /// Config file.
        #[arg(long, env = "HOOKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Send one action for one event now and print the answer.
    Send {
        /// Config file.
        #[arg(long, env = "HOOKBRIDGE_CONFIG")]
        config: PathBuf,
        /// Event file.
        #[arg(long)]
        event: PathBuf,
        /// The action to send.
        #[arg(long)]
        action: String,
    },
    /// Print a shipped JSON Schema.
    Schema {
        /// Which one.
        #[arg(value_enum)]
        which: SchemaKind,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    Config,
    Event,
    Response,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let export = hookbridge::telemetry::Export::from_vars(|name| std::env::var(name).ok());
    // Traces are an aid, not part of delivery: a missing exporter is said, never fatal.
    let telemetry = hookbridge::telemetry::Telemetry::start(export).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "traces are not exported");
        hookbridge::telemetry::Telemetry::disabled()
    });
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Through the logger, so that `--log-format json` keeps every line JSON.
            fatal(&e);
            Exit::Failed.into()
        }
    };
    telemetry.shutdown();
    code
}

/// Logs a fatal error with its causes, through the logger so that `--log-format json` keeps
/// every line JSON.
fn fatal(e: &anyhow::Error) {
    tracing::error!(error = %format!("{e:#}"), "fatal error");
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKBRIDGE_LOG")
        .unwrap_or_else(|_| "info,hyper=warn,hyper_util=warn,reqwest=warn,rdkafka=warn,async_nats=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Flat: the event's fields sit beside `message`, `level` and `target`, where log
        // pipelines index them, not under a nested `fields` object.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: invalid configuration", path.display());
        for line in e.to_string().lines() {
            eprintln!("  {line}");
        }
        e.exit().into()
    })
}

/// As [`load`], for `run`: the problems go through the logger (one event each), so that a
/// log pipeline reading `--log-format json` sees them.
fn load_logged(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        for line in e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()) {
            tracing::error!(config = %path.display(), problem = line, "invalid configuration");
        }
        e.exit().into()
    })
}

/// Reads one event file; an invalid event is reported and becomes exit code 3.
fn read_event(path: &Path) -> anyhow::Result<Result<(Vec<u8>, hookbridge::Event), ExitCode>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(match hookbridge::parse_event(&bytes, None) {
        Ok(e) => Ok((bytes, e)),
        Err(e) => {
            eprintln!("{}: {} ({})", path.display(), e, e.reason());
            Err(e.exit().into())
        }
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(match load(&config) {
            Ok(c) => {
                if let Some(warning) = c.no_triggers_warning() {
                    let hint = if c.allow_no_triggers { " (allowed here)" } else { "" };
                    eprintln!("{}: warning: {warning}{hint}", config.display());
                }
                println!(
                    "{}: ok ({} connections, {} actions, {} triggers)",
                    config.display(),
                    c.connections.len(),
                    c.actions.len(),
                    c.triggers.len()
                );
                for note in c.notes() {
                    println!("  {note}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        Command::Render { config, event, action } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if let Some(a) = &action {
                if config.action_index(a).is_none() {
                    anyhow::bail!("no action named {a:?} in the config");
                }
            }
            let event = match read_event(&event)? {
                Ok((_, e)) => e,
                Err(code) => return Ok(code),
            };
            let out = render_event(&config, &event, action.as_deref());
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config: path } => {
            let config = match load_logged(&path) {
                Ok(c) => std::sync::Arc::new(c),
                Err(code) => return Ok(code),
            };
            if let (Some(warning), false) = (config.no_triggers_warning(), config.allow_no_triggers) {
                tracing::error!(config = %path.display(), "refusing to run: {warning}");
                return Ok(Exit::InvalidConfig.into());
            }
            // Every series the config decides exists from the first scrape, at zero.
            hookbridge::metrics().register_config(&config);
            let runtime = tokio::runtime::Runtime::new()?;
            let ran = runtime.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                hookbridge::run(config, shutdown).await
            });
            if let Err(e) = ran {
                let code = e.exit();
                fatal(&e.into());
                return Ok(code.into());
            }
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Send { config, event, action } => {
            let config = match load(&config) {
                Ok(c) => std::sync::Arc::new(c),
                Err(code) => return Ok(code),
            };
            if config.action_index(&action).is_none() {
                anyhow::bail!("no action named {action:?} in the config");
            }
            let (bytes, parsed) = match read_event(&event)? {
                Ok(read) => read,
                Err(code) => return Ok(code),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let out = match runtime.block_on(hookbridge::send_one(config, parsed, bytes, &action)) {
                Ok(out) => out,
                Err(e) => {
                    let code = e.exit();
                    fatal(&e.into());
                    return Ok(code.into());
                }
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(out.exit().into())
        }
        Command::Schema { which } => {
            let text = match which {
                SchemaKind::Config => schema::CONFIG,
                SchemaKind::Event => schema::EVENT,
                SchemaKind::Response => schema::RESPONSE,
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT; a second signal exits at once.
async fn wait_for_signal(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: draining");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(130);
}
