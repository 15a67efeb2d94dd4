//! A real `redis-server` on a free loopback port (no persistence), started and stopped by
//! the test. `stop`/`start` keep the port, for outage tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` process; killed on drop.
pub struct Redis {
    pub port: u16,
    args: Vec<String>,
    password: Option<String>,
    /// `--tls-port` is the served port; certificates from this PKI.
    tls: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl Redis {
    /// No password, nothing kept on disk (`--save '' --appendonly no`).
    pub fn start() -> Self {
        Self::start_with(None, None, false)
    }

    /// `--requirepass password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password), None, false)
    }

    /// `--appendonly yes --appendfsync always` in its own directory: what was written
    /// survives a SIGKILL and a restart on the same port.
    pub fn start_durable() -> Self {
        Self::start_with(None, None, true)
    }

    /// TLS only (`--port 0 --tls-port N`), the server certificate of `pki`, no client
    /// certificates (Debian's redis-server is built with TLS).
    pub fn start_tls(pki: &super::certs::TestPki) -> Self {
        Self::start_with(None, Some(pki), false)
    }

    fn start_with(
        password: Option<&str>,
        tls: Option<&super::certs::TestPki>,
        durable: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            if durable { "yes" } else { "no" }.into(),
            "--appendfsync".into(),
            "always".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--loglevel".into(),
            "warning".into(),
        ];
        match tls {
            Some(pki) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                pki.server_cert.display().to_string(),
                "--tls-key-file".into(),
                pki.server_key.display().to_string(),
                "--tls-ca-cert-file".into(),
                pki.ca_cert.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
            None => args.extend(["--port".into(), port.to_string()]),
        }
        if let Some(p) = password {
            args.extend(["--requirepass".into(), p.to_owned()]);
        }
        let mut r = Self {
            port,
            args,
            password: password.map(str::to_owned),
            tls: tls.is_some(),
            child: None,
            _dir: dir,
        };
        r.start_again();
        r
    }

    /// `redis://127.0.0.1:<port>` (with the password when there is one; `rediss://` for
    /// TLS, by the name the certificate holds).
    pub fn url(&self) -> String {
        match (&self.password, self.tls) {
            (_, true) => format!("rediss://localhost:{}", self.port),
            (Some(p), false) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            (None, false) => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = super::start_until_ready(
            &format!("redis-server on port {}", self.port),
            || {
                Command::new(binary())
                    .args(&self.args)
                    .stdout(super::test_log())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start redis-server (install it: make test-deps)")
            },
            || TcpStream::connect(("127.0.0.1", self.port)).is_ok() && (self.tls || self.ping()),
        );
        self.child = Some(child);
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered, as in a
    /// stall. [`Self::resume`] lets it go on.
    pub fn pause(&self) {
        let pid = self.child.as_ref().expect("running").id();
        super::process::signal(pid, "STOP");
    }

    /// Ends a [`Self::pause`] (SIGCONT).
    pub fn resume(&self) {
        let pid = self.child.as_ref().expect("running").id();
        super::process::signal(pid, "CONT");
    }

    /// Stops the server with SIGKILL (an outage) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command over plain RESP (no TLS), e.g. `["DBSIZE"]`; the first reply line.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = String::new();
        if let Some(p) = &self.password {
            req.push_str(&resp(&["AUTH", p.as_str()]));
        }
        req.push_str(&resp(args));
        stream.write_all(req.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if self.password.is_some() {
            reader.read_line(&mut line)?;
            line.clear();
        }
        reader.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// A command whose answer is one bulk string (e.g. `["INFO", "commandstats"]`).
    pub fn bulk(&self, args: &[&str]) -> String {
        use std::io::Read;
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            self.password.is_none(),
            "bulk() is for servers without a password"
        );
        stream.write_all(resp(args).as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        reader.read_line(&mut head).unwrap();
        let len: usize = head.trim_end().trim_start_matches('$').parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    fn ping(&self) -> bool {
        self.try_command(&["PING"])
            .is_ok_and(|reply| reply == "+PONG")
    }
}

fn resp(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
