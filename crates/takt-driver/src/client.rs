//! The server's side of a supervisor: find it on its socket, or start it (detached, in its own
//! process group, so that it outlives the server), and send it requests.

use crate::DriverError;
use crate::protocol::{Request, Response, Status};
use crate::supervisor::socket_path;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How to reach (or start) one environment's supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorClient {
    /// The supervisor's directory (socket, log, instance logs).
    pub dir: PathBuf,
    /// The program started as `PROGRAM supervise --dir DIR [--port PORT]` (the takt binary).
    pub program: PathBuf,
    /// The public port (`None`: no proxy).
    pub port: Option<u16>,
}

impl SupervisorClient {
    /// Sends a request, starting the supervisor first if none answers.
    pub async fn request(&self, req: &Request) -> Result<Status, DriverError> {
        let stream = match UnixStream::connect(socket_path(&self.dir)).await {
            Ok(s) => s,
            Err(_) => self.start().await?,
        };
        let resp = exchange(stream, req).await?;
        match (resp.ok, resp.status) {
            (true, Some(s)) => Ok(s),
            (true, None) => Ok(Status::default()),
            (false, _) => Err(DriverError::Failed(
                resp.error
                    .unwrap_or_else(|| "the supervisor refused without saying why".into()),
            )),
        }
    }

    /// The status, if a supervisor answers (never starts one).
    pub async fn status(&self) -> Option<Status> {
        let stream = UnixStream::connect(socket_path(&self.dir)).await.ok()?;
        exchange(stream, &Request::Status).await.ok()?.status
    }

    /// Waits until the supervisor that answers now goes away (its socket closes: it exited or
    /// died); returns at once if none answers. Holds one idle connection: no polling.
    pub async fn gone(&self) {
        use tokio::io::AsyncReadExt;
        if let Ok(mut stream) = UnixStream::connect(socket_path(&self.dir)).await {
            let mut buf = [0u8; 64];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    }

    /// Stops the supervisor and everything it runs, if one answers.
    pub async fn shutdown(&self) {
        if let Ok(stream) = UnixStream::connect(socket_path(&self.dir)).await {
            let _ = exchange(stream, &Request::Shutdown).await;
        }
    }

    async fn start(&self) -> Result<UnixStream, DriverError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| DriverError::Io(format!("{}: {e}", self.dir.display())))?;
        let log_path = self.dir.join("supervisor.log");
        let io = |e: std::io::Error| DriverError::Io(format!("{}: {e}", log_path.display()));
        let log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .await
            .map_err(io)?
            .into_std()
            .await;
        let err = log.try_clone().map_err(io)?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("supervise").arg("--dir").arg(&self.dir);
        if let Some(p) = self.port {
            cmd.arg("--port").arg(p.to_string());
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| DriverError::Io(format!("cannot start {} supervise: {e}", self.program.display())))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = UnixStream::connect(socket_path(&self.dir)).await {
                // Reaped in the background when it ends (it outlives this request).
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Ok(s);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = tokio::fs::read_to_string(&log_path).await.unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(DriverError::Failed(format!(
                    "the supervisor exited ({status}) before answering: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(DriverError::Failed(format!(
                    "the supervisor did not answer on {} within 10 s",
                    socket_path(&self.dir).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn exchange(stream: UnixStream, req: &Request) -> Result<Response, DriverError> {
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| DriverError::Failed(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .map_err(|e| DriverError::Io(format!("supervisor socket: {e}")))?;
    let mut answer = String::new();
    BufReader::new(r)
        .read_line(&mut answer)
        .await
        .map_err(|e| DriverError::Io(format!("supervisor socket: {e}")))?;
    serde_json::from_str(&answer).map_err(|e| DriverError::Failed(format!("the supervisor's answer: {e}")))
}
