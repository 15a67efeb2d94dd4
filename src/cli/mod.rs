//! `clockctl`, the command-line client (SPEC 5): argument types, environment, validation and
//! the HTTP call, all testable without the binary.
//!
//! - [`args`]: the clap types and the rewrite of Go-style `-flag` arguments.
//! - [`settings`]: the environment (`CLOCK_SERVER_*`, `CLOCKCTL_*`) and base-URL resolution.
//! - [`request`]: subcommand arguments turned into a validated API request (nothing sent yet).
//! - [`client`]: the token-safety rule, the HTTP call with its retries, `--wait`, and what
//!   to print.
//! - [`record`]: a tracked command's status record (SPEC 7.3) and how it is shown.
//! - [`devices`]: devices and their presence (SPEC 11.2) as `devices` and `device` show them.
//! - [`schedule`]: `clockctl schedule …` (SPEC 12.4): requests, the machine's zone, output.
//! - [`error`]: [`CliError`], each variant with its exit code.
//! - [`events`]: `clockctl events`, the server's event stream (SPEC 13.1).
//! - [`watch`]: `clockctl watch`, the virtual clock (see [`crate::clock`]).

pub mod args;
pub mod client;
pub mod devices;
pub mod error;
pub mod events;
pub mod record;
pub mod request;
pub mod schedule;
pub mod settings;
pub mod watch;

pub use args::Cli;
pub use client::Output;
pub use error::CliError;

use request::ApiRequest;
use settings::Settings;

/// Runs one parsed invocation: validate the input, read the environment via `env`, then call
/// the server. Nothing is sent unless every check passes.
pub async fn run(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Output, CliError> {
    let request = ApiRequest::from_command_with_tz(&cli.command, env("TZ"))?;
    let settings = Settings::from_lookup(env)?;
    client::send(&settings, &request, cli.json).await
}
