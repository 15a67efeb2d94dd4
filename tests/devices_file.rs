//! `DEVICES_FILE` (SPEC 8): a valid file gives the devices their profiles; every mistake
//! stops start-up with the file, the line and what is wrong — one test per mistake.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;

use clock_server::config::{Config, ConfigError};
use clock_server::domain::awtrix3::{Awtrix3Device, AwtrixTopic, Rtttl};
use clock_server::domain::{DeviceId, Profile};

fn env(file: &std::path::Path, vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|tok-1|*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", "mqtts://broker.example"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    m.insert("DEVICES_FILE".into(), file.display().to_string());
    for (k, v) in vars {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

/// The configuration with a devices file holding `text`, and the file's path.
fn load_with(text: &str, vars: &[(&str, &str)]) -> (Result<Config, ConfigError>, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let m = env(file.path(), vars);
    let path = file.path().display().to_string();
    (Config::from_lookup(|k| m.get(k).cloned()), path)
}

/// The one error line for `text`; it must name the file and `line`.
fn error_at(text: &str, vars: &[(&str, &str)], line: usize) -> String {
    let (result, path) = load_with(text, vars);
    let errors = result.expect_err("the devices file should be refused").0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors.into_iter().next().unwrap();
    assert!(
        e.starts_with(&format!("DEVICES_FILE={path} line {line}: ")),
        "want file and line {line}: {e}"
    );
    e
}

const KITCHEN: &str = r#"# my clocks
[devices.kitchen]
profile = "awtrix3"
topic = "awtrix_a1b2c3"     # the clock's prefix
alarm_rtttl = "alarm:d=4,o=5,b=140:c6,p,c6,p,c6"

[devices.hall]
profile = "awtrix3"
topic = "home/awtrix/hall"

[devices.clock-1]
profile = "generic"
"#;

#[test]
fn a_valid_file_gives_each_listed_device_its_profile() {
    let (config, path) = load_with(KITCHEN, &[]);
    let config = config.unwrap();
    assert_eq!(config.devices_file.unwrap().display().to_string(), path);
    let id = |s: &str| DeviceId::parse(s).unwrap();
    assert_eq!(
        config.devices.profile(&id("kitchen")),
        &Profile::Awtrix3(Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_a1b2c3").unwrap(),
            Some(Rtttl::parse("alarm:d=4,o=5,b=140:c6,p,c6,p,c6").unwrap())
        ))
    );
    assert_eq!(
        config.devices.profile(&id("hall")),
        &Profile::Awtrix3(Awtrix3Device::new(
            AwtrixTopic::parse("home/awtrix/hall").unwrap(),
            None
        ))
    );
    assert_eq!(config.devices.profile(&id("clock-1")), &Profile::Generic);
    assert_eq!(config.devices.profile(&id("unlisted")), &Profile::Generic);
    assert_eq!(config.devices.len(), 3);
}

#[test]
fn an_empty_file_and_no_file_list_no_device() {
    let (config, _) = load_with("# nothing yet\n", &[]);
    assert!(config.unwrap().devices.is_empty());
    let m: HashMap<String, String> = env(std::path::Path::new("x"), &[])
        .into_iter()
        .filter(|(k, _)| k != "DEVICES_FILE")
        .collect();
    let config = Config::from_lookup(|k| m.get(k).cloned()).unwrap();
    assert!(config.devices.is_empty() && config.devices_file.is_none());
}

#[test]
fn the_demo_can_add_a_device_without_a_file() {
    let (config, _) = load_with("", &[]);
    let mut config = config.unwrap();
    let awtrix = Awtrix3Device::new(AwtrixTopic::parse("awtrix-1").unwrap(), None);
    config.devices.insert(
        DeviceId::parse("awtrix-1").unwrap(),
        Profile::Awtrix3(awtrix),
    );
    assert_eq!(
        config
            .devices
            .profile(&DeviceId::parse("awtrix-1").unwrap())
            .name(),
        "awtrix3"
    );
}

#[test]
fn an_unreadable_file_is_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("devices.toml");
    let m = env(&missing, &[]);
    let errors = Config::from_lookup(|k| m.get(k).cloned()).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("DEVICES_FILE={}: cannot read", missing.display()))
            && errors[0].contains("No such file"),
        "{}",
        errors[0]
    );
}

/// The configuration errors for `DEVICES_FILE=path`, within 5 s (a read that hangs or
/// runs for long fails the test instead of stalling it).
fn errors_for(path: &std::path::Path) -> Vec<String> {
    let m = env(path, &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Config::from_lookup(|k| m.get(k).cloned()).err());
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("reading the devices file did not finish within 5 s")
        .expect("the configuration should be refused")
        .0
}

