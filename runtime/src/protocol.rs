//! The supervisor's control protocol: one JSON object per line over a Unix socket.
//!
//! The agent (and the operator CLI) send a [`Request`] and read one [`Response`]
//! per request, in order. Line-delimited JSON keeps the supervisor free of any
//! RPC framework and lets a person talk to it with `socat` when debugging.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::ExitStatus;
use crate::time::Timestamp;

/// Longest request line the supervisor accepts; anything longer is a client bug.
pub const MAX_LINE: usize = 1 << 20;

/// What a client asks of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create a container from an OCI bundle (a directory holding `config.json`)
    /// whose output goes to the CRI log file `log_path`. The process is set up
    /// but does not run the command until [`Request::Start`].
    Create {
        /// Container id: letters, digits, `-`, `_`, `.`; at most 128 bytes.
        id: String,
        /// The bundle directory.
        bundle: PathBuf,
        /// The CRI log file for stdout and stderr.
        log_path: PathBuf,
        /// Who the container belongs to, kept with it and listed back, as CRI
        /// labels are (see [`LABEL_POD_UID`] and its siblings).
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Run a created container's command.
    Start {
        /// Container id.
        id: String,
    },
    /// Send a signal to a container's processes.
    Kill {
        /// Container id.
        id: String,
        /// Signal number (e.g. 15 for SIGTERM).
        signal: i32,
    },
    /// Wait until a container has exited (answered when it does).
    Wait {
        /// Container id.
        id: String,
    },
    /// One container's state.
    Status {
        /// Container id.
        id: String,
    },
    /// Every container's state.
    List,
    /// Run another process in a running container (`kubectl exec`). Without a
    /// terminal, the three file descriptors sent along with this request
    /// (SCM_RIGHTS) are its stdin, stdout and stderr. With `tty`, one descriptor
    /// comes along instead: a connected Unix socket on which the supervisor sends
    /// back the master side of the process's new pseudo-terminal (the OCI
    /// console-socket handshake), once the process runs. Answered when the
    /// process exits.
    Exec {
        /// Container id.
        id: String,
        /// Command and arguments.
        args: Vec<String>,
        /// Extra environment as `NAME=value`, on top of the container's.
        #[serde(default)]
        env: Vec<String>,
        /// Working directory; the container's when absent.
        #[serde(default)]
        cwd: Option<PathBuf>,
        /// Give the process a pseudo-terminal as its controlling terminal and
        /// stdio (`kubectl exec -t`).
        #[serde(default)]
        tty: bool,
    },
    /// A container's CPU and memory usage (from its cgroup).
    Stats {
        /// Container id.
        id: String,
    },
    /// Which supervisor answers: its version and pid.
    Hello,
    /// Replace the supervisor's program with `binary` (an upgraded `armlet`)
    /// without losing a container: the process execs itself, keeping its pid,
    /// so containers stay its children and their exit codes are still
    /// collected; the listening socket is handed over, so no client is turned
    /// away. Answered `Ok` before the exec; other connections are closed by it
    /// (a client waiting for an exit asks again).
    Upgrade {
        /// The program to exec, with the arguments the supervisor was started with.
        binary: PathBuf,
    },
    /// Remove a container: kill what still runs, remove its cgroups and state.
    /// The log file stays (the kubelet keeps logs of dead containers).
    Delete {
        /// Container id.
        id: String,
    },
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Set up, command not started.
    Created,
    /// Command running.
    Running,
    /// Process ended; see the exit status.
    Exited,
}

/// What the supervisor knows of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Current state.
    pub state: ContainerState,
    /// Process id of the container's init process on the node.
    pub pid: i32,
    /// The bundle it was created from.
    pub bundle: PathBuf,
    /// Its CRI log file.
    pub log_path: PathBuf,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its command started.
    pub started_at: Option<Timestamp>,
    /// How it ended, once it has.
    pub exit: Option<ExitStatus>,
    /// The labels it was created with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its cgroup (the spec's `cgroupsPath`); the parent is its pod's.
    #[serde(default)]
    pub cgroup: PathBuf,
}

impl ContainerInfo {
    /// The value of one of its labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Label holding the uid of the pod a container belongs to (the kubelet's and
/// containerd's key, so tools that know CRI read it the same way).
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// Label holding the pod's name.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Label holding the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label holding the container's name within its pod.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The supervisor's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Done; nothing to report.
    Ok,
    /// One container's state (answers Create, Start, Wait and Status).
    Container {
        /// The container.
        container: ContainerInfo,
    },
    /// Every container (answers List).
    Containers {
        /// The containers, sorted by id.
        containers: Vec<ContainerInfo>,
    },
    /// Who answers (answers Hello).
    Supervisor {
        /// The version string of the program running as the supervisor.
        version: String,
        /// Its process id (unchanged by an upgrade).
        pid: i32,
    },
    /// How an exec'd process ended (answers Exec).
    Exited {
        /// Exit code as a shell reports it (128 + signal when killed).
        exit_code: i32,
    },
    /// Resource usage (answers Stats).
    Usage {
        /// The container's usage.
        usage: crate::stats::Usage,
    },
    /// The request failed.
    Error {
        /// What kind of failure, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
}

/// Classes of failure a client may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No container has that id.
    NotFound,
    /// A container with that id exists already.
    AlreadyExists,
    /// The request makes no sense in the container's state (start twice...).
    InvalidState,
    /// The request itself is malformed.
    BadRequest,
    /// The kernel or libcontainer refused.
    Failed,
}

/// Checks a container id: it names directories and cgroups.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!(
            "container id must be 1 to 128 bytes, got {}",
            id.len()
        ));
    }
    if id.starts_with('.') {
        return Err(format!("container id {id:?} must not start with '.'"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!("container id {id:?} contains {c:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r = Request::Kill {
            id: "c1".into(),
            signal: 15,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"kill","id":"c1","signal":15}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::List).unwrap(),
            r#"{"op":"list"}"#
        );
        let back: Request = serde_json::from_str(r#"{"op":"start","id":"x"}"#).unwrap();
        assert_eq!(back, Request::Start { id: "x".into() });
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }

    #[test]
    fn errors_carry_a_kind() {
        let r = Response::Error {
            kind: ErrorKind::NotFound,
            message: "no container c9".into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"result":"error","kind":"not_found","message":"no container c9"}"#
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("pod-1_c.2").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("ä").is_err());
        assert!(validate_id(&"x".repeat(129)).is_err());
    }
}
