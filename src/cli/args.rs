//! `clockctl`'s command line: the clap types, plus the rewrite that lets the Go tool's
//! single-dash flags (`-device clock-1`, `-device=clock-1`) keep working.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

use crate::domain::ProfileName;

/// Shown under `clockctl --help` only: the environment, the exit codes and what every
/// command shares. A subcommand's help points here instead of repeating it.
pub const AFTER_HELP: &str = "\
Environment:
  CLOCK_SERVER_BASE_URL         server URL, default http://localhost:8080 (trailing / dropped);
                                wins over CLOCK_SERVER_HOST
  CLOCK_SERVER_HOST             Docker style: http(s)://... is used as is; tcp://host:port or
                                host:port become http:// for localhost, 127.*, ::1 and https://
                                otherwise
  CLOCK_SERVER_TOKEN            bearer token; never sent over http:// to a non-local host
  CLOCKCTL_TIMEOUT_MS           whole-request timeout in milliseconds, default 5000
  CLOCKCTL_ALLOW_INSECURE_HTTP  true: allow the token over http:// to a non-local host
                                (default false; 1 t T TRUE true True 0 f F FALSE false False)
  SSL_CERT_FILE, SSL_CERT_DIR   CA certificates to trust instead of the system store
  CLOCKCTL_BROKER_URL, CLOCKCTL_TOPIC_PREFIX, CLOCKCTL_CA_FILE
                                watch only: see clockctl watch --help

Exit status:
  0  the server accepted the command (with --wait: the device reported it succeeded, or it
     was sent to a device that never acknowledges; ready: the server is ready; status,
     devices, device: the answer was shown; cancel: the command was cancelled)
  1  the server answered non-2xx (ready: not ready), could not be reached or timed out, the
     token was refused for a plain-http non-local URL (nothing sent); with --wait: the
     command ended other than succeeded, or was still open (queued, scheduled, sent to a
     device that acknowledges) when the wait ended
  2  bad usage, invalid input or invalid environment (nothing sent)

Commands carry an Idempotency-Key (a new UUID, or --idempotency-key) and are retried with
it, up to --retries times, after a connection failure, a timeout, a 502 or a 503: the
server never delivers one key twice.

Go-style flags work too: -device clock-1, -device=clock-1, --device=clock-1, -json=true.";

/// Shown under each subcommand's `--help` but watch's.
pub const SUBCOMMAND_AFTER_HELP: &str =
    "Environment, exit status and the Go-style flag forms: clockctl --help";

/// Flags that take a value: after one of these (without `=`), the next argument is its value
/// and is never rewritten, so `--message -json` shows the text `-json`. A new value-taking
/// flag goes here too (a test checks it against the clap definitions).
const VALUE_FLAGS: &[&str] = &[
    "device",
    "time",
    "label",
    "message",
    "duration",
    "level",
    "broker",
    "topic-prefix",
    "ca-file",
    "profile",
    "topic",
    "idempotency-key",
    "retries",
    "days",
    "tz",
    "ttl",
    "count",
    "from",
    "types",
    "listen",
    "api-key",
];
/// Flags without a value. `wait` takes its optional value after `=`; a value after a space
/// that starts with a digit (`--wait 5s`) is joined to it, since nothing else could follow.
const SWITCH_FLAGS: &[&str] = &[
    "json", "help", "version", "plain", "wait", "no-ack", "disabled",
];
/// Switches that Go's flag package also accepts as `-name=<bool>`.
const BOOL_FLAGS: &[&str] = &["json", "plain"];

