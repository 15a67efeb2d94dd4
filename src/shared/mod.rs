//! Small pieces that the server, `clockctl` and the virtual clock all use, each defined
//! once here so that none of them has to import another's internals.
//!
//! - [`fold`]: [`Folded`], a log line at most once a second with the events folded in.
//! - [`secret`]: [`Secret`], a string that never prints.
//! - [`shutdown`]: the SIGINT/SIGTERM future every binary stops on.
//! - [`go_bool`]: booleans as Go's `strconv.ParseBool` reads them (every variable of the SPEC).
//! - [`broker_url`]: `mqtt://` / `mqtts://` broker URLs: scheme, default port, host, user info.
//! - [`redact`]: [`Redactor`] and [`redact_userinfo`], secrets kept out of printed text.
//! - [`loggable_path`]: a path or topic cut to a length that may be logged.
//! - [`new_id`]: the UUIDv7 of request and command ids.
//! - [`process_env`]: the environment lookup the binaries pass to the configuration readers.
//! - [`MAX_MQTT_PACKET_SIZE`]: the largest packet the server and `clockctl watch` accept.

pub mod broker_url;
pub mod fold;
pub mod go_bool;
pub mod redact;
pub mod secret;
pub mod shutdown;

pub use broker_url::{BrokerUrl, BrokerUrlError};
pub use fold::Folded;
pub use go_bool::parse_go_bool;
pub use redact::{Redactor, redact_userinfo};
pub use secret::Secret;

/// The largest packet this process accepts from a broker (MQTT 5 Maximum Packet Size, the
/// whole packet including its fixed header), announced in CONNECT by the server's MQTT
/// transport and by `clockctl watch`: every command payload is far smaller.
pub const MAX_MQTT_PACKET_SIZE: u32 = 64 * 1024;

/// One variable of the process environment; non-UTF-8 bytes become U+FFFD, which then fails
/// validation instead of counting as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Longest request path written to a log line.
pub const MAX_LOGGED_PATH_CHARS: usize = 128;

/// A path as it may be logged: at most [`MAX_LOGGED_PATH_CHARS`] characters, with `…`
/// when cut.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.char_indices().nth(MAX_LOGGED_PATH_CHARS) {
        None => path.into(),
        Some((end, _)) => format!("{}…", &path[..end]).into(),
    }
}

/// A new UUIDv7 for request and command ids: uuid's own generator (feature `fast-rng`), so
/// the random bits come from a thread-local generator seeded once, not a system call per
/// id; ids from one process are ordered, also within a millisecond.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_distinct_version_7_uuids_of_the_current_millisecond() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = secs * 1000 + u64::from(nanos) / 1_000_000;
            assert!(millis >= before && millis <= before + 60_000, "{id}");
        }
    }
}
