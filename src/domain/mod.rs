//! Domain types that cannot hold invalid values: device ids, scopes and commands, and the
//! generic profile's wire forms of a command, and a device's acknowledgement ([`ack`]).
//!
//! Everything here is pure (no I/O). Request bodies are turned into these types once, at
//! the HTTP edge; transports only ever see a validated [`Envelope`] and ask it (through a
//! profile such as [`generic`]) for its wire form.

pub mod ack;
mod command;
mod device;
pub mod generic;

pub use command::{
    ALARM_PAST_TOLERANCE_SECS, AlarmRequest, BrightnessRequest, Command, CommandRequest,
    CommandType, DURATION_SECONDS, Envelope, LEVEL, MessageRequest, ValidationError, field,
};
pub use device::{DeviceId, DeviceIdError, Scope};