/// `clockctl`: send commands to smart clocks through a clock-server gateway.
#[derive(Debug, Parser)]
#[command(
    name = "clockctl",
    version,
    about = "Send commands to smart clocks through a clock-server gateway",
    after_help = AFTER_HELP,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print JSON instead of text (the server's answer, control characters escaped); see
    /// each command's --help
    // Global so that `clockctl --json ready` and `clockctl ready --json` both work. A
    // subcommand may declare its own `json` flag for a help text of its own: clap then
    // does not propagate this one there, and its value still lands here.
    #[arg(long, global = true, display_order = 100)]
    pub json: bool,

    /// What to send.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; a new one is a new variant here and in [`crate::cli::request`].
/// Each gets `after_help = SUBCOMMAND_AFTER_HELP` (the shared text is in the top-level help).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set an alarm on a device (POST /commands/alarms)
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Alarm(AlarmArgs),
    /// Show a message on a device for some seconds (POST /commands/messages)
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Message(MessageArgs),
    /// Set a device's display brightness (PUT /commands/brightness)
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Brightness(BrightnessArgs),
    /// Ask whether the server is ready (GET /ready); prints ready or not_ready
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Ready(ReadyArgs),
    /// Show a command's status record (GET /commands/{commandId})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Status(CommandIdArgs),
    /// Cancel a scheduled or queued command (DELETE /commands/{commandId})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Cancel(CommandIdArgs),
    /// List the devices the server knows, with their presence (GET /devices)
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Devices(DevicesArgs),
    /// Show one device's presence (GET /devices/{deviceId})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Device(DeviceArgs),
    /// Be a virtual clock: show the commands clocks receive from the MQTT broker
    #[command(after_help = WATCH_AFTER_HELP)]
    Watch(WatchArgs),
    /// Recurring alarms the server keeps and sends (/schedules): add, list, show, next,
    /// pause, resume, skip, rm
    #[command(subcommand, after_help = SUBCOMMAND_AFTER_HELP)]
    Schedule(ScheduleCommand),
    /// Follow what happens to the devices as it happens (GET /events): one line per event
    #[command(after_help = EVENTS_AFTER_HELP)]
    Events(EventsArgs),
}

/// `clockctl schedule …` (SPEC 12.4).
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a recurring alarm (POST /schedules); prints its id and next occurrence
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Add(ScheduleAddArgs),
    /// List schedules: id, device, time, days, zone, next, enabled (GET /schedules)
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    List(ScheduleListArgs),
    /// Show one schedule (GET /schedules/{scheduleId})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Show(ScheduleIdArgs),
    /// The next occurrences of a schedule's rule (GET /schedules/{scheduleId}/occurrences)
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Next(ScheduleNextArgs),
    /// Stop a schedule until resumed (PATCH {"enabled":false})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Pause(ScheduleIdArgs),
    /// Start a paused schedule again (PATCH {"enabled":true})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Resume(ScheduleIdArgs),
    /// Skip the next occurrence (POST /schedules/{scheduleId}/skip); never retried, so it
    /// never skips two
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Skip(ScheduleIdArgs),
    /// Delete a schedule (DELETE /schedules/{scheduleId})
    #[command(after_help = SUBCOMMAND_AFTER_HELP)]
    Rm(ScheduleIdArgs),
}

/// `clockctl schedule add`.
#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Target device id: 1-64 of A-Z a-z 0-9 _ -
    #[arg(long, value_name = "ID")]
    pub device: String,
    /// Local wall time, 24-hour: HH:MM or HH:MM:SS, e.g. 06:30
    #[arg(long, value_name = "HH:MM[:SS]")]
    pub time: String,
    /// Days: daily (default), weekdays (mon-fri), weekends, a range such as mon-fri, or a
    /// list such as mon,wed,fri
    #[arg(long, value_name = "DAYS")]
    pub days: Option<String>,
    /// IANA time zone, e.g. Europe/Berlin; default this machine's (TZ, else /etc/localtime)
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Label of each alarm (default empty)
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub label: Option<String>,
    /// Time to live of each occurrence's command, 1-604800 seconds (default: the server's
    /// COMMAND_TTL_SECS)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub ttl: Option<i64>,
    /// Add it paused (resume with clockctl schedule resume)
    #[arg(long)]
    pub disabled: bool,
    /// Idempotency-Key to send (default: a new UUID per invocation), so a retry never adds
    /// two
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key, display_order = 90)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub retries: Retries,
}

/// `clockctl schedule list`.
#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    /// Only this device's schedules
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    #[command(flatten)]
    pub retries: Retries,
}

/// `clockctl schedule show|pause|resume|skip|rm`.
#[derive(Debug, Args)]
pub struct ScheduleIdArgs {
    /// The scheduleId (clockctl schedule list shows them)
    #[arg(value_name = "SCHEDULE_ID")]
    pub schedule_id: String,
    #[command(flatten)]
    pub retries: Retries,
}

