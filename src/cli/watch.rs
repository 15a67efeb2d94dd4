//! `clockctl watch`: the virtual clock on the command line — arguments to [`WatchOptions`],
//! the choice of view (live on a terminal, plain lines otherwise), and running until
//! Ctrl-C or SIGTERM.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::Path;

use super::CliError;
use super::args::WatchArgs;
use crate::clock::awtrix;
use crate::clock::lametric::{LametricOptions, VirtualLametric};
use crate::clock::watch::{Broker, DEFAULT_BROKER_URL, DEFAULT_TOPIC_PREFIX, normalize_prefix};
use crate::clock::{View, WatchOptions, Watcher};
use crate::domain::DeviceId;
use crate::domain::awtrix3::Awtrix3Device;
use crate::domain::{Profile, ProfileName};

/// Validates the arguments; nothing is connected yet. An empty broker or prefix (e.g. an
/// empty variable) counts as unset, as everywhere in this project.
pub fn options(args: &WatchArgs) -> Result<WatchOptions, CliError> {
    let or_default = |value: &str, default: &'static str| {
        if value.trim().is_empty() {
            default.to_owned()
        } else {
            value.to_owned()
        }
    };
    let mut broker = Broker::parse(&or_default(&args.broker, DEFAULT_BROKER_URL))
        .map_err(|e| CliError::Invalid(format!("invalid --broker / CLOCKCTL_BROKER_URL: {e}")))?;
    if let Some(path) = args.ca_file.as_deref().filter(|p| !p.trim().is_empty()) {
        broker = broker
            .trust_ca_file(Path::new(path))
            .map_err(|e| CliError::Invalid(format!("invalid --ca-file / CLOCKCTL_CA_FILE: {e}")))?;
    }
    let prefix = or_default(&args.topic_prefix, DEFAULT_TOPIC_PREFIX);
    let topic_prefix = normalize_prefix(&prefix).map_err(|e| {
        CliError::Invalid(format!(
            "invalid --topic-prefix / CLOCKCTL_TOPIC_PREFIX: {e}"
        ))
    })?;
    let devices = args
        .device
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|raw| {
            DeviceId::parse(raw).map_err(|e| {
                CliError::Invalid(format!(
                    "invalid --device {raw:?}: {e}; pass an id like clock-1 \
                     (1-64 characters of A-Z a-z 0-9 _ -), or leave it out to watch every device"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // (CLOCKCTL_LAMETRIC_API_KEY may be exported for other runs: only --listen counts.)
    if args.listen.is_some() && args.profile != ProfileName::Lametric {
        return Err(CliError::Invalid(
            "--listen only applies with --profile lametric (a virtual LaMetric TIME); an \
             MQTT clock is watched on --broker"
                .to_owned(),
        ));
    }
    let topic = args.topic.as_deref();
    let profile = match (args.profile, topic) {
        (ProfileName::Generic, None) => Profile::Generic,
        (ProfileName::Generic, Some(_)) => {
            return Err(CliError::Invalid(
                "--topic only applies with --profile awtrix3 (an AWTRIX clock's MQTT prefix); \
                 the generic profile's topics start with --topic-prefix"
                    .to_owned(),
            ));
        }
        (ProfileName::Awtrix3, None) => {
            return Err(CliError::Invalid(
                "--profile awtrix3 needs --topic <the clock's MQTT prefix>, e.g. --topic \
                 awtrix_a1b2c3 (its web interface shows it under MQTT, Prefix)"
                    .to_owned(),
            ));
        }
        // Served over HTTP, not watched over MQTT: `lametric_options` reads its arguments.
        (ProfileName::Lametric, _) => {
            return Err(lametric_options(args).err().unwrap_or_else(|| {
                CliError::Invalid(
                    "--profile lametric is a virtual LaMetric TIME served on --listen, not an \
                     MQTT watcher"
                        .to_owned(),
                )
            }));
        }
        (ProfileName::Awtrix3, Some(raw)) => Profile::Awtrix3(Awtrix3Device::new(
            awtrix::check_topic(raw)
                .map_err(|e| CliError::Invalid(format!("invalid --topic {e}")))?,
            None,
        )),
    };
    if matches!(profile, Profile::Awtrix3 { .. }) && devices.len() > 1 {
        return Err(CliError::Invalid(
            "--profile awtrix3 watches one clock: pass at most one --device (the name it is \
             shown under); run one watch per AWTRIX clock"
                .to_owned(),
        ));
    }
    Ok(WatchOptions {
        broker,
        devices,
        announce: Vec::new(),
        topic_prefix,
        acknowledge: !args.no_ack,
        profile,
    })
}

/// The name a virtual LaMetric shows when no `--device` names it.
pub const DEFAULT_LAMETRIC_NAME: &str = "lametric";

/// The virtual LaMetric TIME's settings, for `--profile lametric`: `--listen` (required),
/// the key of `--api-key` / `CLOCKCTL_LAMETRIC_API_KEY` (required, not empty), at most one
/// `--device` (its name), and no MQTT-only flag.
pub fn lametric_options(args: &WatchArgs) -> Result<LametricOptions, CliError> {
    let invalid = |text: &str| Err(CliError::Invalid(text.to_owned()));
    let Some(listen) = args.listen.as_deref().filter(|l| !l.trim().is_empty()) else {
        return invalid(
            "--profile lametric needs --listen <addr>, e.g. --listen 127.0.0.1:8080: the \
             virtual LaMetric TIME serves the clock's HTTP API there",
        );
    };
    let listen = listen.trim().parse().map_err(|e| {
        CliError::Invalid(format!(
            "invalid --listen {listen:?}: {e}; pass an address and port, e.g. 127.0.0.1:8080"
        ))
    })?;
    let Some(api_key) = args.api_key.as_deref().filter(|k| !k.is_empty()) else {
        return invalid(
            "--profile lametric needs the API key the server sends (its devices file's \
             api_key): set CLOCKCTL_LAMETRIC_API_KEY (or pass --api-key)",
        );
    };
    if args.topic.is_some() {
        return invalid("--topic only applies with --profile awtrix3");
    }
    let mut names = args.device.iter().filter(|d| !d.trim().is_empty());
    let name = match (names.next(), names.next()) {
        (None, _) => DEFAULT_LAMETRIC_NAME.to_owned(),
        (Some(raw), None) => DeviceId::parse(raw)
            .map_err(|e| CliError::Invalid(format!("invalid --device {raw:?}: {e}")))?
            .as_str()
            .to_owned(),
        (Some(_), Some(_)) => {
            return invalid(
                "--profile lametric is one clock: pass at most one --device (the name it shows)",
            );
        }
    };
    Ok(LametricOptions {
        listen,
        name,
        api_key: crate::shared::Secret::new(api_key),
    })
}

/// The view for this invocation: JSON lines with `--json`, plain lines with `--plain` or when
/// stdout is not a terminal, the live view otherwise.
pub fn view(args: &WatchArgs, json: bool, stdout_is_terminal: bool) -> View {
    if json {
        View::Json
    } else if args.plain || !stdout_is_terminal {
        View::Plain
    } else {
        View::Live
    }
}

/// Connects, subscribes, announces it, then shows commands on stdout until `shutdown`.
pub async fn run(
    args: &WatchArgs,
    json: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    if args.profile == ProfileName::Lametric {
        return run_lametric(args, json, shutdown).await;
    }
    let options = options(args)?;
    let mut stdout = std::io::stdout();
    let view = view(args, json, stdout.is_terminal());
    let watcher = Watcher::connect(&options).await?;
    match view {
        // Scripts wait for this line before they publish.
        View::Plain => {
            writeln!(stdout, "{}", watcher.description())
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::Watch(e.into()))?;
        }
        // Keep stdout pure JSON lines.
        View::Json => eprintln!("{}", watcher.description()),
        View::Live => {}
    }
    watcher.run(view, &mut stdout, shutdown).await?;
    Ok(())
}

/// Serves the virtual LaMetric TIME until `shutdown`.
async fn run_lametric(
    args: &WatchArgs,
    json: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let options = lametric_options(args)?;
    let clock = VirtualLametric::bind(&options).await.map_err(|e| {
        CliError::Invalid(format!("--listen {}: cannot listen: {e}", options.listen))
    })?;
    let mut stdout = std::io::stdout();
    let view = view(args, json, stdout.is_terminal());
    let output = |e: std::io::Error| CliError::Watch(e.into());
    // Scripts wait for this line before they send; with --json stdout stays JSON lines.
    if view == View::Json {
        eprintln!("{}", clock.description());
    } else {
        writeln!(stdout, "{}", clock.description())
            .and_then(|()| stdout.flush())
            .map_err(output)?;
    }
    clock.run(view, &mut stdout, shutdown).await.map_err(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::cli::args::Command;

    fn watch_args(argv: &[&str]) -> WatchArgs {
        let cli = Cli::try_parse_go_style(["clockctl", "watch"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Watch(w) => w,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn devices_can_be_repeated_or_comma_separated_and_are_validated() {
        let o = options(&watch_args(&[
            "--device",
            "clock-1,clock-2",
            "-device",
            "k",
        ]))
        .unwrap();
        let ids: Vec<&str> = o.devices.iter().map(DeviceId::as_str).collect();
        assert_eq!(ids, ["clock-1", "clock-2", "k"]);
        let err = options(&watch_args(&["--device", "a/b"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--device"), "{err}");
    }

    #[test]
    fn the_awtrix3_profile_needs_a_topic_and_the_topic_needs_the_profile() {
        let o = options(&watch_args(&[
            "--device",
            "kitchen",
            "--profile",
            "awtrix3",
            "--topic",
            "awtrix_a1b2c3",
        ]))
        .unwrap();
        assert_eq!(o.profile.name(), "awtrix3");
        assert_eq!(o.topic_filters()[0], "awtrix_a1b2c3/notify");
        let generic = options(&watch_args(&["-profile=generic"])).unwrap();
        assert_eq!(generic.profile, Profile::Generic);
        for (argv, says) in [
            (&["--profile", "awtrix3"][..], "needs --topic"),
            (
                &["--topic", "awtrix_a1b2c3"],
                "--topic only applies with --profile awtrix3",
            ),
            (
                &["--profile", "awtrix3", "--topic", "a/#"],
                "invalid --topic",
            ),
            (&["--profile", "awtrix3", "--topic", " "], "invalid --topic"),
            (
                &["--profile", "awtrix3", "--topic", "t", "--device", "a,b"],
                "at most one --device",
            ),
        ] {
            let err = options(&watch_args(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(err.to_string().contains(says), "{argv:?}: {err}");
        }
        let err =
            Cli::try_parse_go_style(["clockctl", "watch", "--profile", "lamtric"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("awtrix3"), "{err}");
    }

    #[test]
    fn the_virtual_lametric_needs_listen_and_a_key_and_listen_needs_the_profile() {
        let o = lametric_options(&watch_args(&[
            "--profile",
            "lametric",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "k3y",
            "--device",
            "desk",
        ]))
        .unwrap();
        assert_eq!((o.name.as_str(), o.api_key.expose()), ("desk", "k3y"));
        let unnamed = lametric_options(&watch_args(&[
            "--profile",
            "lametric",
            "--listen",
            "127.0.0.1:8080",
            "--api-key",
            "k",
        ]))
        .unwrap();
        assert_eq!(unnamed.name, "lametric");
        for (argv, says) in [
            (
                &["--profile", "lametric", "--api-key", "k"][..],
                "needs --listen",
            ),
            (
                &["--profile", "lametric", "--listen", "127.0.0.1:1"],
                "CLOCKCTL_LAMETRIC_API_KEY",
            ),
            (
                &[
                    "--profile",
                    "lametric",
                    "--listen",
                    "nowhere",
                    "--api-key",
                    "k",
                ],
                "invalid --listen",
            ),
            (
                &[
                    "--profile",
                    "lametric",
                    "--listen",
                    "127.0.0.1:1",
                    "--api-key",
                    "k",
                    "--device",
                    "a,b",
                ],
                "at most one --device",
            ),
        ] {
            let err = lametric_options(&watch_args(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(err.to_string().contains(says), "{argv:?}: {err}");
            // The MQTT path refuses it the same way.
            let err = options(&watch_args(argv)).unwrap_err();
            assert!(err.to_string().contains(says), "{argv:?}: {err}");
        }
        for argv in [
            &["--listen", "127.0.0.1:8080"][..],
            &[
                "--profile",
                "awtrix3",
                "--topic",
                "t",
                "--listen",
                "127.0.0.1:8080",
            ],
        ] {
            let err = options(&watch_args(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(
                err.to_string()
                    .contains("--listen only applies with --profile lametric"),
                "{err}"
            );
        }
    }

    #[test]
    fn watch_acknowledges_unless_told_not_to() {
        assert!(options(&watch_args(&[])).unwrap().acknowledge);
        assert!(!options(&watch_args(&["--no-ack"])).unwrap().acknowledge);
        assert!(!options(&watch_args(&["-no-ack"])).unwrap().acknowledge);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let o = options(&watch_args(&["--broker", " ", "--topic-prefix", ""])).unwrap();
        assert_eq!(o.broker.display(), "mqtt://127.0.0.1:1883");
        assert_eq!(o.topic_prefix, "clocks/commands");
    }

    #[test]
    fn bad_brokers_and_prefixes_are_usage_errors_naming_flag_and_variable() {
        for (argv, name) in [
            (&["--broker", "http://h"][..], "CLOCKCTL_BROKER_URL"),
            (&["--topic-prefix", "a/#"], "CLOCKCTL_TOPIC_PREFIX"),
        ] {
            let err = options(&watch_args(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn a_ca_file_needs_mqtts_and_is_a_usage_error_naming_flag_and_variable() {
        for argv in [
            &["--ca-file", "/nonexistent.pem", "--broker", "mqtts://h"][..],
            &["--ca-file", "/nonexistent.pem"],
        ] {
            let err = options(&watch_args(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(text.contains("--ca-file / CLOCKCTL_CA_FILE"), "{text}");
        }
        // An empty value counts as unset.
        assert!(options(&watch_args(&["--ca-file", ""])).is_ok());
    }

    #[test]
    fn the_live_view_is_only_for_terminals_without_plain_or_json() {
        let args = watch_args(&[]);
        assert_eq!(view(&args, false, true), View::Live);
        assert_eq!(view(&args, false, false), View::Plain);
        assert_eq!(view(&args, true, true), View::Json);
        assert_eq!(view(&watch_args(&["-plain"]), false, true), View::Plain);
    }
}
