//! What a firmware module ([`super::generic`], [`super::awtrix3`], [`super::lametric`])
//! hands the core, in shapes they all share; [`super::profile`] asks each its own. Pure,
//! no I/O.

/// One MQTT publish to a device: its topic and payload. For a device reached over its own
/// HTTP API (a LaMetric), what the gateway holds for it: the request's path and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// How one command goes out over MQTT to a device of a firmware (SPEC 4.1, 8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttForm {
    /// In order, each acknowledged by the broker before the next: the command succeeds
    /// only once every publish has.
    pub publications: Vec<Publication>,
    /// The firmware answers on `<prefix>/<deviceId>/ack` (SPEC 7.2): a tracked command
    /// carries the MQTT 5 Response Topic and Correlation Data. Otherwise neither: they
    /// would only cost bytes.
    pub answers: bool,
    /// `MQTT_RETAINED` applies. False for a firmware that shows what it gets: a retained
    /// notification would be shown again every time the clock reconnects.
    pub may_retain: bool,
}