#[test]
fn a_fifo_a_device_or_a_huge_file_is_refused_at_once_and_never_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("devices.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for path in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        let errors = errors_for(path);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("DEVICES_FILE={}: ", path.display()))
                && errors[0].contains("not a regular file"),
            "{}",
            errors[0]
        );
    }
    let huge = dir.path().join("devices.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let errors = errors_for(&huge);
    assert!(errors[0].contains("larger than 4 MiB"), "{errors:?}");
    let errors = errors_for(dir.path());
    assert!(errors[0].contains("is a directory"), "{errors:?}");
}

#[test]
fn a_file_that_is_not_toml_points_at_the_line() {
    let e = error_at("[devices.kitchen]\nprofile = awtrix3\n", &[], 2);
    assert!(e.contains("invalid TOML"), "{e}");
}

#[test]
fn an_unknown_key_of_a_device_is_named_with_the_accepted_keys() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"a\"\ntopik = \"b\"\n",
        &[],
        4,
    );
    assert!(
        e.contains(r#"unknown key "topik" in [devices.kitchen]"#)
            && e.contains("profile, topic, alarm_rtttl"),
        "{e}"
    );
}

#[test]
fn an_unknown_key_at_the_top_is_refused() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"generic\"\n\n[clocks.hall]\nprofile = \"generic\"\n",
        &[],
        4,
    );
    assert!(e.contains(r#"unknown key "clocks""#), "{e}");
}

#[test]
fn an_invalid_device_id_is_refused() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"generic\"\n[devices.\"hall/1\"]\nprofile = \"generic\"\n",
        &[],
        3,
    );
    assert!(
        e.contains(r#"invalid device id "hall/1""#) && e.contains("letters, digits"),
        "{e}"
    );
}

#[test]
fn an_unknown_profile_is_refused_with_the_known_ones() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"awtrix2\"\ntopic = \"a\"\n",
        &[],
        2,
    );
    assert!(
        e.contains(r#"unknown profile "awtrix2""#) && e.contains("generic, awtrix3, lametric"),
        "{e}"
    );
}

#[test]
fn a_device_without_a_profile_is_a_missing_field() {
    let e = error_at("\n[devices.kitchen]\ntopic = \"a\"\n", &[], 2);
    assert!(e.contains("has no profile (missing field)"), "{e}");
}

#[test]
fn an_awtrix3_device_without_a_topic_is_a_missing_field() {
    let e = error_at("[devices.kitchen]\nprofile = \"awtrix3\"\n", &[], 1);
    assert!(e.contains("has no topic (missing field)"), "{e}");
}

#[test]
fn a_topic_with_a_wildcard_is_refused() {
    for topic in ["awtrix/+", "awtrix/#"] {
        let text = format!("[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"{topic}\"\n");
        let e = error_at(&text, &[], 3);
        assert!(e.contains("wildcards + or #"), "{e}");
    }
}

#[test]
fn a_topic_with_an_empty_level_or_none_at_all_is_refused() {
    for topic in ["/awtrix", "awtrix/", "home//awtrix"] {
        let text = format!("[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"{topic}\"\n");
        let e = error_at(&text, &[], 3);
        assert!(e.contains("empty level"), "{topic}: {e}");
    }
    let e = error_at(
        "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"\"\n",
        &[],
        3,
    );
    assert!(e.contains("the topic is empty"), "{e}");
}

