//! clock-server: a secure HTTP gateway that authenticates callers, validates commands for
//! smart clocks and delivers them over MQTT and/or a downstream REST service.
//!
//! Where things live (docs/ARCHITECTURE.md has the path of a command and where to add one):
//! - [`domain`]: `DeviceId`, `Scope`; each command's type, routes, fields, limits, validation
//!   and request body (`command.rs`); each device profile's wire forms (`generic.rs`,
//!   `awtrix3.rs`) and the map of devices to profiles (`profile.rs`); a recurring alarm's
//!   rule and its occurrences across daylight saving (`schedule.rs`). No I/O.
//! - [`shared`]: what server and clients both use, once: `Secret`, `Redactor`, ids, the shutdown signal,
//!   Go-style booleans, the MQTT broker URL parser.
//! - [`config`]: `Config::from_env()`, every variable of the spec, all errors at once; the
//!   enabled transports (never empty) and the TLS policy as types.
//! - [`devices`]: `DEVICES_FILE`, the TOML file of devices with a profile, errors by line.
//! - [`security`]: credentials, constant-time token lookup, the auth-failure throttle.
//! - [`http`]: the router, the front checks of every request, extractors, handlers, the
//!   `GET /events` stream, the `/console` web page, the HTTP(S) server.
//! - [`dispatch`]: `Dispatcher` — validated command to transports, plus the audit record.
//! - [`transport`]: the `Transport` trait and its MQTT, REST and fan-out adapters.
//! - [`store`]: the `StateStore` of tracked commands, idempotency keys and schedules; memory,
//!   file and Redis backends.
//! - [`tls`]: rustls configurations shared by the listener, transports and `clockctl`.
//! - [`commands`]: the core, one command's life: submission (`Idempotency-Key`, record,
//!   dispatch or hold, audit), status, cancel, device acknowledgements, the loop that
//!   publishes gateway-held alarms (AWTRIX) at their time. The only holder of the store.
//! - [`presence`]: which devices are online, offline or unknown, from their own MQTT signals.
//! - [`schedules`]: the rules of `/schedules` (SPEC 12): validation, scopes, merge patch, skip,
//!   preview, `Idempotency-Key` on create.
//! - [`startup`]: `Application::build` binds; `run_until_stopped` serves and drains.
//! - [`telemetry`]: log set-up (text or JSON).
//! - [`events`]: live events (SPEC 13.1): the hub `GET /events` streams read, and its relay
//!   through Redis between replicas.
//! - [`metrics`]: Prometheus metrics, the per-transport instrumenting decorator, `/metrics`.
//! - [`cli`]: `clockctl`, the command-line client.
//! - [`terminal`]: server and broker text made safe to print (control characters escaped).
//! - [`clock`]: the virtual clock (MQTT subscriber and terminal view) of `clockctl watch` and the
//!   demo, generic or AWTRIX 3.
//! - [`demo`]: `clock-server demo` — embedded broker (feature `demo`), API and virtual clock on
//!   loopback, composed from outside both.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod demo;
pub mod devices;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod presence;
pub mod schedules;
pub mod security;
pub mod shared;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod terminal;
pub mod tls;
pub mod transport;
