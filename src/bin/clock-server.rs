//! The `clock-server` binary: read the environment, set up logging, serve until
//! SIGINT/SIGTERM. `clock-server demo` runs the self-contained demo instead.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clock_server::config::Config;
use clock_server::demo::{Demo, DemoArgs};
use clock_server::shared::shutdown;
use clock_server::startup::Application;

/// mimalloc on every target. musl's malloc serialises every allocation behind one lock
/// (the static image was noticeably slower than the glibc build); with glibc's, the two
/// workers waited on each other's arena lock when one freed what the other allocated
/// (1,000 event streams: 44-48 µs of CPU per command against 37-39 with mimalloc; without
/// streams the difference was within noise). See docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Only parsed when there are arguments: without any, this is the server, configured by
/// the environment, as it always was.
#[derive(Debug, Parser)]
#[command(
    name = "clock-server",
    version,
    about = "Secure HTTP gateway that delivers commands to smart clocks over MQTT and REST",
    after_help = "Without a subcommand it runs the server, configured by environment variables \
                  (see docs/configuration.md)."
)]
struct Cli {
    /// Optional: without one, this is the server (the usage line says so with `[COMMAND]`).
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Try it locally: an embedded MQTT broker, the API on plain HTTP with the token
    /// dev-token, and a virtual clock printing what it receives (loopback only)
    Demo(DemoArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            Err(err) => {
                // Help and version go to stdout with 0; usage errors to stderr with 2.
                let _ = err.print();
                return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
            }
        };
        // Arguments that name no subcommand (only `--`) leave the server to run.
        if let Some(Sub::Demo(args)) = cli.command {
            return demo(&args).await;
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            for line in &e.0 {
                eprintln!("clock-server: configuration error: {line}");
            }
            return ExitCode::from(2);
        }
    };
    let _logs = clock_server::telemetry::init(config.log_format, config.log_level.as_deref());
    if let Some((from, to)) = clock_server::http::server::raise_open_file_limit() {
        tracing::info!(
            from,
            to,
            "raised the open-file soft limit to the hard limit"
        );
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            // Logging is set up by now, so this line follows LOG_FORMAT (JSON stays JSON).
            tracing::error!("cannot start: {e:#}");
            return ExitCode::from(e.exit_code());
        }
    };
    app.run_until_stopped(shutdown::signal()).await;
    ExitCode::SUCCESS
}

/// `clock-server demo`.
async fn demo(args: &DemoArgs) -> ExitCode {
    let demo = match Demo::prepare(args, |k| std::env::var(k).ok()) {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("clock-server demo: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let _logs = clock_server::telemetry::init(demo.log_format(), Some(&demo.log_filter()));
    match demo.run(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clock-server demo: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
