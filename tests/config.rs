//! Every variable of SPEC 3: its default, a valid value, and an invalid value that stops
//! start-up with a line naming it (secrets redacted). Also the binary's start-up errors.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use clock_server::config::{Config, ConfigError, LogFormat, TlsPolicy};

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|tok-1|*"),
        ("ENABLED_SENDERS", "mqtt,rest"),
        ("MQTT_BROKER_URL", "mqtts://broker.example"),
        ("CLOCK_REST_BASE_URL", "https://clocks.example/api/"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in vars {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let m = env(vars);
    Config::from_lookup(|k| m.get(k).cloned())
}

fn error(vars: &[(&str, &str)]) -> String {
    load(vars)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn defaults_match_the_spec() {
    let c = load(&[]).unwrap();
    assert_eq!(c.http.addr.to_string(), "0.0.0.0:8080");
    assert_eq!(c.http.read_timeout, Duration::from_millis(10_000));
    assert_eq!(c.http.write_timeout, Duration::from_millis(10_000));
    assert_eq!(c.http.idle_timeout, Duration::from_millis(60_000));
    assert_eq!(c.http.read_header_timeout, Duration::from_millis(5_000));
    assert_eq!(c.http.shutdown_timeout, Duration::from_millis(15_000));
    assert_eq!(c.http.tls, TlsPolicy::Optional { listener: None });
    assert_eq!(c.http.max_body_bytes, 65_536);
    assert_eq!(c.auth_fail_limit_per_min, 60);
    assert!(c.readiness_require_auth);
    assert_eq!(c.transports.names(), ["mqtt", "rest"]);
    let m = c.transports.mqtt().cloned().unwrap();
    assert!(m.use_tls);
    assert_eq!((m.host.as_str(), m.port), ("broker.example", 8883));
    assert_eq!(m.client_id, None);
    assert_eq!(m.username, None);
    assert!(m.password.is_none());
    assert_eq!(m.topic_prefix, "clocks/commands");
    assert_eq!(m.qos, 1);
    assert!(!m.retained);
    assert!(m.connect_retry);
    assert!(!m.insecure_skip_verify);
    assert_eq!(m.publish_timeout, Duration::from_millis(5_000));
    let r = c.transports.rest().cloned().unwrap();
    assert!(r.token.is_none());
    assert_eq!(r.timeout, Duration::from_millis(5_000));
    assert_eq!(r.health_path, None);
    assert_eq!(c.log_format, LogFormat::Text);
}

#[test]
fn require_tls_defaults_to_true_and_then_needs_tls_files_or_a_trusted_proxy() {
    let m: HashMap<String, String> = env(&[])
        .into_iter()
        .filter(|(k, _)| k != "REQUIRE_TLS")
        .collect();
    let e = Config::from_lookup(|k| m.get(k).cloned())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("REQUIRE_TLS") && e.contains("TLS_CERT_FILE"),
        "{e}"
    );
    let c = load(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", "true")]).unwrap();
    assert_eq!(c.http.tls, TlsPolicy::Proxy);
    let c = load(&[
        ("REQUIRE_TLS", "1"),
        ("TLS_CERT_FILE", "/c.pem"),
        ("TLS_KEY_FILE", "/k.pem"),
    ])
    .unwrap();
    let TlsPolicy::Listener { files, trust_proxy } = c.http.tls else {
        panic!("{:?}", c.http.tls)
    };
    assert_eq!(files.cert.to_str(), Some("/c.pem"));
    assert!(!trust_proxy);
}

#[test]
fn http_addr_accepts_the_go_forms() {
    for (v, want) in [
        (":9090", "0.0.0.0:9090"),
        ("127.0.0.1:8081", "127.0.0.1:8081"),
        ("[::]:8082", "[::]:8082"),
        ("[::1]:0", "[::1]:0"),
    ] {
        assert_eq!(
            load(&[("HTTP_ADDR", v)]).unwrap().http.addr.to_string(),
            want
        );
    }
    for bad in ["8080", ":http", "1.2.3.4", ":99999"] {
        let e = error(&[("HTTP_ADDR", bad)]);
        assert!(e.starts_with("HTTP_ADDR=") && e.contains(bad), "{e}");
    }
}

#[test]
fn timeouts_are_milliseconds_with_ranges() {
    for var in [
        "HTTP_READ_TIMEOUT_MS",
        "HTTP_WRITE_TIMEOUT_MS",
        "HTTP_IDLE_TIMEOUT_MS",
        "HTTP_READ_HEADER_TIMEOUT_MS",
        "HTTP_SHUTDOWN_TIMEOUT_MS",
        "CLOCK_REST_TIMEOUT_MS",
        "MQTT_PUBLISH_TIMEOUT_MS",
    ] {
        assert!(load(&[(var, "1234")]).is_ok(), "{var}");
        for bad in ["abc", "-1", "1.5", "3600001"] {
            let e = error(&[(var, bad)]);
            assert!(
                e.contains(&format!("{var}=\"{bad}\"")) && e.contains("expected an integer"),
                "{e}"
            );
        }
    }
    let c = load(&[
        ("HTTP_READ_HEADER_TIMEOUT_MS", "250"),
        ("HTTP_SHUTDOWN_TIMEOUT_MS", "0"),
    ])
    .unwrap();
    assert_eq!(c.http.read_header_timeout, Duration::from_millis(250));
    assert_eq!(c.http.shutdown_timeout, Duration::ZERO);
    assert!(error(&[("HTTP_READ_TIMEOUT_MS", "0")]).contains("HTTP_READ_TIMEOUT_MS"));
}

#[test]
fn tls_files_come_in_pairs() {
    let e = error(&[("TLS_CERT_FILE", "/c.pem")]);
    assert!(e.contains("TLS_KEY_FILE is not set"), "{e}");
    let e = error(&[("TLS_KEY_FILE", "/k.pem")]);
    assert!(e.contains("TLS_CERT_FILE is not set"), "{e}");
}

#[test]
fn booleans_accept_exactly_the_go_spellings() {
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(
            load(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", t)])
                .unwrap()
                .http
                .tls,
            TlsPolicy::Proxy,
            "{t}"
        );
    }
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        assert!(
            !load(&[("READINESS_REQUIRE_AUTH", f)])
                .unwrap()
                .readiness_require_auth,
            "{f}"
        );
    }
    for var in [
        "REQUIRE_TLS",
        "TRUST_PROXY_TLS",
        "READINESS_REQUIRE_AUTH",
        "MQTT_RETAINED",
        "MQTT_CONNECT_RETRY",
        "MQTT_TLS_INSECURE_SKIP_VERIFY",
        "ALLOW_INSECURE_TLS_VERIFY",
        "ALLOW_INSECURE_MQTT",
        "ALLOW_INSECURE_DOWNSTREAM_HTTP",
    ] {
        let e = error(&[(var, "yes")]);
        assert!(
            e.contains(&format!("{var}=\"yes\"")) && e.contains("expected a boolean"),
            "{e}"
        );
    }
}

#[test]
fn max_body_bytes_and_auth_fail_limit_have_ranges() {
    assert_eq!(
        load(&[("MAX_BODY_BYTES", "1024")])
            .unwrap()
            .http
            .max_body_bytes,
        1024
    );
    assert_eq!(
        load(&[("MAX_BODY_BYTES", "10485760")])
            .unwrap()
            .http
            .max_body_bytes,
        10_485_760
    );
    for bad in ["1023", "10485761", "64k"] {
        assert!(error(&[("MAX_BODY_BYTES", bad)]).contains("from 1024 to 10485760"));
    }
    assert_eq!(
        load(&[("AUTH_FAIL_LIMIT_PER_MIN", "10000")])
            .unwrap()
            .auth_fail_limit_per_min,
        10_000
    );
    for bad in ["0", "10001", "x"] {
        assert!(error(&[("AUTH_FAIL_LIMIT_PER_MIN", bad)]).contains("AUTH_FAIL_LIMIT_PER_MIN"));
    }
}

#[test]
fn header_and_connection_limits_have_defaults_and_ranges() {
    let http = load(&[]).unwrap().http;
    assert_eq!(http.max_header_bytes, 16_384);
    assert_eq!(http.max_connections, 10_000);
    let http = load(&[
        ("HTTP_MAX_HEADER_BYTES", "1024"),
        ("HTTP_MAX_CONNECTIONS", "1000000"),
    ])
    .unwrap()
    .http;
    assert_eq!(
        (http.max_header_bytes, http.max_connections),
        (1024, 1_000_000)
    );
    for bad in ["1023", "1048577", "16k"] {
        let e = error(&[("HTTP_MAX_HEADER_BYTES", bad)]);
        assert!(
            e.contains(&format!("HTTP_MAX_HEADER_BYTES=\"{bad}\""))
                && e.contains("from 1024 to 1048576"),
            "{e}"
        );
    }
    for bad in ["0", "1000001", "many"] {
        let e = error(&[("HTTP_MAX_CONNECTIONS", bad)]);
        assert!(
            e.contains("HTTP_MAX_CONNECTIONS") && e.contains("from 1 to 1000000"),
            "{e}"
        );
    }
}

#[test]
fn credentials_are_required_and_their_errors_never_show_tokens() {
    let e = error(&[("API_AUTH_CREDENTIALS", "")]);
    assert!(e.contains("API_AUTH_CREDENTIALS is not set"), "{e}");
    let e = error(&[("API_AUTH_CREDENTIALS", "a|s3cret-one|*;b|s3cret-two")]);
    assert!(
        e.contains("API_AUTH_CREDENTIALS=<redacted>") && e.contains("entry 2"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    let c = load(&[("API_AUTH_CREDENTIALS", "a|t1|clock-*,lamp-1; b|t2|*")]).unwrap();
    assert_eq!(c.credentials.len(), 2);
    assert!(!c.legacy_token);
}

#[test]
fn the_legacy_token_is_used_only_without_credentials() {
    let c = load(&[("API_AUTH_CREDENTIALS", ""), ("API_AUTH_TOKEN", "legacy")]).unwrap();
    assert!(c.legacy_token);
    assert_eq!(c.credentials[0].id, "legacy");
    let c = load(&[("API_AUTH_TOKEN", "legacy")]).unwrap();
    assert!(!c.legacy_token, "API_AUTH_CREDENTIALS wins");
}

#[test]
fn enabled_senders_is_a_case_insensitive_list_of_known_senders() {
    let c = load(&[("ENABLED_SENDERS", " MQTT , ")]).unwrap();
    assert_eq!(c.transports.names(), ["mqtt"]);
    assert!(c.transports.rest().is_none());
    let c = load(&[("ENABLED_SENDERS", "Rest")]).unwrap();
    assert_eq!(c.transports.names(), ["rest"]);
    let e = error(&[("ENABLED_SENDERS", "mqtt,kafka")]);
    assert!(e.contains("ENABLED_SENDERS") && e.contains("kafka"), "{e}");
    assert!(error(&[("ENABLED_SENDERS", " , ")]).contains("at least one"));
}

#[test]
fn the_mqtt_broker_url_is_required_and_plain_mqtt_needs_an_explicit_opt_in() {
    let e = error(&[("MQTT_BROKER_URL", "")]);
    assert!(e.contains("MQTT_BROKER_URL is not set"), "{e}");
    let e = error(&[("MQTT_BROKER_URL", "mqtt://broker:1883")]);
    assert!(
        e.contains("MQTT_BROKER_URL") && e.contains("ALLOW_INSECURE_MQTT=true"),
        "{e}"
    );
    let c = load(&[
        ("MQTT_BROKER_URL", "mqtt://broker"),
        ("ALLOW_INSECURE_MQTT", "true"),
    ])
    .unwrap();
    let m = c.transports.mqtt().cloned().unwrap();
    assert!(!m.use_tls);
    assert_eq!(m.port, 1883);
    let m = load(&[("MQTT_BROKER_URL", "mqtts://[::1]:9999")])
        .unwrap()
        .transports
        .mqtt()
        .cloned()
        .unwrap();
    assert_eq!((m.host.as_str(), m.port), ("::1", 9999));
    for bad in ["http://broker", "broker:1883", "mqtts://"] {
        assert!(
            error(&[("MQTT_BROKER_URL", bad)]).contains("MQTT_BROKER_URL"),
            "{bad}"
        );
    }
    let e = error(&[("MQTT_BROKER_URL", "mqtt://user:hunter2@broker")]);
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn mqtt_settings_parse_and_check_their_ranges() {
    let c = load(&[
        ("MQTT_CLIENT_ID", "gw-1"),
        ("MQTT_USERNAME", "gw"),
        ("MQTT_PASSWORD", "pw"),
        ("MQTT_TOPIC_PREFIX", " /home/clocks/ "),
        ("MQTT_QOS", "2"),
        ("MQTT_RETAINED", "true"),
        ("MQTT_CONNECT_RETRY", "false"),
    ])
    .unwrap();
    let m = c.transports.mqtt().cloned().unwrap();
    assert_eq!(m.client_id.as_deref(), Some("gw-1"));
    assert_eq!(m.username.as_deref(), Some("gw"));
    assert_eq!(m.password.unwrap().expose(), "pw");
    assert_eq!(m.topic_prefix, "home/clocks");
    assert_eq!(m.qos, 2);
    assert!(m.retained);
    assert!(!m.connect_retry);
    for q in ["0", "1"] {
        assert!(load(&[("MQTT_QOS", q)]).is_ok());
    }
    assert!(error(&[("MQTT_QOS", "3")]).contains("MQTT_QOS=\"3\""));
    assert!(error(&[("MQTT_TOPIC_PREFIX", "clocks/#")]).contains("MQTT_TOPIC_PREFIX"));
}

#[test]
fn skipping_broker_verification_needs_both_flags() {
    let e = error(&[("MQTT_TLS_INSECURE_SKIP_VERIFY", "true")]);
    assert!(
        e.contains("MQTT_TLS_INSECURE_SKIP_VERIFY") && e.contains("ALLOW_INSECURE_TLS_VERIFY"),
        "{e}"
    );
    let c = load(&[
        ("MQTT_TLS_INSECURE_SKIP_VERIFY", "true"),
        ("ALLOW_INSECURE_TLS_VERIFY", "true"),
    ])
    .unwrap();
    assert!(c.transports.mqtt().cloned().unwrap().insecure_skip_verify);
    let c = load(&[("ALLOW_INSECURE_TLS_VERIFY", "true")]).unwrap();
    assert!(
        !c.transports.mqtt().cloned().unwrap().insecure_skip_verify,
        "the allow flag alone changes nothing"
    );
}

#[test]
fn the_rest_base_url_is_required_and_must_be_https_unless_allowed() {
    assert!(error(&[("CLOCK_REST_BASE_URL", "")]).contains("CLOCK_REST_BASE_URL is not set"));
    let e = error(&[("CLOCK_REST_BASE_URL", "http://clocks.local")]);
    assert!(
        e.contains("CLOCK_REST_BASE_URL") && e.contains("ALLOW_INSECURE_DOWNSTREAM_HTTP=true"),
        "{e}"
    );
    let c = load(&[
        ("CLOCK_REST_BASE_URL", "http://clocks.local"),
        ("ALLOW_INSECURE_DOWNSTREAM_HTTP", "true"),
    ])
    .unwrap();
    assert_eq!(
        c.transports.rest().cloned().unwrap().base_url.scheme(),
        "http"
    );
    assert!(error(&[("CLOCK_REST_BASE_URL", "not a url")]).contains("CLOCK_REST_BASE_URL"));
    assert!(error(&[("CLOCK_REST_BASE_URL", "ftp://x")]).contains("CLOCK_REST_BASE_URL"));
}

#[test]
fn rest_settings_parse() {
    let c = load(&[
        ("CLOCK_REST_TOKEN", "down-tok"),
        ("CLOCK_REST_TIMEOUT_MS", "750"),
        ("CLOCK_REST_HEALTH_PATH", "/healthz"),
    ])
    .unwrap();
    let r = c.transports.rest().cloned().unwrap();
    assert_eq!(r.token.unwrap().expose(), "down-tok");
    assert_eq!(r.timeout, Duration::from_millis(750));
    assert_eq!(r.health_path.as_deref(), Some("/healthz"));
    assert!(error(&[("CLOCK_REST_HEALTH_PATH", "healthz")]).contains("CLOCK_REST_HEALTH_PATH"));
}

#[test]
fn log_settings_parse() {
    assert_eq!(
        load(&[("LOG_FORMAT", "JSON")]).unwrap().log_format,
        LogFormat::Json
    );
    assert!(error(&[("LOG_FORMAT", "xml")]).contains("LOG_FORMAT=\"xml\""));
    assert!(load(&[("LOG_LEVEL", "debug")]).is_ok());
    assert!(error(&[("LOG_LEVEL", "info,clock_server=loud")]).contains("LOG_LEVEL="));
}

#[test]
fn rust_log_is_the_filter_when_log_level_is_unset_and_a_bad_one_is_named() {
    let c = load(&[("RUST_LOG", "warn,clock_server=debug")]).unwrap();
    assert_eq!(c.log_level.as_deref(), Some("warn,clock_server=debug"));
    // LOG_LEVEL wins, and then RUST_LOG is not looked at.
    let c = load(&[("LOG_LEVEL", "error"), ("RUST_LOG", "=[")]).unwrap();
    assert_eq!(c.log_level.as_deref(), Some("error"));
    let e = error(&[("RUST_LOG", "info,clock_server=loud")]);
    assert!(e.contains("RUST_LOG=\"info,clock_server=loud\""), "{e}");
    assert!(!e.contains("LOG_LEVEL="), "{e}");
}

#[test]
fn every_invalid_variable_is_reported_at_once_one_line_each() {
    let e = load(&[
        ("MQTT_QOS", "7"),
        ("MAX_BODY_BYTES", "1"),
        ("REQUIRE_TLS", "maybe"),
        ("CLOCK_REST_TOKEN", "x"),
        ("API_AUTH_CREDENTIALS", "broken-entry-with-secret"),
    ])
    .unwrap_err();
    assert_eq!(e.0.len(), 4, "{e}");
    for var in [
        "MQTT_QOS",
        "MAX_BODY_BYTES",
        "REQUIRE_TLS",
        "API_AUTH_CREDENTIALS",
    ] {
        assert_eq!(
            e.0.iter().filter(|l| l.starts_with(var)).count(),
            1,
            "{var}: {e}"
        );
    }
    assert!(!e.to_string().contains("broken-entry-with-secret"));
}

#[test]
fn the_binary_refuses_to_start_naming_each_bad_variable_without_secrets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .env("API_AUTH_CREDENTIALS", "ops|super-secret-token")
        .env("MQTT_PASSWORD", "hunter2")
        .env("MQTT_QOS", "5")
        .env("HTTP_ADDR", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in [
        "API_AUTH_CREDENTIALS",
        "MQTT_QOS",
        "HTTP_ADDR",
        "REQUIRE_TLS",
        "MQTT_BROKER_URL",
        "CLOCK_REST_BASE_URL",
    ] {
        assert!(stderr.contains(var), "{var} missing from: {stderr}");
    }
    assert!(
        !stderr.contains("super-secret-token") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_binary_names_an_unreadable_tls_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("API_AUTH_CREDENTIALS", "ops|t|*")
        .env("ENABLED_SENDERS", "rest")
        .env("CLOCK_REST_BASE_URL", "https://downstream.invalid")
        .env("TLS_CERT_FILE", "/nonexistent/cert.pem")
        .env("TLS_KEY_FILE", "/nonexistent/key.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS_CERT_FILE=/nonexistent/cert.pem"),
        "{stderr}"
    );
}

#[test]
fn the_state_store_and_its_limits_have_defaults_and_ranges() {
    use clock_server::store::StoreKind;
    let tracking = load(&[]).unwrap().tracking;
    assert_eq!(tracking.store, StoreKind::Memory);
    assert_eq!(tracking.settings.max_commands, 100_000);
    assert_eq!(tracking.settings.max_bytes, 32 << 20);
    // The bounds are shared by the credentials (one in this environment).
    assert_eq!(tracking.settings.shares, 1);
    assert_eq!(tracking.settings.retention.as_secs(), 86_400);
    assert_eq!(tracking.command_ttl.as_secs(), 600);
    assert_eq!(tracking.idempotency_ttl.as_secs(), 86_400);
    assert_eq!(
        load(&[("STATE_STORE", "none")]).unwrap().tracking.store,
        StoreKind::None
    );
    assert_eq!(
        load(&[("STATE_STORE", "file:/var/lib/x.db")])
            .unwrap()
            .tracking
            .store,
        StoreKind::File("/var/lib/x.db".into())
    );
    for (var, bad, accepted) in [
        ("STATE_MAX_COMMANDS", "999", "from 1000 to 10000000"),
        (
            "STATE_MAX_BYTES",
            "1048575",
            "from 1048576 to 1099511627776",
        ),
        ("STATE_RETENTION_SECS", "59", "from 60 to 2592000"),
        ("COMMAND_TTL_SECS", "0", "from 1 to 604800"),
        ("IDEMPOTENCY_TTL_SECS", "604801", "from 60 to 604800"),
    ] {
        let e = error(&[(var, bad)]);
        assert!(e.contains(var) && e.contains(accepted), "{e}");
    }
    let e = error(&[("STATE_STORE", "postgres://db")]);
    assert!(e.contains("STATE_STORE") && e.contains("memory"), "{e}");
}

#[test]
fn a_redis_store_password_is_never_shown_and_is_redacted_from_logged_text() {
    let e = error(&[
        ("STATE_STORE", "redis://user:hunter2-secret@:6379"),
        ("MAX_BODY_BYTES", "1"),
    ]);
    assert!(e.contains("STATE_STORE"), "{e}");
    assert!(!e.contains("hunter2-secret"), "{e}");
    let config = load(&[("STATE_STORE", "redis://user:hunter2%2Dsecret@redis:6379/0")]).unwrap();
    let scrubbed = config
        .redactor
        .redact("answer: hunter2-secret and hunter2%2Dsecret");
    assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
}

#[test]
fn mqtt_shared_group_is_one_topic_level() {
    let mqtt = |vars: &[(&str, &str)]| {
        let mut all = vec![
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", "mqtts://broker:8883"),
        ];
        all.extend_from_slice(vars);
        all.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>()
    };
    let vars = mqtt(&[("MQTT_SHARED_GROUP", "gateways")]);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(load(&vars).is_ok());
    for bad in ["a/b", "g+", "#"] {
        let vars = mqtt(&[("MQTT_SHARED_GROUP", bad)]);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let e = error(&vars);
        assert!(e.contains("MQTT_SHARED_GROUP"), "{e}");
    }
}
