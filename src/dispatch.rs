//! The dispatcher: a validated command goes to the transports, and every attempt is audited.

use std::net::IpAddr;
use std::sync::Arc;

use crate::domain::Envelope;
use crate::transport::{Transport, TransportError};

/// Who asked for a dispatch, for the audit record (SPEC 2.1 step 12).
pub struct AuditContext<'a> {
    pub principal: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
}

/// What an audit record says about the command itself.
pub struct AuditedCommand<'a> {
    pub device_id: &'a str,
    pub command_type: &'a str,
    pub request_id: &'a str,
    pub command_id: &'a str,
}

impl<'a> From<&'a Envelope> for AuditedCommand<'a> {
    fn from(envelope: &'a Envelope) -> Self {
        Self {
            device_id: envelope.device_id.as_str(),
            command_type: envelope.command.command_type().as_str(),
            request_id: &envelope.request_id,
            command_id: &envelope.command_id,
        }
    }
}

// One record, several levels and results: a tracing level is fixed per call site, so the
// fields are written once here and the macro makes the call sites.
macro_rules! audit {
    ($level:ident, $ctx:expr, $command:expr, $result:literal, $message:literal $(, $($extra:tt)+)?) => {
        tracing::$level!(
            target: "audit",
            principal = $ctx.principal,
            client_ip = %$ctx.client_ip,
            method = $ctx.method,
            path = $ctx.path,
            device_id = $command.device_id,
            command_type = $command.command_type,
            result = $result,
            request_id = $command.request_id,
            command_id = $command.command_id,
            $($($extra)+,)?
            $message
        )
    };
}

/// The audit record of a request answered from its `Idempotency-Key` (SPEC 7.6): nothing
/// was dispatched again.
pub fn audit_replayed(ctx: &AuditContext<'_>, command: &AuditedCommand<'_>) {
    audit!(info, ctx, command, "replayed", "command replayed");
}

/// The audit record of an alarm the gateway holds until `fire_at` (SPEC 8.1): accepted,
/// nothing dispatched yet; the scheduler logs the publish.
pub fn audit_scheduled(ctx: &AuditContext<'_>, command: &AuditedCommand<'_>, fire_at: &str) {
    audit!(
        info,
        ctx,
        command,
        "scheduled",
        "alarm scheduled",
        fire_at = fire_at
    );
}

/// The audit record of a command held until its device is online again (SPEC 11.3):
/// accepted, nothing dispatched yet; its delivery writes the dispatch's own record.
pub fn audit_queued(ctx: &AuditContext<'_>, command: &AuditedCommand<'_>) {
    audit!(
        info,
        ctx,
        command,
        "queued",
        "command held until its device is online"
    );
}

/// Sends commands through the configured transport (a single one or a fan-out).
#[derive(Clone)]
pub struct Dispatcher {
    transport: Arc<dyn Transport>,
}

impl Dispatcher {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self { transport }
    }

    /// Delivers `envelope` and writes one audit record, accepted or failed.
    pub async fn dispatch(
        &self,
        envelope: &Envelope,
        ctx: &AuditContext<'_>,
    ) -> Result<(), TransportError> {
        tracing::debug!(
            command_id = envelope.command_id.as_str(),
            request_id = envelope.request_id.as_str(),
            "dispatching command"
        );
        let result = self.transport.send(envelope).await;
        let command = AuditedCommand::from(envelope);
        match &result {
            Ok(()) => audit!(info, ctx, command, "accepted", "command dispatched"),
            Err(err) => audit!(
                warn,
                ctx,
                command,
                "failed",
                "command dispatch failed",
                failed_transports = %err.transports().join(","),
                error = %err
            ),
        }
        result
    }

    /// Whether every transport can deliver now.
    pub fn is_ready(&self) -> bool {
        self.transport.is_ready()
    }

    /// Closes the transports (after the HTTP server has drained).
    pub async fn close(&self) {
        self.transport.close().await;
    }
}
