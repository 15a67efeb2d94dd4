//! The real `clock-server` binary as a child process, with its stderr (the logs) captured.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running server process; killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    logs: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the binary with exactly `vars` (plus `HTTP_ADDR` on a free loopback port) and
    /// waits until `/health` answers.
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_clock-server")), vars).await
    }

    /// Like [`ServerProcess::start`], under an open-file limit set by the shell first:
    /// `limit` is given to `ulimit`, e.g. `-Sn 64` (soft only) or `-n 64` (soft and hard).
    pub async fn start_with_ulimit(limit: &str, vars: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit {limit} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_clock-server"));
        Self::start_command(cmd, vars).await
    }

    async fn start_command(mut cmd: Command, vars: &[(&str, &str)]) -> Self {
        let port = super::free_port();
        cmd.env_clear()
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut p = Self {
            child,
            port,
            logs,
            reader: Some(reader),
        };
        super::eventually(
            Duration::from_secs(15),
            "the server to answer /health",
            || {
                let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
                let exited = p.child.try_wait().unwrap();
                // What it logged so far (its error line, normally) explains the exit.
                let logs = exited.map(|_| p.logs());
                async move {
                    if let (Some(status), Some(logs)) = (exited, logs) {
                        panic!("server exited early ({status}):\n{logs}");
                    }
                    up.then_some(())
                }
            },
        )
        .await;
        p.reader.as_ref().unwrap();
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// Sends a signal (e.g. "TERM") to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Waits (bounded) for the process to exit; returns its exit code and the full logs.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.code(), self.logs())
    }
}

/// `kill -<sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's stdout, line by line, read by a thread into a channel so that a test can wait
/// for a line with a bound. The thread reads until the child closes it (or a read fails),
/// also once the receiver is gone: a child never blocks on a full pipe.
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}
