//! A blocking client for the supervisor's control socket.

use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use std::path::{Path, PathBuf};

use crate::protocol::{ContainerInfo, ErrorKind, Request, Response};

/// Why a request to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached or the connection broke.
    #[error("supervisor at {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The supervisor answered something this client cannot read.
    #[error("supervisor sent an unreadable answer: {0}")]
    Protocol(String),
    /// The supervisor refused the request.
    #[error("{message}")]
    Refused {
        /// What kind of failure.
        kind: ErrorKind,
        /// The supervisor's explanation.
        message: String,
    },
}

impl ClientError {
    /// The kind of refusal, if the supervisor refused.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Connects to the supervisor on `root`, starting one (`<armlet> --runtime-root
/// <root> supervise`) when none answers. The supervisor runs in its own session,
/// detached from the caller, so it outlives an agent that dies or is upgraded; its
/// own messages go to `<root>/supervisor.log`.
///
/// Starting it is a fork and an immediate exec (`std::process::Command`), which
/// is safe from a multi-threaded process; libcontainer's forks happen only in the
/// single-threaded supervisor.
pub fn connect_or_start(armlet: &Path, root: &Path) -> Result<Client, ClientError> {
    let socket = crate::supervisor::socket_path(root);
    if let Ok(client) = Client::connect(&socket) {
        return Ok(client);
    }
    let io = |source| ClientError::Io {
        path: socket.clone(),
        source,
    };
    std::fs::create_dir_all(root).map_err(io)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("supervisor.log"))
        .map_err(io)?;
    let mut command = std::process::Command::new(armlet);
    command
        .arg("--runtime-root")
        .arg(root)
        .arg("supervise")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io)?)
        .stderr(log);
    // A new session: no terminal, no signals meant for the caller's group.
    // SAFETY: setsid(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::unistd::setsid().map(|_| ()).map_err(io::Error::from)
        });
    }
    let mut child = command.spawn().map_err(io)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Client::connect(&socket) {
            Ok(client) => return Ok(client),
            Err(e) => {
                // A supervisor that exited at once (bad root, another one won the
                // race and holds the socket...) says why in its log.
                if let Ok(Some(status)) = child.try_wait() {
                    if let Ok(client) = Client::connect(&socket) {
                        return Ok(client);
                    }
                    return Err(io(io::Error::other(format!(
                        "supervisor exited ({status}); see {}",
                        root.join("supervisor.log").display()
                    ))));
                }
                if std::time::Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// One connection to the supervisor.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the supervisor's socket.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io {
            path: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Self {
            path: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and reads its answer.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.call_with_fds(request, &[])
    }

    /// Sends one request with file descriptors attached (SCM_RIGHTS) and reads
    /// its answer.
    fn call_with_fds(&mut self, request: &Request, fds: &[RawFd]) -> Result<Response, ClientError> {
        self.send(request, fds)?;
        self.read_response()
    }

    /// Sends one request, with descriptors attached when there are any.
    fn send(&mut self, request: &Request, fds: &[RawFd]) -> Result<(), ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line =
            serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        if fds.is_empty() {
            self.writer.write_all(&line).map_err(io)?;
        } else {
            // The descriptors travel with the first byte of the request, so the
            // supervisor has them in hand when it parses the line.
            let rights = [ControlMessage::ScmRights(fds)];
            let sent = sendmsg::<()>(
                self.writer.as_raw_fd(),
                &[IoSlice::new(&line[..1])],
                &rights,
                MsgFlags::empty(),
                None,
            )
            .map_err(|e| io(e.into()))?;
            if sent != 1 {
                return Err(io(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "request not sent",
                )));
            }
            self.writer.write_all(&line[1..]).map_err(io)?;
        }
        Ok(())
    }

    /// Reads the answer to the oldest request not yet answered.
    fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Io {
                path: self.path.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "supervisor closed the connection",
                ),
            });
        }
        match serde_json::from_str(&answer) {
            Ok(Response::Error { kind, message }) => Err(ClientError::Refused { kind, message }),
            Ok(response) => Ok(response),
            Err(e) => Err(ClientError::Protocol(format!("{e}: {}", answer.trim_end()))),
        }
    }

    fn container(&mut self, request: &Request) -> Result<ContainerInfo, ClientError> {
        match self.call(request)? {
            Response::Container { container } => Ok(container),
            other => Err(ClientError::Protocol(format!(
                "expected a container, got {other:?}"
            ))),
        }
    }

    fn ok(&mut self, request: &Request) -> Result<(), ClientError> {
        match self.call(request)? {
            Response::Ok => Ok(()),
            other => Err(ClientError::Protocol(format!("expected ok, got {other:?}"))),
        }
    }

    /// Creates a container from a bundle; its output goes to `log_path`.
    pub fn create(
        &mut self,
        id: &str,
        bundle: &Path,
        log_path: &Path,
    ) -> Result<ContainerInfo, ClientError> {
        self.create_with_labels(id, bundle, log_path, Default::default())
    }

    /// [`create`](Self::create) with labels saying whom the container belongs
    /// to (pod uid, name and namespace, container name).
    pub fn create_with_labels(
        &mut self,
        id: &str,
        bundle: &Path,
        log_path: &Path,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<ContainerInfo, ClientError> {
        self.container(&Request::Create {
            id: id.to_owned(),
            bundle: bundle.to_path_buf(),
            log_path: log_path.to_path_buf(),
            labels,
        })
    }

    /// Starts a created container.
    pub fn start(&mut self, id: &str) -> Result<ContainerInfo, ClientError> {
        self.container(&Request::Start { id: id.to_owned() })
    }

    /// Signals a container's processes.
    pub fn kill(&mut self, id: &str, signal: i32) -> Result<(), ClientError> {
        self.ok(&Request::Kill {
            id: id.to_owned(),
            signal,
        })
    }

    /// Blocks until the container has exited.
    pub fn wait(&mut self, id: &str) -> Result<ContainerInfo, ClientError> {
        self.container(&Request::Wait { id: id.to_owned() })
    }

    /// One container's state.
    pub fn status(&mut self, id: &str) -> Result<ContainerInfo, ClientError> {
        self.container(&Request::Status { id: id.to_owned() })
    }

    /// Every container.
    pub fn list(&mut self) -> Result<Vec<ContainerInfo>, ClientError> {
        match self.call(&Request::List)? {
            Response::Containers { containers } => Ok(containers),
            other => Err(ClientError::Protocol(format!(
                "expected containers, got {other:?}"
            ))),
        }
    }

    /// Runs a process in a running container with the given stdin, stdout and
    /// stderr, and waits for it: returns its exit code.
    pub fn exec(
        &mut self,
        id: &str,
        args: &[String],
        env: &[String],
        stdio: [BorrowedFd<'_>; 3],
    ) -> Result<i32, ClientError> {
        let request = Request::Exec {
            id: id.to_owned(),
            args: args.to_vec(),
            env: env.to_vec(),
            cwd: None,
            tty: false,
        };
        let fds = stdio.map(|fd| fd.as_raw_fd());
        match self.call_with_fds(&request, &fds)? {
            Response::Exited { exit_code } => Ok(exit_code),
            other => Err(ClientError::Protocol(format!(
                "expected an exit, got {other:?}"
            ))),
        }
    }

    /// Starts a process in a running container on a new pseudo-terminal
    /// (`kubectl exec -t`). Returns once it runs, with the terminal's master
    /// side: write its input there, read its output from there, resize it with
    /// `TIOCSWINSZ`. [`TtyExec::wait`] then gives its exit code.
    pub fn exec_tty(
        mut self,
        id: &str,
        args: &[String],
        env: &[String],
    ) -> Result<TtyExec, ClientError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

        let path = self.path.clone();
        let io = |source: io::Error| ClientError::Io {
            path: path.clone(),
            source,
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| io(e.into()))?;
        let request = Request::Exec {
            id: id.to_owned(),
            args: args.to_vec(),
            env: env.to_vec(),
            cwd: None,
            tty: true,
        };
        self.send(&request, &[theirs.as_raw_fd()])?;
        // Only the supervisor holds the other end now: if it refuses the
        // request, it drops that end and the read below sees end of file.
        drop(theirs);
        match receive_fd(ours.as_fd()).map_err(io)? {
            Some(master) => Ok(TtyExec {
                client: self,
                master,
            }),
            None => match self.read_response()? {
                Response::Exited { .. } => Err(ClientError::Protocol(
                    "the process exited without a terminal".into(),
                )),
                other => Err(ClientError::Protocol(format!(
                    "expected a terminal, got {other:?}"
                ))),
            },
        }
    }

    /// A running container's CPU and memory usage.
    pub fn stats(&mut self, id: &str) -> Result<crate::stats::Usage, ClientError> {
        match self.call(&Request::Stats { id: id.to_owned() })? {
            Response::Usage { usage } => Ok(usage),
            other => Err(ClientError::Protocol(format!(
                "expected usage, got {other:?}"
            ))),
        }
    }

    /// The supervisor's version and pid.
    pub fn hello(&mut self) -> Result<(String, i32), ClientError> {
        match self.call(&Request::Hello)? {
            Response::Supervisor { version, pid } => Ok((version, pid)),
            other => Err(ClientError::Protocol(format!(
                "expected the supervisor's version, got {other:?}"
            ))),
        }
    }

    /// Asks the supervisor to exec `binary` in its place (see
    /// [`Request::Upgrade`]); this connection is closed by the exec.
    pub fn upgrade(&mut self, binary: &Path) -> Result<(), ClientError> {
        self.ok(&Request::Upgrade {
            binary: binary.to_path_buf(),
        })
    }

    /// Removes a container (killing it if it still runs).
    pub fn delete(&mut self, id: &str) -> Result<(), ClientError> {
        self.ok(&Request::Delete { id: id.to_owned() })
    }
}