#[test]
fn a_melody_the_firmware_would_not_play_is_refused_with_its_line_and_the_fix() {
    for (melody, says) in [
        ("c6,p,c6", "three parts separated by `:`"),
        ("alarm:d=4,o=5,b=140:", "no notes"),
        ("alarm:b=140:c6", "d=<duration>,o=<octave>,b=<bpm>"),
        ("alarm:d=4,o=5,b=140:C6,P", r#"note "C6""#),
        (" ", "three parts"),
    ] {
        let e = error_at(
            &format!(
                "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"awtrix_a1\"\nalarm_rtttl = \"{melody}\"\n"
            ),
            &[],
            4,
        );
        assert!(
            e.contains(r#"invalid alarm_rtttl for device "kitchen": "#)
                && e.contains(says)
                && e.contains("expected an RTTTL melody such as"),
            "{melody}: {e}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = 42\n",
        &[],
        3,
    );
    assert!(
        e.contains("topic of [devices.kitchen] must be a string, not an integer"),
        "{e}"
    );
}

#[test]
fn a_generic_device_takes_no_awtrix_keys() {
    let e = error_at(
        "[devices.clock-1]\nprofile = \"generic\"\ntopic = \"x\"\n",
        &[],
        3,
    );
    assert!(e.contains("topic applies to profile awtrix3 only"), "{e}");
}

#[test]
fn an_awtrix3_device_needs_mqtt_in_enabled_senders() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"awtrix_a1\"\n",
        &[
            ("ENABLED_SENDERS", "rest"),
            ("CLOCK_REST_BASE_URL", "https://clocks.example"),
        ],
        2,
    );
    assert!(e.contains(r#"ENABLED_SENDERS="rest" has no mqtt"#), "{e}");
}

#[test]
fn an_awtrix3_device_needs_a_state_store_for_its_alarms() {
    let e = error_at(
        "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"awtrix_a1\"\n",
        &[("STATE_STORE", "none")],
        2,
    );
    assert!(e.contains("STATE_STORE=none keeps nothing"), "{e}");
}

#[test]
fn every_mistake_is_reported_at_once_in_line_order() {
    let (result, path) = load_with(
        "[devices.a]\nprofile = \"nope\"\n[devices.b]\nprofile = \"awtrix3\"\ntopic = \"x/#\"\n",
        &[],
    );
    let errors = result.unwrap_err().0;
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with(&format!("DEVICES_FILE={path} line 2: ")));
    assert!(errors[1].starts_with(&format!("DEVICES_FILE={path} line 5: ")));
}

const DESK: &str = "[devices.desk]\nprofile = \"lametric\"\nurl = \"https://192.168.1.50:4343\"\napi_key = \"k3y-s3cret\"\n";

#[test]
fn a_lametric_clock_with_a_pinned_certificate_is_read_with_its_defaults() {
    use clock_server::domain::lametric::{AlarmSound, CertCheck, CertPin};
    let pin = "5F:0a:".repeat(16);
    let pin = pin.trim_end_matches(':');
    let (config, _) = load_with(
        &format!("{DESK}cert_sha256 = \"{pin}\"\nalarm_sound = \"alarm3\"\ntimeout_ms = 700\n"),
        &[],
    );
    let config = config.unwrap();
    let Profile::Lametric(desk) = config.devices.profile(&DeviceId::parse("desk").unwrap()) else {
        panic!("not a lametric clock")
    };
    assert_eq!(desk.url.as_str(), "https://192.168.1.50:4343");
    assert_eq!(desk.tls, CertCheck::Pinned(CertPin::parse(pin).unwrap()));
    assert_eq!(desk.alarm_sound, AlarmSound::parse("alarm3").unwrap());
    assert_eq!(desk.timeout, std::time::Duration::from_millis(700));
    assert_eq!(desk.api_key.expose(), "k3y-s3cret");
}

#[test]
fn a_lametric_mistake_names_its_line_and_the_fix_and_never_the_key() {
    for (extra, vars, line, says) in [
        ("", &[][..], 3, "no cert_sha256"),
        (
            "cert_sha256 = \"abc\"\n",
            &[][..],
            5,
            "64 hexadecimal digits",
        ),
        (
            "insecure_tls = true\nalarm_sound = \"alarm14\"\n",
            &[][..],
            6,
            "alarm1 … alarm13",
        ),
        (
            "insecure_tls = \"yes\"\n",
            &[][..],
            5,
            "must be true or false",
        ),
        (
            "insecure_tls = true\ntimeout_ms = 0\n",
            &[][..],
            6,
            "milliseconds from 1 to 600000",
        ),
        (
            "insecure_tls = true\ntopic = \"x\"\n",
            &[][..],
            6,
            "topic applies to profile awtrix3 only",
        ),
    ] {
        let e = error_at(&format!("{DESK}{extra}"), vars, line);
        assert!(e.contains(says), "{extra}: {e}");
        assert!(!e.contains("k3y-s3cret"), "{e}");
    }
    let http = DESK.replace("https://192.168.1.50:4343", "http://192.168.1.50:8080");
    let e = error_at(&http, &[], 3);
    assert!(e.contains("ALLOW_INSECURE_DOWNSTREAM_HTTP=true"), "{e}");
    let (config, _) = load_with(&http, &[("ALLOW_INSECURE_DOWNSTREAM_HTTP", "true")]);
    assert!(config.is_ok());
    let e = error_at(
        "[devices.desk]\nprofile = \"lametric\"\nurl = \"https://x:4343\"\ninsecure_tls = true\n",
        &[],
        1,
    );
    assert!(e.contains("has no api_key (missing field)"), "{e}");
}
