//! The web console (SPEC 13.2) in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`, installed by `scripts/install-test-deps.sh`) driven over
//! WebDriver (fantoccini) through the page of a real `clock-server demo` — its broker,
//! API and virtual clocks (and one more clock, played by hand over MQTT, that loses
//! power). Controls are found the way a person finds them: by their
//! visible label, by a form's accessible name, by a button's text.
//!
//! `UPDATE_CONSOLE_SCREENSHOT=1 cargo test --test browser` also writes the screenshot
//! to `docs/console.png`; every run writes it under the target directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use common::free_port;

const WAIT: Duration = Duration::from_secs(15);

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// A helper process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `clock-server demo` on free loopback ports, once its clocks are subscribed.
struct Demo {
    _process: Process,
    console: String,
    mqtt_port: u16,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Self {
        let (http_port, mqtt_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_clock-server"))
            .arg("demo")
            .args(["--mqtt-addr", &format!("127.0.0.1:{mqtt_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            // A generic clock with an id says it is there (a catch-all one cannot).
            .args(["--devices", "clock-1"])
            .env_clear()
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(common::test_log())
            .spawn()
            .unwrap();
        let lines = common::process::stdout_lines(&mut child);
        let process = Process(child);
        // The banner names the console; the clocks announce their subscriptions after it.
        let mut console = None;
        let mut awtrix_watching = false;
        let deadline = Instant::now() + WAIT;
        while console.is_none() || !awtrix_watching {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).expect("the demo did not start");
            if let Some(rest) = line.trim().strip_prefix("console ") {
                console = rest.split_whitespace().next().map(str::to_owned);
            }
            awtrix_watching |= line.starts_with("watching awtrix_demo/notify ");
        }
        let console = console.unwrap();
        assert_eq!(console, format!("http://127.0.0.1:{http_port}/console"));
        Self {
            _process: process,
            console,
            mqtt_port,
            _dir: dir,
        }
    }
}

/// chromedriver on a free port, and a headless Chromium session with a fresh profile.
struct Browser {
    client: Client,
    _driver: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(common::test_log())
            .stderr(common::test_log())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); ./scripts/install-test-deps.sh installs chromium and chromium-driver",
                    chromedriver()
                )
            });
        let driver = Process(driver);
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            match builder
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// The field whose visible label is `label`, inside `scope` (an XPath).
    async fn field(&self, scope: &str, label: &str) -> fantoccini::elements::Element {
        let label_el = self
            .client
            .find(Locator::XPath(&format!(
                "{scope}//label[normalize-space()='{label}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no label {label:?} in {scope}: {e}"));
        let id = label_el
            .attr("for")
            .await
            .unwrap()
            .expect("label with for=");
        self.client.find(Locator::Id(&id)).await.unwrap()
    }

    /// Types `text` into the field labelled `label` (after clearing it).
    async fn fill(&self, scope: &str, label: &str, text: &str) {
        let field = self.field(scope, label).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, scope: &str, button: &str) {
        self.client
            .find(Locator::XPath(&format!(
                "{scope}//button[normalize-space()='{button}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no button {button:?} in {scope}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits until the element at `xpath` is displayed and its text satisfies `want`.
    async fn wait_text(&self, xpath: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::XPath(xpath)).await
                && el.is_displayed().await.unwrap_or(false)
            {
                last = el.text().await.unwrap_or_default();
                if want(&last) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {what}; last text {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn script(&self, code: &str) -> serde_json::Value {
        self.client.execute(code, vec![]).await.unwrap()
    }

    /// The browser's console log since the last call (chromedriver's log endpoint).
    async fn log(&self) -> Vec<String> {
        let entries = self.client.issue_cmd(BrowserLog).await.unwrap();
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// chromedriver's `POST /session/{id}/se/log {"type":"browser"}`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, url_parse::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// `url::ParseError` without naming the `url` crate (reqwest re-exports its `Url` only).
mod url_parse {
    pub type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}

/// A form found by its accessible name (the heading it is labelled by).
fn form(name: &str) -> String {
    format!("//form[@aria-labelledby = //*[normalize-space()='{name}']/@id]")
}

/// The presence shown for `device` in the list of devices.
fn presence(device: &str) -> String {
    format!("//ul[@id='devices']/li[@data-device='{device}']/span[starts-with(@class,'presence-')]")
}

/// The activity entry of the newest command of `device` with `type`.
fn activity(device: &str, command_type: &str) -> String {
    format!(
        "(//ul[@id='activity']/li[span[normalize-space()='{device}'] and span[normalize-space()='{command_type}']])[1]"
    )
}

#[tokio::test]
async fn in_a_real_browser_the_console_signs_in_sees_a_clock_go_offline_sends_a_message_that_succeeds_and_cancels_a_held_alarm()
 {
    common::app::init_logging();
    let demo = Demo::start();
    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&demo.console).await.unwrap();

    // A wrong token: `unauthorized`, and no data.
    b.fill("", "Token", "not-the-token").await;
    b.click("", "Sign in").await;
    b.wait_text("//*[@id='signin-error']", "unauthorized", |t| {
        t == "unauthorized"
    })
    .await;
    assert!(
        !b.client
            .find(Locator::Id("app"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );

    // The right one, with the keyboard alone: type it and press Enter.
    let token = b.field("", "Token").await;
    token.clear().await.unwrap();
    token
        .send_keys(&format!(
            "dev-token{}",
            char::from(fantoccini::key::Key::Enter)
        ))
        .await
        .unwrap();
    b.wait_text("//button[@id='signout']", "signed in", |t| t == "Sign out")
        .await;
    // The token is in this tab's sessionStorage, nowhere else.
    let stored = b
        .script("return [sessionStorage.getItem('clock-server-token'), localStorage.length, document.cookie, location.href]")
        .await;
    assert_eq!(stored[0], "dev-token");
    assert_eq!(stored[1], 0);
    assert_eq!(stored[2], "");
    assert!(!stored[3].as_str().unwrap().contains("dev-token"));
    b.wait_text("//*[@id='live']", "the live stream", |t| t == "live")
        .await;

    // The demo's clocks are online; one that loses power goes offline, live.
    for device in ["clock-1", "awtrix-1"] {
        b.wait_text(&presence(device), &format!("{device} online"), |t| {
            t == "online"
        })
        .await;
    }
    let status = "clocks/commands/clock-9/status";
    let will = common::device::Will {
        topic: status,
        payload: b"offline",
        retain: true,
    };
    let mut clock_9 = common::device::Device::connect(demo.mqtt_port, "clock-9", Some(will)).await;
    clock_9.publish(status, b"online", true).await;
    b.wait_text(&presence("clock-9"), "clock-9 online", |t| t == "online")
        .await;
    clock_9.lose_power();
    b.wait_text(&presence("clock-9"), "clock-9 offline", |t| t == "offline")
        .await;

    // A message to the demo's generic virtual clock, which acknowledges it.
    b.fill("", "Device", "clock-1").await;
    b.click("//form[@aria-label='Choose a device']", "Show")
        .await;
    b.fill(&form("Send a message"), "Message", "hello from the browser")
        .await;
    b.fill(&form("Send a message"), "Duration", "30").await;
    b.click(&form("Send a message"), "Send").await;
    let entry = activity("clock-1", "display_message");
    b.wait_text(
        &format!("{entry}/span[contains(@class,'status')]"),
        "succeeded",
        |t| t == "succeeded",
    )
    .await;
    b.wait_text(
        "//*[@id='face-text']",
        "the message on the clock face",
        |t| t.eq_ignore_ascii_case("hello from the browser"),
    )
    .await;

    // The server's error is shown beside the form (the page does not validate).
    b.fill(&form("Set the brightness"), "Level", "150").await;
    b.click(&form("Set the brightness"), "Send").await;
    let error = b
        .wait_text(
            &format!("{}//p[@class='error']", form("Set the brightness")),
            "the server's error",
            |t| t.starts_with("invalid command"),
        )
        .await;
    assert!(error.contains("level"), "{error}");

    // An alarm the gateway holds for the AWTRIX clock: scheduled, then cancelled.
    b.fill("", "Device", "awtrix-1").await;
    b.click("//form[@aria-label='Choose a device']", "Show")
        .await;
    let at = (chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    b.fill(&form("Set an alarm"), "Alarm time", &at).await;
    b.fill(&form("Set an alarm"), "Label", "wake up").await;
    b.click(&form("Set an alarm"), "Send").await;
    let entry = activity("awtrix-1", "set_alarm");
    b.wait_text(
        &format!("{entry}/span[contains(@class,'status')]"),
        "scheduled",
        |t| t == "scheduled",
    )
    .await;
    b.wait_text("//*[@id='face-alarm']", "the next alarm on the face", |t| {
        t.contains("wake up")
    })
    .await;
    b.click(&entry, "Cancel").await;
    b.wait_text(
        &format!("{entry}/span[contains(@class,'status')]"),
        "cancelled",
        |t| t == "cancelled",
    )
    .await;

    // Everything came from this origin, and the CSP blocked nothing.
    let origin = demo.console.trim_end_matches("/console").to_owned();
    let urls = b
        .script("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
        .await;
    for url in urls.as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(
            url.starts_with(&format!("{origin}/")),
            "a request to another origin: {url}"
        );
    }
    let log = b.log().await;
    let violations: Vec<_> = log
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Refused to"))
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");

    // The screenshot of docs/console.md, at a desktop width.
    let png = b.client.screenshot().await.unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&out, &png).unwrap();
    if std::env::var_os("UPDATE_CONSOLE_SCREENSHOT").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console.png"),
            &png,
        )
        .unwrap();
    }

    // A phone's width: nothing wider than the screen.
    b.client.set_window_size(390, 844).await.unwrap();
    let fits = b
        .script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(fits, true, "the page scrolls sideways at a phone's width");

    // Signing out forgets the token.
    b.click("", "Sign out").await;
    b.wait_text("//button[normalize-space()='Sign in']", "signed out", |t| {
        t == "Sign in"
    })
    .await;
    let stored = b
        .script("return sessionStorage.getItem('clock-server-token')")
        .await;
    assert_eq!(stored, serde_json::Value::Null);
    browser.client.close().await.unwrap();
}
