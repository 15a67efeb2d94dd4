//! Small pieces that the server, `clockctl` and the virtual clock all use, each defined
//! once here so that none of them has to import another's internals.
//!
//! - [`secret`]: [`Secret`], a string that never prints.
//! - [`shutdown`]: the SIGINT/SIGTERM future every binary stops on.
//! - [`go_bool`]: booleans as Go's `strconv.ParseBool` reads them (every variable of the SPEC).
//! - [`broker_url`]: `mqtt://` / `mqtts://` broker URLs: scheme, default port, host, user info.
//! - [`process_env`]: the environment lookup the binaries pass to the configuration readers.
//! - [`MAX_MQTT_PACKET_SIZE`]: the largest packet the server and `clockctl watch` accept.

pub mod broker_url;
pub mod go_bool;
pub mod secret;
pub mod shutdown;

pub use broker_url::{BrokerUrl, BrokerUrlError};
pub use go_bool::parse_go_bool;
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
