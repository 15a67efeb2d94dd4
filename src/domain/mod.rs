//! Domain types that cannot hold invalid values: device ids, scopes and commands, and the
//! wire forms of a command per device profile ([`generic`], [`awtrix3`], [`lametric`], chosen through
//! [`profile`]), a device's acknowledgement ([`ack`]) and its presence messages
//! ([`presence`]), the shapes every firmware module answers in ([`wire`]), and a recurring alarm's rule and its occurrences across daylight saving
//! ([`schedule`]).
//!
//! Everything here is pure (no I/O). Request bodies are turned into these types once, at
//! the HTTP edge; transports only ever see a validated [`Envelope`] and ask it (through a
//! profile such as [`generic`]) for its wire form.

pub mod ack;
pub mod awtrix3;
mod command;
mod device;
pub mod generic;
pub mod lametric;
pub mod presence;
pub mod profile;
pub mod schedule;
pub mod wire;

pub use command::{
    ALARM_PAST_TOLERANCE_SECS, AlarmRequest, BrightnessRequest, Command, CommandRequest,
    CommandType, DURATION_SECONDS, Envelope, LEVEL, MAX_LABEL_CHARS, MessageRequest,
    ValidationError, field,
};
pub use device::{DeviceId, DeviceIdError, Scope};
pub use profile::{Devices, Profile, ProfileName};
