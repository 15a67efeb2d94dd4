//! A real Mosquitto on a free loopback port, started and stopped by the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto process with its own config; killed on drop. `stop`/`start` keep the port,
/// for outage tests.
pub struct Mosquitto {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn binary() -> String {
    if let Ok(p) = std::env::var("MOSQUITTO") {
        return p;
    }
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        if std::path::Path::new(p).exists() {
            return p.to_owned();
        }
    }
    "mosquitto".to_owned()
}

impl Mosquitto {
    /// Plain anonymous listener on 127.0.0.1.
    pub fn start_plain() -> Self {
        Self::start_with("allow_anonymous true\n")
    }

    /// A listener on 127.0.0.1:<free port>; `listener_conf` follows the `listener` line
    /// (e.g. `allow_anonymous true`, TLS or password settings).
    pub fn start_with(listener_conf: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = super::free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlistener {port} 127.0.0.1\n{listener_conf}\n"
            ),
        )
        .unwrap();
        let mut m = Self {
            port,
            conf,
            child: None,
            _dir: dir,
        };
        m.start();
        m
    }

    /// A TLS listener (the server certificate of `pki`, for 127.0.0.1, ::1 and localhost;
    /// client certificates signed by its CA required or not) and a plain listener on a
    /// second port, e.g. for a subscriber or publisher that is not under test. Returns the
    /// broker (its `port` is the TLS one) and the plain port.
    pub fn start_tls(pki: &super::certs::TestPki, require_client_cert: bool) -> (Self, u16) {
        let plain = super::free_port();
        let broker = Self::start_with(&format!(
            "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\nlistener {plain} 127.0.0.1\n",
            pki.ca_cert.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            require_client_cert,
        ));
        (broker, plain)
    }

    /// The directory holding the config; put password files etc. here.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `mqtt://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        // Wait until every listener accepts (a config may add more listeners), or until it
        // exits (e.g. a port is still in use).
        let listeners: Vec<(String, u16)> = std::fs::read_to_string(&self.conf)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("listener "))
            .filter_map(|rest| {
                let mut words = rest.split_whitespace();
                let port = words.next()?.parse().ok()?;
                Some((words.next().unwrap_or("127.0.0.1").to_owned(), port))
            })
            .collect();
        let child = super::start_until_ready(
            &format!("mosquitto on port {}", self.port),
            || {
                Command::new(binary())
                    .arg("-c")
                    .arg(&self.conf)
                    .stdout(Stdio::null())
                    .stderr(super::test_log())
                    .spawn()
                    .expect("start mosquitto (install it: make test-deps)")
            },
            || {
                listeners
                    .iter()
                    .all(|(host, p)| std::net::TcpStream::connect((host.as_str(), *p)).is_ok())
            },
        );
        self.child = Some(child);
    }

    /// Stops the broker (SIGKILL: an outage, not a clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM (a clean shutdown: it saves its persistence database
    /// when `persistence true` is configured) and waits for it to exit.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// The broker's process id (e.g. to SIGSTOP it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