/// `clockctl schedule next`.
#[derive(Debug, Args)]
pub struct ScheduleNextArgs {
    /// The scheduleId (clockctl schedule list shows them)
    #[arg(value_name = "SCHEDULE_ID")]
    pub schedule_id: String,
    /// How many occurrences, 1-100
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub count: i64,
    /// Start after this instant, RFC 3339 (default now)
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
    #[command(flatten)]
    pub retries: Retries,
}

/// Shown under `clockctl watch --help` (its variables are listed with the flags).
pub const WATCH_AFTER_HELP: &str = "\
It subscribes to <prefix>/<device>/+ for each --device, or <prefix>/+/+ for every device;
with --profile awtrix3 --topic <T>, to T/notify, T/notify/dismiss, T/power and T/settings of that one
AWTRIX clock (--device, if given, is the name it is shown under).
On a terminal it shows a live view, redrawn every second: the time, the message being shown
with its seconds left, the scheduled alarms with their labels, the brightness. Otherwise (or
with --plain) it prints `watching <filters> on <broker>` once subscribed, then one line per
command, flushed at once:
  clock-1 set_alarm alarmTime=2030-01-01T07:00:00+01:00 label=\"wake up\" commandId=0199...
  clock-1 display_message message=\"hello\" durationSeconds=10 commandId=0199...
  clock-1 set_brightness level=40 commandId=0199...
  clock-1 invalid_command type=\"...\" error=\"...\"   (a payload a clock would reject)
and for an AWTRIX clock:
  kitchen notify text=\"tea is ready\" duration=10
  kitchen alarm text=\"wake up\" hold=true wakeup=true loopSound=true rtttl=\"alarm:d=4,o=5,b=140:c6\"
  kitchen power power=true
  kitchen settings ABRI=false BRI=102
  kitchen dismiss
If the broker goes away it reconnects (and says so on stderr).

