//! The `clockctl` binary: parse the arguments, call the library, print, exit 0/1/2 (SPEC 5).

use std::process::ExitCode;

use clock_server::cli::args::Command;
use clock_server::cli::{self, Cli};
use clock_server::terminal;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse_go_style(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    if let Command::Watch(args) = &cli.command {
        return match cli::watch::run(args, cli.json, clock_server::shared::shutdown::signal()).await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("clockctl: {}", terminal::plain(&err.to_string()));
                ExitCode::from(err.exit_code())
            }
        };
    }
    if let Command::Events(args) = &cli.command {
        let json = cli.json || args.json;
        let mut stdout = std::io::stdout();
        return match cli::events::run(
            args,
            json,
            clock_server::shared::process_env,
            &mut stdout,
            clock_server::shared::shutdown::signal(),
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("clockctl: {}", terminal::plain(&err.to_string()));
                ExitCode::from(err.exit_code())
            }
        };
    }
    match cli::run(&cli, clock_server::shared::process_env).await {
        Ok(out) => {
            println!("{}", out.stdout);
            for note in out.notes {
                eprintln!("clockctl: {note}");
            }
            if out.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            // Errors quote servers, brokers and their certificates: no control character of
            // theirs reaches the terminal.
            eprintln!("clockctl: {}", terminal::plain(&err.to_string()));
            ExitCode::from(err.exit_code())
        }
    }
}
