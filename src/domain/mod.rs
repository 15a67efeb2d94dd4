//! Domain types that cannot hold invalid values: device ids, scopes and commands.
//!
//! Everything here is pure (no I/O). Request bodies are turned into these types once, at
//! the HTTP edge; transports only ever see a validated [`Envelope`].

mod command;
mod device;

pub use command::{Command, CommandType, Envelope, ValidationError};
pub use device::{DeviceId, DeviceIdError, Scope};