With --profile lametric --listen <addr> it is a LaMetric TIME instead: it serves the clock's
HTTP API on <addr> (HTTP Basic, user dev, the key of CLOCKCTL_LAMETRIC_API_KEY or --api-key;
the devices file's url is http://<addr>), prints `virtual LaMetric TIME <name> on http://<addr>`
once listening, then one line per request:
  desk notification id=1 priority=\"info\" icon_type=\"none\" text=\"Tea\" cycles=0
  desk dismiss id=1
  desk display brightness=40 brightness_mode=manual
  desk alarm id=2 priority=\"critical\" icon_type=\"alert\" text=\"Wake up\" cycles=0 sound=...

Like a device, it acknowledges each command it shows (QoS 1, only ever on the device's
own <prefix>/<device>/ack, whatever Response Topic the publish names):
{\"commandId\":\"...\",\"status\":\"succeeded\"}, or \"failed\" with a \"reason\" for a payload it
rejects; --no-ack turns that off. A failed acknowledgement is reported once on stderr;
watching goes on. An AWTRIX clock never acknowledges.

Like a device, it says it is there: each --device a retained online on
<prefix>/<device>/status, with a retained offline as its MQTT Last Will (sent by the broker
if watch dies); an AWTRIX clock online on T/stats/device (offline as its will) and its
readings on T/stats every 10 s. A clean stop says offline itself.

Exit status:
  0  stopped by Ctrl-C or SIGTERM, or the reader of its output went away
  1  the broker could not be reached at start, or refused the subscription
  2  bad usage or invalid input

Go-style flags work too: -device clock-1, -broker=mqtt://host:1883.";

/// `clockctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// MQTT broker the clocks subscribe to: mqtt://host[:port], mqtts://host[:port];
    /// mqtt://user:password@host:port for a broker with passwords (in the variable, the
    /// password stays out of `ps`)
    #[arg(
        long,
        value_name = "URL",
        env = "CLOCKCTL_BROKER_URL",
        hide_env_values = true,
        default_value = crate::clock::watch::DEFAULT_BROKER_URL
    )]
    pub broker: String,
    /// Show only this device (repeat, or separate with commas); default: every device
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    pub device: Vec<String>,
    /// Topic prefix the server publishes under (its MQTT_TOPIC_PREFIX)
    #[arg(
        long,
        value_name = "PREFIX",
        env = "CLOCKCTL_TOPIC_PREFIX",
        hide_env_values = true,
        default_value = crate::clock::watch::DEFAULT_TOPIC_PREFIX
    )]
    pub topic_prefix: String,
    /// For an mqtts:// broker: trust only the CA certificate(s) in this PEM file (default:
    /// the bundled Mozilla roots)
    #[arg(
        long,
        value_name = "FILE",
        env = "CLOCKCTL_CA_FILE",
        hide_env_values = true
    )]
    pub ca_file: Option<String>,
    /// One plain line per command even on a terminal (no live view)
    #[arg(long)]
    pub plain: bool,
    /// Do not acknowledge the commands shown (by default watch answers like a device)
    #[arg(long)]
    pub no_ack: bool,
    /// The clock's firmware: generic (the server's own payloads under --topic-prefix),
    /// awtrix3 (one AWTRIX 3 clock, named by --topic) or lametric (a LaMetric TIME's HTTP
    /// API, served on --listen)
    #[arg(long, value_name = "PROFILE", default_value = "generic", value_parser = parse_profile)]
    pub profile: ProfileName,
    /// With --profile lametric: where the virtual LaMetric TIME serves its API (plain
    /// HTTP), e.g. 127.0.0.1:8080; the devices file's url is then http://<this address>
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// With --profile lametric: the API key every request must carry (HTTP Basic, user
    /// dev); in the variable it stays out of `ps`
    #[arg(
        long,
        value_name = "KEY",
        env = "CLOCKCTL_LAMETRIC_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// With --profile awtrix3: the clock's MQTT prefix, e.g. awtrix_a1b2c3 (its web
    /// interface shows it under MQTT, Prefix)
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// One JSON object per command received, {"topic","retained","payload"} (control
    /// characters escaped); the `watching` line goes to stderr
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// Shown under `clockctl events --help`.
pub const EVENTS_AFTER_HELP: &str = "\
It connects to the server's GET /events (Server-Sent Events) and prints one line per event
as it arrives, flushed at once, from the moment it connects (no replay):
  command <id> <deviceId> <type> <status> [label=\"...\"] [reason=\"...\"]
  device <deviceId> <presence>
  schedule <id> <deviceId> <enabled|paused|deleted> [nextFireAt=...]
With --json, each event as {\"event\":\"<type>\",\"data\":{...}} (control characters escaped).
Text from the server is escaped: control, bidi and zero-width characters never reach the
terminal as such. A line longer than 64 KiB ends the stream with an error.

Exit status:
  0  the server ended the stream
  1  the server could not be reached or refused (status=<code> and its error), or the
     client fell behind (event: overflow): reconnect and read the current state with GET
  2  bad usage or invalid input

Go-style flags work too: -device clock-1, -types=command.";

/// `clockctl events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this device (repeat, or separate with commas); default: every device
    /// in the token's scopes
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    pub device: Vec<String>,
    /// Only these kinds of event, comma-separated: command, device, schedule
    #[arg(long, value_name = "TYPES")]
    pub types: Option<String>,
    #[command(flatten)]
    pub retries: Retries,
    /// One JSON object per event, {"event","data"} (control characters escaped)
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// `--profile`: a profile name of `DEVICES_FILE`.
fn parse_profile(raw: &str) -> Result<ProfileName, String> {
    ProfileName::parse(raw.trim()).ok_or_else(|| {
        let names: Vec<&str> = ProfileName::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown profile; use one of {}", names.join(", "))
    })
}

/// `--retries`: how often a request is tried again after a failure that a retry can
/// mend (SPEC 7.7). Flatten it into every subcommand that calls the server.
#[derive(Debug, Clone, Copy, Args)]
pub struct Retries {
    /// Retries after a connection failure, a timeout, a 502 or a 503, with back-off (a
    /// command keeps its Idempotency-Key, so it is never delivered twice); 0 disables
    #[arg(
        id = "retries",
        long = "retries",
        value_name = "N",
        default_value_t = DEFAULT_RETRIES,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETRIES)),
        allow_negative_numbers = true,
        display_order = 91
    )]
    pub count: u32,
}

