//! Logging set-up: `tracing` with text (default) or JSON lines, level from `LOG_LEVEL`
//! or `RUST_LOG` (default `info`), written to stderr.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber, writing to stderr. Safe to call once per process.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = level
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // No colour codes: logs go to files and shippers, not to a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
}
