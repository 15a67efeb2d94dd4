//! Logging set-up: `tracing` with text (default) or JSON lines, the filter from the
//! configuration (`LOG_LEVEL`, else `RUST_LOG`, both checked there; default `info`),
//! written to stderr.
//!
//! Lines are formatted where they happen and written by a background thread, which
//! writes whatever has gathered in one go (at most a few milliseconds' worth): under load
//! that is one `write(2)` for many audit lines instead of one each, off the request path.
//! Nothing is dropped (a full buffer makes the logging call wait) and the returned guard
//! writes out the rest at exit. See `batch`.

mod batch;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Keep it alive while the process logs: dropping it writes out what is still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] batch::BatchGuard<std::io::Stderr>);

/// Installs the global subscriber, writing to stderr. Safe to call once per process.
pub fn init(format: LogFormat, level: Option<&str>) -> LogGuard {
    let directives = level.unwrap_or("info");
    let filter = EnvFilter::try_new(quiet_mqtt_client(directives))
        .unwrap_or_else(|_| EnvFilter::new(quiet_mqtt_client("info")));
    let (writer, guard) = batch::spawn(std::io::stderr());
    // No colour codes: logs go to files and shippers, not to a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // One JSON object per line; the event's fields (the audit record's principal,
        // client_ip, ..., command_id) sit at the top level next to timestamp, level,
        // target and message, so shippers can index them without parsing a message.
        // Lines from the metrics listener carry "span":{"name":"metrics"}.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    LogGuard(guard)
}

/// The MQTT client library logs every connection loss (even a clean shutdown) at ERROR;
/// our transport logs connection changes itself, with hints. So the library is silenced
/// unless the filter names it (e.g. `LOG_LEVEL=info,mqtt5=debug` when troubleshooting).
fn quiet_mqtt_client(directives: &str) -> String {
    if directives.contains("mqtt5") {
        directives.to_owned()
    } else {
        format!("{directives},mqtt5=off")
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_mqtt_client;

    #[test]
    fn the_mqtt_client_library_is_silenced_unless_named() {
        assert_eq!(quiet_mqtt_client("info"), "info,mqtt5=off");
        assert_eq!(quiet_mqtt_client("debug,mqtt5=trace"), "debug,mqtt5=trace");
    }
}