/// A process started by [`Client::exec_tty`].
pub struct TtyExec {
    client: Client,
    master: OwnedFd,
}

impl TtyExec {
    /// The master side of the process's terminal.
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// Waits for the process to exit and returns its exit code (128 + signal
    /// when killed). Output still unread on the terminal stays readable from
    /// the master until it is dropped.
    pub fn wait(&mut self) -> Result<i32, ClientError> {
        match self.client.read_response()? {
            Response::Exited { exit_code } => Ok(exit_code),
            other => Err(ClientError::Protocol(format!(
                "expected an exit, got {other:?}"
            ))),
        }
    }

    /// The control connection, whose next answer is the exit: poll it for
    /// readability to learn that the process has ended.
    pub fn control(&self) -> BorrowedFd<'_> {
        self.client.reader.get_ref().as_fd()
    }
}

/// Receives one descriptor sent with SCM_RIGHTS; `None` at end of file.
fn receive_fd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    use std::io::IoSliceMut;
    use std::os::fd::FromRawFd;

    use nix::sys::socket::{ControlMessageOwned, recvmsg};

    let mut buf = [0u8; 16];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other?,
        };
        let mut received = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    received.get_or_insert(fd);
                }
            }
        }
        if received.is_some() || msg.bytes == 0 {
            return Ok(received);
        }
    }
}
