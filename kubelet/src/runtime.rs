//! The container supervisor, reached from async code.
//!
//! The supervisor's client is blocking (one JSON line per request over a Unix
//! socket), so every call runs on tokio's blocking pool with a connection of
//! its own: calls from different pod workers never wait on one another, and a
//! supervisor that was restarted or upgraded is simply dialled again.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use armlet_pods::probes::{BoxFuture, ExecProber, ExecResult};
use armlet_runtime::client::{Client, ClientError, connect_or_start};
use armlet_runtime::protocol::ContainerInfo;

/// Most output of an exec probe or hook kept for messages (the kubelet's
/// `maxProbeOutputLength`, 10 KiB); the rest is read and dropped so the
/// process never blocks on a full pipe.
const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The supervisor answered with an error or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The blocking task did not finish (the agent is shutting down).
    #[error("runtime call abandoned: {0}")]
    Abandoned(String),
    /// A pipe for an exec's output could not be made.
    #[error("exec output pipe: {0}")]
    Pipe(std::io::Error),
}

impl RuntimeError {
    /// The supervisor said there is no such container.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Client(c) if c.kind() == Some(armlet_runtime::protocol::ErrorKind::NotFound))
    }
}

/// Where the supervisor lives and how to start it.
#[derive(Debug, Clone)]
pub struct Runtime {
    armlet: PathBuf,
    root: PathBuf,
}

impl Runtime {
    /// The supervisor under `root`, started from the `armlet` program when none
    /// answers.
    pub fn new(armlet: &Path, root: &Path) -> Self {
        Self {
            armlet: armlet.to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    /// The supervisor's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `f` with a fresh connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, ClientError> + Send + 'static,
    {
        let (armlet, root) = (self.armlet.clone(), self.root.clone());
        tokio::task::spawn_blocking(move || {
            let mut client = connect_or_start(&armlet, &root)?;
            f(&mut client)
        })
        .await
        .map_err(|e| RuntimeError::Abandoned(e.to_string()))?
        .map_err(RuntimeError::from)
    }

    /// Every container the supervisor knows.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.call(|c| c.list()).await
    }

    /// Sends `signal` to a container; a container already gone is no error.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let id = id.to_owned();
        match self.call(move |c| c.kill(&id, signal)).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Removes a container (its log file stays); already gone is no error.
    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_owned();
        match self.call(move |c| c.delete(&id)).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Runs `command` in a running container without a terminal, stdin empty,
    /// and returns its exit code and (bounded) combined output.
    pub async fn exec_capture(
        &self,
        id: &str,
        command: &[String],
    ) -> Result<ExecResult, RuntimeError> {
        let (reader, writer) = nix::unistd::pipe().map_err(|e| RuntimeError::Pipe(e.into()))?;
        let null = std::fs::File::open("/dev/null").map_err(RuntimeError::Pipe)?;
        let drain = std::thread::spawn(move || read_bounded(reader));
        let (id, command) = (id.to_owned(), command.to_vec());
        let code = self
            .call(move |c| {
                let out = writer.as_fd();
                let result = c.exec(&id, &command, &[], [null.as_fd(), out, out]);
                // The supervisor holds its own copies; ours must close for the
                // reader to see the end.
                drop(writer);
                result
            })
            .await;
        let output = drain.join().unwrap_or_default();
        Ok(ExecResult {
            exit_code: code?,
            output,
        })
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_EXEC_OUTPUT`] bytes.
fn read_bounded(reader: OwnedFd) -> Vec<u8> {
    let mut file = std::fs::File::from(reader);
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl ExecProber for Runtime {
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        command: &'a [String],
    ) -> BoxFuture<'a, Result<ExecResult, String>> {
        Box::pin(async move {
            self.exec_capture(container_id, command)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