/// How a command is submitted and followed (SPEC 7.7); flattened into each command.
#[derive(Debug, Clone, Args)]
pub struct Submit {
    /// Idempotency-Key to send (1-255 visible ASCII characters); default: a new UUID per
    /// invocation. Re-using a key for the same command never delivers it twice
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key, display_order = 90)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub retries: Retries,
    /// After the 202, follow the command until it ends (succeeded, failed, expired,
    /// cancelled; or sent, for a device that never acknowledges), for at most DURATION
    /// (default 30s; e.g. --wait=500ms, --wait=2m); exit 0 only for succeeded or that sent
    #[arg(
        long,
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = DEFAULT_WAIT,
        value_parser = parse_wait,
        display_order = 92
    )]
    pub wait: Option<std::time::Duration>,
    /// Print the server's JSON answer (with its commandId) instead of the success line;
    /// with --wait, the final record
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// `clockctl ready`.
#[derive(Debug, Args)]
pub struct ReadyArgs {
    /// Print the server's readiness JSON ({"status":...}) instead of ready or not_ready
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// `clockctl status` and `clockctl cancel`.
#[derive(Debug, Args)]
pub struct CommandIdArgs {
    /// The commandId of the 202 answer (shown with --json)
    #[arg(value_name = "COMMAND_ID")]
    pub command_id: String,
    #[command(flatten)]
    pub retries: Retries,
    /// Print the command's record as the server's JSON instead of text
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// `clockctl devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub retries: Retries,
    /// Print the server's JSON ({"devices":[...]}) instead of one line per device
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// `clockctl device`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// The device's id, e.g. clock-1
    #[arg(value_name = "DEVICE_ID")]
    pub device_id: String,
    #[command(flatten)]
    pub retries: Retries,
    /// Print the server's JSON instead of text
    #[arg(long, display_order = 100)]
    pub json: bool,
}

/// `--retries` when not given.
pub const DEFAULT_RETRIES: u32 = 2;
/// The most `--retries` accepted: with the back-off cap that is about half a minute.
pub const MAX_RETRIES: u32 = 20;
/// `--wait` without a value.
pub const DEFAULT_WAIT: &str = "30s";
/// The longest `--wait`.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Longest Idempotency-Key the server accepts (SPEC 7.6).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `--idempotency-key`: 1-255 visible ASCII characters, as the server accepts them.
fn parse_idempotency_key(raw: &str) -> Result<String, String> {
    if raw.is_empty()
        || raw.len() > MAX_IDEMPOTENCY_KEY
        || !raw.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "pass 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces), e.g. \
             --idempotency-key deploy-42, or leave it out for a new UUID"
        ));
    }
    Ok(raw.to_owned())
}

/// `--wait=DURATION`: `500ms`, `30s`, `2m`, `1h`, `1m30s`; more than zero, at most a day.
fn parse_wait(raw: &str) -> Result<std::time::Duration, String> {
    let fix =
        "pass a duration such as --wait=500ms, --wait=30s or --wait=2m (--wait alone waits 30s)";
    let wait = humantime::parse_duration(raw.trim()).map_err(|e| format!("{e}; {fix}"))?;
    if wait.is_zero() || wait > MAX_WAIT {
        return Err(format!("it must be more than 0 and at most 24h; {fix}"));
    }
    Ok(wait)
}

/// `clockctl alarm`.
#[derive(Debug, Args)]
pub struct AlarmArgs {
    /// Target device id: 1-64 of A-Z a-z 0-9 _ -
    #[arg(long, value_name = "ID")]
    pub device: String,
    /// Alarm time, RFC 3339, e.g. 2030-01-02T07:30:00+01:00
    #[arg(long, value_name = "RFC3339")]
    pub time: String,
    /// Label shown with the alarm (default empty)
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub label: Option<String>,
    #[command(flatten)]
    pub submit: Submit,
}

/// `clockctl message`.
#[derive(Debug, Args)]
pub struct MessageArgs {
    /// Target device id: 1-64 of A-Z a-z 0-9 _ -
    #[arg(long, value_name = "ID")]
    pub device: String,
    /// Text to show; must not be blank
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub message: String,
    /// How long to show it, 1-3600 seconds
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub duration: i64,
    #[command(flatten)]
    pub submit: Submit,
}

