//! The virtual clock: what a smart clock would show for the commands it receives over MQTT.
//! `clockctl watch` and `clock-server demo` both run it.
//!
//! - [`ack`]: the acknowledgement a clock publishes for what it showed (SPEC 7.4).
//! - [`awtrix`]: the clock as an AWTRIX 3 clock (SPEC 8.1): its topics, what it makes of
//!   notifications and settings.
//! - [`command`]: a delivered topic and payload (SPEC 4.1) read as a device would, and the
//!   one plain line printed per command.
//! - [`face`]: each clock's display (message with seconds left, alarms, brightness) and the
//!   live view's lines; pure, time is passed in.
//! - [`lametric`]: the virtual LaMetric TIME, the clock's local HTTP API (SPEC 8.3).
//! - [`presence`]: how the clock says it is there: Last Will, birth, AWTRIX `stats`.
//! - [`shown`]: what an AWTRIX clock does with a valid delivery (below `awtrix` and
//!   `command`, which both use it).
//! - [`watch`]: connecting, subscribing, re-connecting, and showing commands as plain lines,
//!   JSON lines or a live terminal view.

pub mod ack;
pub mod awtrix;
pub mod command;
pub mod face;
pub mod lametric;
pub mod presence;
pub mod shown;
pub mod watch;

pub use watch::{Broker, View, WatchError, WatchOptions, Watcher};
