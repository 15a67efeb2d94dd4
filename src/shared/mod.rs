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
//! - [`json_object`]: a JSON object read into a struct, never from an array.
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

/// `bytes` as exactly one JSON object read into `T`. serde reads a struct from a JSON
/// array too (`["id","succeeded"]` fills the fields in order); every JSON input whose
/// shape is fixed goes through here instead, so an array is refused.
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // Not JSON at all keeps serde's own error (a syntax error, with its place).
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)?;
        return Err(<serde_json::Error as serde::de::Error>::custom(
            "expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_struct_is_read_from_a_json_object_only_never_from_an_array() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Pair {
            a: String,
            b: String,
        }
        assert!(json_object::<Pair>(br#" {"a":"x","b":"y"}"#).is_ok());
        assert!(serde_json::from_slice::<Pair>(br#"["x","y"]"#).is_ok());
        for bad in [&br#"["x","y"]"#[..], b" [\"x\",\"y\"]", b"null"] {
            let e = json_object::<Pair>(bad).unwrap_err();
            assert!(e.is_data(), "{bad:?}: {e}");
        }
        for not_json in [&b""[..], b"  ", b"[1,"] {
            assert!(json_object::<Pair>(not_json).is_err(), "{not_json:?}");
        }
    }

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