/// `clockctl brightness`.
#[derive(Debug, Args)]
pub struct BrightnessArgs {
    /// Target device id: 1-64 of A-Z a-z 0-9 _ -
    #[arg(long, value_name = "ID")]
    pub device: String,
    /// Brightness, 0-100
    #[arg(long, value_name = "0-100", allow_negative_numbers = true)]
    pub level: i64,
    #[command(flatten)]
    pub submit: Submit,
}

impl Cli {
    /// Parses a full argv (program name first), accepting the Go flag forms as well.
    pub fn try_parse_go_style<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Self::try_parse_from(normalize_go_flags(argv))
    }
}

/// Rewrites Go-style single-dash long flags (`-device`, `-device=x`, `-json`, `-help`, ...)
/// to the double-dash form clap understands. Values of value-taking flags and everything
/// after `--` are left alone; unknown arguments pass through for clap to report.
pub fn normalize_go_flags<I, T>(argv: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut next_is_value = false;
    let mut after_terminator = false;
    // Set right after a `--wait` without `=`: where it is in `out`.
    let mut bare_wait: Option<usize> = None;
    for (i, arg) in argv.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if i == 0 || after_terminator || std::mem::take(&mut next_is_value) {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if let Some(at) = bare_wait.take()
            && text.starts_with(|c: char| c.is_ascii_digit())
        {
            // `--wait 5s`: the subcommands with --wait take no positional argument, so this
            // can only be its value (and parse_wait explains a bad one).
            out[at] = format!("--wait={text}").into();
            continue;
        }
        if text == "--" {
            after_terminator = true;
            out.push(arg);
            continue;
        }
        let (body, single_dash) = if let Some(rest) = text.strip_prefix("--") {
            (rest, false)
        } else if let Some(rest) = text.strip_prefix('-') {
            (rest, true)
        } else {
            out.push(arg);
            continue;
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let takes_value = VALUE_FLAGS.contains(&name);
        if takes_value && inline_value.is_none() {
            next_is_value = true;
        }
        // Go's flag package takes a value for a boolean flag only after `=`
        // (`-json=true`, `--json=0`, ...): true becomes the bare switch, false drops it,
        // anything else goes on for clap to report as an unexpected value.
        if BOOL_FLAGS.contains(&name)
            && let Some(value) = inline_value
        {
            match crate::shared::parse_go_bool(value) {
                Some(true) => out.push(format!("--{name}").into()),
                Some(false) => {}
                None => out.push(format!("--{body}").into()),
            }
            continue;
        }
        if name == "wait" && inline_value.is_none() {
            bare_wait = Some(out.len());
        }
        // Every long flag: the known ones, and a mistyped `-devcie`, which clap would
        // otherwise read as the short flags -d -e ... instead of suggesting `--device`.
        let long_name = name.len() >= 2 && name.starts_with(|c: char| c.is_ascii_alphabetic());
        if single_dash && (takes_value || SWITCH_FLAGS.contains(&name) || long_name) {
            out.push(format!("-{text}").into());
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_go_flags(std::iter::once("clockctl").chain(args.iter().copied()))
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&[
                "alarm",
                "-device",
                "clock-1",
                "-time=2030-01-01T00:00:00Z",
                "-json"
            ]),
            [
                "alarm",
                "--device",
                "clock-1",
                "--time=2030-01-01T00:00:00Z",
                "--json"
            ]
        );
        assert_eq!(norm(&["-help"]), ["--help"]);
        assert_eq!(norm(&["message", "-h"]), ["message", "-h"]);
    }

    #[test]
    fn values_and_arguments_after_the_terminator_are_left_alone() {
        assert_eq!(
            norm(&["message", "-message", "-json", "-device=-x", "--", "-level"]),
            [
                "message",
                "--message",
                "-json",
                "--device=-x",
                "--",
                "-level"
            ]
        );
        assert_eq!(
            norm(&["brightness", "-level", "-5", "-unknown", "-7", "-x"]),
            ["brightness", "--level", "-5", "--unknown", "-7", "-x"]
        );
    }

    #[test]
    fn every_go_flag_form_parses_to_the_same_arguments() {
        for form in [
            &["-device", "clock-1"][..],
            &["--device", "clock-1"],
            &["-device=clock-1"],
            &["--device=clock-1"],
        ] {
            let argv = ["clockctl", "brightness"]
                .into_iter()
                .chain(form.iter().copied())
                .chain(["-level", "40"]);
            let cli = Cli::try_parse_go_style(argv).unwrap();
            match cli.command {
                Command::Brightness(b) => {
                    assert_eq!(b.device, "clock-1");
                    assert_eq!(b.level, 40);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn json_is_accepted_before_or_after_the_subcommand() {
        let before = Cli::try_parse_go_style(["clockctl", "-json", "ready"]).unwrap();
        let after = Cli::try_parse_go_style(["clockctl", "ready", "--json"]).unwrap();
        assert!(before.json && after.json);
    }

    #[test]
    fn json_takes_a_go_boolean_after_an_equals_sign() {
        for on in [
            "-json=true",
            "--json=1",
            "-json=T",
            "-json=TRUE",
            "-json=True",
        ] {
            let cli = Cli::try_parse_go_style(["clockctl", on, "ready"]).unwrap();
            assert!(cli.json, "{on}");
        }
        for off in ["-json=false", "--json=0", "-json=f", "-json=FALSE"] {
            let cli = Cli::try_parse_go_style(["clockctl", "ready", off]).unwrap();
            assert!(!cli.json, "{off}");
        }
        let err = Cli::try_parse_go_style(["clockctl", "ready", "-json=yes"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("yes"), "{err}");
        // A value after `-message` is text, even if it looks like the flag.
        assert_eq!(
            norm(&["message", "-message", "-json=false"]),
            ["message", "--message", "-json=false"]
        );
    }

    #[test]
    fn missing_required_flags_are_usage_errors_with_exit_code_2() {
        let err = Cli::try_parse_go_style(["clockctl", "brightness", "--device", "c"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--level"), "{err}");
    }

    #[test]
    fn a_mistyped_flag_or_subcommand_is_answered_with_the_one_meant() {
        for (argv, meant) in [
            (&["clockctl", "alrm"][..], "'alarm'"),
            (&["clockctl", "message", "--devcie", "c"], "'--device'"),
            (&["clockctl", "status", "x", "--retry", "1"], "'--retries'"),
            (&["clockctl", "message", "-devcie", "c"], "'--device'"),
        ] {
            let err = Cli::try_parse_go_style(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            let text = err.to_string();
            assert!(text.contains("similar"), "{argv:?}: {text}");
            assert!(text.contains(meant), "{argv:?}: {text}");
        }
    }

    #[test]
    fn wait_joins_only_a_following_value_that_starts_with_a_digit() {
        assert_eq!(
            norm(&["message", "--wait", "5s", "-wait", "2m", "--wait", "--json"]),
            ["message", "--wait=5s", "--wait=2m", "--wait", "--json"]
        );
        assert_eq!(
            norm(&["message", "--message", "--wait", "5s"]),
            ["message", "--message", "--wait", "5s"],
            "a value of another flag is left alone"
        );
    }

    #[test]
    fn json_before_or_inside_a_subcommand_with_its_own_help_sets_the_same_flag() {
        for argv in [
            &["clockctl", "status", "x", "--json"][..],
            &["clockctl", "--json", "status", "x"],
            &["clockctl", "watch", "-json"],
            &[
                "clockctl",
                "-json",
                "message",
                "--device",
                "c",
                "--message",
                "m",
            ],
        ] {
            assert!(Cli::try_parse_go_style(argv).unwrap().json, "{argv:?}");
        }
        assert!(!Cli::try_parse_go_style(["clockctl", "ready"]).unwrap().json);
    }

    #[test]
    fn every_flag_that_takes_a_value_is_listed_for_the_go_style_rewrite() {
        use clap::CommandFactory;
        fn walk(command: &clap::Command, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let known = VALUE_FLAGS.contains(&long) || SWITCH_FLAGS.contains(&long);
                if arg.get_action().takes_values() && !known {
                    missing.push(format!("{} --{long}", command.get_name()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), &mut missing);
        assert!(missing.is_empty(), "add to VALUE_FLAGS: {missing:?}");
    }

    #[test]
    fn clap_configuration_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
