//! The supervisor: the one long-lived process that owns every container on the node.
//!
//! Why a separate process: libcontainer forks, and forking a multi-threaded
//! process (the tokio agent) is unsafe; and containers, their log capture and their
//! exit status must outlive the agent when it crashes or is upgraded. Why one for
//! the whole node rather than a shim per container (containerd's shape): each extra
//! process costs its own private memory, and a board has little; one single-threaded
//! process with a `poll` loop captures every container's output and reaps every exit.
//!
//! The supervisor is the parent of every container's init process (libcontainer
//! creates it with `CLONE_PARENT`), so it collects exit codes with `waitpid`.
//! stdout and stderr reach it through FIFOs under its root directory. The container
//! holds its end open for reading and writing, so the pipe always has a reader: if
//! the supervisor dies, a chatty container blocks once the pipe is full instead of
//! dying of SIGPIPE, and a restarted supervisor reopens the FIFOs and carries on.
//! A container whose supervisor was restarted is no longer its child: its exit is
//! noticed by polling and its exit code is unknown (reported as 255). An upgrade
//! therefore does not restart the supervisor: the process execs the new program
//! (`Request::Upgrade`), keeping its pid, its children and its listening socket,
//! and the new program takes the containers over from the records on disk.
//!
//! It is deliberately single-threaded: libcontainer deadlocked when called from a
//! multi-threaded process (a forked helper inherited a held stdout lock).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind as IoErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::socket::{MsgFlags, send};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, mkfifo};

use crate::logs::{LogConfig, LogWriter, Stream};
use crate::protocol::{
    ContainerInfo, ContainerState, ErrorKind, MAX_LINE, Request, Response, validate_id,
};
use crate::state::{self, ExitStatus};
use crate::time::Timestamp;

/// Where the supervisor keeps its socket and state.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root directory (on tmpfs, e.g. `/run/armlet/runtime`).
    pub root: PathBuf,
    /// Log rotation settings for every container.
    pub logs: LogConfig,
    /// The program's version, reported to clients (`Hello`).
    pub version: String,
}

/// The environment variable through which an upgrading supervisor hands its
/// listening socket (a descriptor number) to the program it execs.
const LISTEN_FD_ENV: &str = "ARMLET_SUPERVISOR_LISTEN_FD";

impl Config {
    /// The control socket's path.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.root)
    }
}

/// The control socket's path under a supervisor root.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("supervisor.sock")
}

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Setting up its directory, socket or signal handling failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Another supervisor answers on the socket already.
    #[error("a supervisor is already running on {0}")]
    AlreadyRunning(PathBuf),
}

fn setup_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Setup { what, source }
}

/// The write end of the self-pipe the signal handler writes to.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
/// Set when SIGTERM or SIGINT arrived.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: i32) {
    if signal == Signal::SIGTERM as i32 || signal == Signal::SIGINT as i32 {
        STOP.store(1, Ordering::SeqCst);
    }
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the wake-up,
        // which is fine because one pending byte already wakes the loop.
        unsafe { nix::libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Installs the handlers. Signals stay unblocked and SIGPIPE stays at its default:
/// containers inherit both across libcontainer's clone, and a container with
/// SIGTERM blocked could never be stopped gracefully.
fn install_signal_handlers() -> Result<OwnedFd, SupervisorError> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| setup_err("creating the signal pipe")(e.into()))?;
    SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
    // The write end lives as long as the process.
    std::mem::forget(write);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only touches atomics and calls write(2).
        unsafe { sigaction(signal, &action) }
            .map_err(|e| setup_err(format!("installing the {signal} handler"))(e.into()))?;
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restoring the default disposition.
    unsafe { sigaction(Signal::SIGPIPE, &default) }
        .map_err(|e| setup_err("resetting SIGPIPE")(e.into()))?;
    Ok(read)
}

/// Runs the supervisor until SIGTERM or SIGINT. Containers keep running after it
/// returns; a new supervisor on the same root adopts them.
pub fn serve(config: Config) -> Result<(), SupervisorError> {
    let mut sup = Supervisor::open(config)?;
    sup.run()
}

struct Client {
    stream: UnixStream,
    buffer: Vec<u8>,
    /// Descriptors received with the client's messages, for its next Exec.
    fds: std::collections::VecDeque<OwnedFd>,
}

struct Output {
    stream: Stream,
    fifo: File,
}

struct Entry {
    info: ContainerInfo,
    /// The process start time from /proc, to tell our process from a reused pid.
    pid_start: Option<u64>,
    /// True when the process is our child (so `waitpid` will report its exit).
    is_child: bool,
    outputs: Vec<Output>,
    log: Option<LogWriter>,
    cgroup: PathBuf,
    waiters: Vec<u64>,
}

struct Supervisor {
    config: Config,
    listener: UnixListener,
    signals: OwnedFd,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
    containers: BTreeMap<String, Entry>,
    /// Exec'd processes still running: pid → the client waiting for its exit.
    execs: BTreeMap<i32, u64>,
    /// Set by an Upgrade request: exec this program once the reply is sent.
    upgrade_to: Option<PathBuf>,
}

impl Supervisor {
    fn open(config: Config) -> Result<Self, SupervisorError> {
        let root = &config.root;
        for dir in [root.clone(), root.join("containers"), root.join("state")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(setup_err(format!("creating {}", dir.display())))?;
        }
        let socket = config.socket_path();
        let listener = match inherited_listener() {
            Some(listener) => listener,
            None => {
                if UnixStream::connect(&socket).is_ok() {
                    return Err(SupervisorError::AlreadyRunning(socket));
                }
                let _ = fs::remove_file(&socket);
                UnixListener::bind(&socket)
                    .map_err(setup_err(format!("binding {}", socket.display())))?
            }
        };
        listener
            .set_nonblocking(true)
            .map_err(setup_err("making the socket non-blocking"))?;
        let signals = install_signal_handlers()?;
        let mut sup = Supervisor {
            config,
            listener,
            signals,
            clients: BTreeMap::new(),
            next_client: 0,
            containers: BTreeMap::new(),
            execs: BTreeMap::new(),
            upgrade_to: None,
        };
        sup.adopt();
        Ok(sup)
    }

    fn records_dir(&self) -> PathBuf {
        self.config.root.join("containers")
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.records_dir().join(id)
    }

    fn state_dir(&self) -> PathBuf {
        self.config.root.join("state")
    }

    /// Finds the containers an earlier supervisor left and takes them over.
    fn adopt(&mut self) {
        let _ = state::remove_leftovers(&self.records_dir());
        let Ok(dirs) = fs::read_dir(self.records_dir()) else {
            return;
        };
        for dir in dirs.flatten() {
            let record = dir.path().join("record.json");
            let _ = state::remove_leftovers(&dir.path());
            let info: ContainerInfo = match state::read_json(&record) {
                Ok(Some(info)) => info,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("supervisor: skipping {}: {e}", record.display());
                    continue;
                }
            };
            let mut entry = Entry {
                pid_start: None,
                // Until waitpid below says otherwise.
                is_child: false,
                outputs: Vec::new(),
                log: None,
                cgroup: cgroup_of(&info.bundle),
                waiters: Vec::new(),
                info,
            };
            if entry.info.state != ContainerState::Exited {
                entry.pid_start = process_start_time(entry.info.pid);
                let dir = dir.path();
                entry.outputs = open_outputs(&dir).unwrap_or_default();
                entry.log = LogWriter::open(&entry.info.log_path, self.config.logs.clone()).ok();
            }
            self.containers.insert(entry.info.id.clone(), entry);
        }
        // After an upgrade (this program exec'd by the previous one, same pid)
        // the containers are still our children: their exits, including any
        // during the exec, come from waitpid as before.
        let running: Vec<(String, i32)> = self
            .containers
            .iter()
            // A pid from a damaged record must never become waitpid(0 or -1).
            .filter(|(_, e)| e.info.state != ContainerState::Exited && e.info.pid > 0)
            .map(|(id, e)| (id.clone(), e.info.pid))
            .collect();
        for (id, pid) in running {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if let Some(e) = self.containers.get_mut(&id) {
                        e.is_child = true;
                    }
                }
                Ok(status) => self.record_exit(Pid::from_raw(pid), status),
                Err(_) => {} // not ours: a supervisor before us started it
            }
        }
        // Adopted processes that died while no supervisor watched.
        self.check_adopted();
    }

    /// Replaces this process's program with `binary`, keeping the pid (so the
    /// containers stay our children), the listening socket and the arguments.
    /// Returns only if the exec failed; the supervisor then carries on.
    fn upgrade(&mut self, binary: &Path) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        // Unfinished lines go out as partial records, which the next program's
        // records complete; then the log files are closed.
        for entry in self.containers.values_mut() {
            if let Some(log) = entry.log.as_mut() {
                let _ = log.flush_partial();
            }
            entry.log = None;
        }
        let cstring = |bytes: &[u8]| CString::new(bytes.to_vec()).ok();
        let args: Option<Vec<CString>> = std::iter::once(cstring(binary.as_os_str().as_bytes()))
            .chain(std::env::args_os().skip(1).map(|a| cstring(a.as_bytes())))
            .collect();
        let listen_fd = self.listener.as_raw_fd();
        let env: Option<Vec<CString>> = std::env::vars_os()
            .filter(|(k, _)| k != LISTEN_FD_ENV)
            .map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                cstring(&pair)
            })
            .chain(std::iter::once(cstring(
                format!("{LISTEN_FD_ENV}={listen_fd}").as_bytes(),
            )))
            .collect();
        let program = cstring(binary.as_os_str().as_bytes());
        let result = match (program, args, env) {
            (Some(program), Some(args), Some(env)) => set_cloexec(listen_fd, false)
                .and_then(|()| nix::unistd::execve(&program, &args, &env).map(|_| ())),
            _ => Err(Errno::EINVAL),
        };
        // Still here: the exec failed.
        let _ = set_cloexec(listen_fd, true);
        eprintln!(
            "supervisor: upgrading to {} failed: {}",
            binary.display(),
            result.err().unwrap_or(Errno::UnknownErrno)
        );
        for entry in self.containers.values_mut() {
            if entry.info.state != ContainerState::Exited {
                entry.log = LogWriter::open(&entry.info.log_path, self.config.logs.clone()).ok();
            }
        }
    }

    fn run(&mut self) -> Result<(), SupervisorError> {
        loop {
            if STOP.load(Ordering::SeqCst) != 0 {
                return Ok(());
            }
            let adopted = self
                .containers
                .values()
                .any(|e| !e.is_child && e.info.state != ContainerState::Exited);
            // Only processes that are not our children need polling for their exit.
            let timeout = if adopted {
                PollTimeout::from(1000u16)
            } else {
                PollTimeout::NONE
            };

            let mut kinds = Vec::new();
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            let readable = PollFlags::POLLIN;
            fds.push(PollFd::new(self.signals.as_fd(), readable));
            kinds.push(Ready::Signal);
            fds.push(PollFd::new(self.listener.as_fd(), readable));
            kinds.push(Ready::Listener);
            for (id, client) in &self.clients {
                fds.push(PollFd::new(client.stream.as_fd(), readable));
                kinds.push(Ready::Client(*id));
            }
            for (id, entry) in &self.containers {
                for (i, out) in entry.outputs.iter().enumerate() {
                    fds.push(PollFd::new(out.fifo.as_fd(), readable));
                    kinds.push(Ready::Output(id.clone(), i));
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(setup_err("poll")(e.into())),
            }
            let ready: Vec<Ready> = fds
                .iter()
                .zip(kinds)
                .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, k)| k)
                .collect();
            drop(fds);
            for event in ready {
                match event {
                    Ready::Signal => {
                        drain(self.signals.as_fd());
                        self.reap();
                    }
                    Ready::Listener => self.accept(),
                    Ready::Client(id) => self.serve_client(id),
                    Ready::Output(id, index) => self.pump(&id, index),
                }
            }
            if adopted {
                self.check_adopted();
            }
            if let Some(binary) = self.upgrade_to.take() {
                self.upgrade(&binary);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Replies are small; a client that stops reading gets dropped
                    // rather than stalling every container's log capture.
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.set_nonblocking(true);
                    self.next_client += 1;
                    self.clients.insert(
                        self.next_client,
                        Client {
                            stream,
                            buffer: Vec::new(),
                            fds: std::collections::VecDeque::new(),
                        },
                    );
                }
                Err(e) if e.kind() == IoErrorKind::WouldBlock => return,
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("supervisor: accept: {e}");
                    return;
                }
            }
        }
    }

    fn serve_client(&mut self, id: u64) {
        let mut lines = Vec::new();
        let mut closed = false;
        if let Some(client) = self.clients.get_mut(&id) {
            let mut chunk = [0u8; 8192];
            loop {
                match receive(&client.stream, &mut chunk, &mut client.fds) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => client.buffer.extend_from_slice(&chunk[..n]),
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
                // Never hoard descriptors a confused client keeps sending.
                if client.fds.len() > 16 {
                    closed = true;
                    break;
                }
            }
            while let Some(end) = client.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = client.buffer.drain(..=end).collect();
                lines.push(line);
            }
            if client.buffer.len() > MAX_LINE {
                lines.push(Vec::new());
                closed = true;
            }
        }
        for line in lines {
            let response = match serde_json::from_slice::<Request>(&line) {
                Ok(request) => self.handle(id, request),
                Err(e) => {
                    Some(error(ErrorKind::BadRequest, format!("cannot parse request: {e}")).into())
                }
            };
            if let Some(response) = response {
                self.reply(id, &response);
            }
        }
        if closed {
            self.clients.remove(&id);
        }
    }

    fn reply(&mut self, client: u64, response: &Response) {
        let Some(c) = self.clients.get(&client) else {
            return;
        };
        let mut bytes = serde_json::to_vec(response).unwrap_or_default();
        bytes.push(b'\n');
        if !send_all(&c.stream, &bytes) {
            self.clients.remove(&client);
        }
    }

    /// Answers a request; `None` when the answer comes later (Wait).
    fn handle(&mut self, client: u64, request: Request) -> Option<Response> {
        let result = match request {
            Request::Create {
                id,
                bundle,
                log_path,
                labels,
            } => self.create(&id, bundle, log_path, labels),
            Request::Start { id } => self.start(&id),
            Request::Kill { id, signal } => self.kill(&id, signal).map(|()| Response::Ok),
            Request::Wait { id } => match self.containers.get_mut(&id) {
                None => Err(not_found(&id)),
                Some(entry) if entry.info.state == ContainerState::Exited => {
                    Ok(Response::Container {
                        container: entry.info.clone(),
                    })
                }
                Some(entry) => {
                    entry.waiters.push(client);
                    return None;
                }
            },
            Request::Status { id } => self
                .containers
                .get(&id)
                .map(|e| Response::Container {
                    container: e.info.clone(),
                })
                .ok_or_else(|| not_found(&id)),
            Request::List => Ok(Response::Containers {
                containers: self.containers.values().map(|e| e.info.clone()).collect(),
            }),
            Request::Delete { id } => self.delete(&id).map(|()| Response::Ok),
            Request::Hello => Ok(Response::Supervisor {
                version: self.config.version.clone(),
                pid: std::process::id() as i32,
            }),
            Request::Upgrade { binary } => {
                let executable =
                    nix::unistd::access(&binary, nix::unistd::AccessFlags::X_OK).is_ok();
                if binary.is_absolute() && binary.is_file() && executable {
                    self.upgrade_to = Some(binary);
                    Ok(Response::Ok)
                } else {
                    Err(error(
                        ErrorKind::BadRequest,
                        format!(
                            "{} is not an absolute path to an executable file",
                            binary.display()
                        ),
                    ))
                }
            }
            Request::Exec {
                id,
                args,
                env,
                cwd,
                tty,
            } => match self.exec(client, &id, args, env, cwd, tty) {
                Ok(()) => return None,
                Err(refusal) => Err(refusal),
            },
            Request::Stats { id } => match self.containers.get(&id) {
                None => Err(not_found(&id)),
                Some(entry) if entry.info.state != ContainerState::Running => Err(error(
                    ErrorKind::InvalidState,
                    format!("container {id} is not running"),
                )),
                Some(entry) => crate::stats::read(&entry.cgroup)
                    .map(|usage| Response::Usage { usage })
                    .map_err(|e| error(ErrorKind::Failed, e.to_string())),
            },
        };
        Some(result.unwrap_or_else(Response::from))
    }

    fn create(
        &mut self,
        id: &str,
        bundle: PathBuf,
        log_path: PathBuf,
        labels: BTreeMap<String, String>,
    ) -> Result<Response, Refusal> {
        validate_id(id).map_err(|m| error(ErrorKind::BadRequest, m))?;
        // Labels are stored and sent back with every listing: keep them small.
        let label_bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        if labels.len() > 64 || label_bytes > 16 * 1024 {
            return Err(error(
                ErrorKind::BadRequest,
                format!(
                    "{} labels of {label_bytes} bytes: at most 64 labels and 16 KiB",
                    labels.len()
                ),
            ));
        }
        if self.containers.contains_key(id) {
            return Err(error(
                ErrorKind::AlreadyExists,
                format!("container {id} exists already"),
            ));
        }
        if !bundle.join("config.json").is_file() {
            return Err(error(
                ErrorKind::BadRequest,
                format!("bundle {} has no config.json", bundle.display()),
            ));
        }
        let dir = self.container_dir(id);
        let result = self.create_in(id, &dir, &bundle, &log_path, labels);
        if result.is_err() {
            // Nothing half-made stays behind: not our directory, not libcontainer's.
            let _ = fs::remove_dir_all(&dir);
            if let Ok(mut c) = Container::load(self.state_dir().join(id)) {
                let _ = c.delete(true);
            }
            let _ = fs::remove_dir_all(self.state_dir().join(id));
        }
        result
    }

    fn create_in(
        &mut self,
        id: &str,
        dir: &Path,
        bundle: &Path,
        log_path: &Path,
        labels: BTreeMap<String, String>,
    ) -> Result<Response, Refusal> {
        let failed = |what: &str, e: &dyn std::error::Error| {
            error(ErrorKind::Failed, format!("{what}: {}", chain(e)))
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(&format!("creating {}", dir.display()), &e))?;
        let log = LogWriter::open(log_path, self.config.logs.clone())
            .map_err(|e| failed("opening the log", &e))?;
        let mut container_ends = Vec::new();
        let mut outputs = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let path = dir.join(stream.as_str());
            mkfifo(&path, Mode::from_bits_truncate(0o600))
                .map_err(|e| failed("mkfifo", &io::Error::from(e)))?;
            // Our end first: opening the container's end then never blocks.
            let fifo =
                open_fifo_reader(&path).map_err(|e| failed("opening the output fifo", &e))?;
            let end = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| failed("opening the container's fifo end", &e))?;
            outputs.push(Output { stream, fifo });
            container_ends.push(OwnedFd::from(end));
        }
        let (effective, oom_score_adj) =
            prepare_bundle(bundle, dir).map_err(|e| failed("reading the bundle", &e))?;
        let stdin = File::open("/dev/null").map_err(|e| failed("opening /dev/null", &e))?;
        let stderr = container_ends.pop().expect("two ends were pushed");
        let stdout = container_ends.pop().expect("two ends were pushed");
        let builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(self.state_dir())
            .map_err(|e| failed("libcontainer root", &e))?
            .with_stdin(OwnedFd::from(stdin))
            .with_stdout(stdout)
            .with_stderr(stderr)
            .validate_id()
            .map_err(|e| failed("container id", &e))?;
        let container = builder
            .as_init(&effective)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| failed("creating the container", &e))?;
        let pid = container
            .pid()
            .ok_or_else(|| error(ErrorKind::Failed, "libcontainer reported no pid".into()))?
            .as_raw();
        // On cgroup v2 the device allowlist is an eBPF program, which libcontainer
        // (built without libbpf) does not load: attach ours while the init still
        // waits for `start`. Failing fails the create, which removes the container.
        if crate::cgroup::unified() {
            crate::devices::restrict_container(
                &effective.join("config.json"),
                pid,
                Path::new(crate::stats::CGROUP_ROOT),
            )
            .map_err(|e| failed("enforcing the device allowlist", &e))?;
        }
        if let Some(adj) = oom_score_adj {
            apply_oom_score_adj(id, pid, adj);
        }
        let info = ContainerInfo {
            id: id.to_owned(),
            state: ContainerState::Created,
            pid,
            bundle: bundle.to_path_buf(),
            log_path: log_path.to_path_buf(),
            created_at: Timestamp::now(),
            started_at: None,
            exit: None,
            labels,
            cgroup: cgroup_of(bundle),
        };
        let entry = Entry {
            pid_start: process_start_time(pid),
            is_child: true,
            outputs,
            log: Some(log),
            cgroup: info.cgroup.clone(),
            waiters: Vec::new(),
            info: info.clone(),
        };
        self.containers.insert(id.to_owned(), entry);
        self.persist(id);
        Ok(Response::Container { container: info })
    }

    fn entry(&mut self, id: &str) -> Result<&mut Entry, Refusal> {
        self.containers.get_mut(id).ok_or_else(|| not_found(id))
    }

    fn start(&mut self, id: &str) -> Result<Response, Refusal> {
        let state_dir = self.state_dir().join(id);
        let entry = self.entry(id)?;
        if entry.info.state != ContainerState::Created {
            return Err(error(
                ErrorKind::InvalidState,
                format!("container {id} is {:?}, not created", entry.info.state),
            ));
        }
        let mut container = Container::load(state_dir).map_err(|e| {
            error(
                ErrorKind::Failed,
                format!("loading container {id}: {}", chain(&e)),
            )
        })?;
        container.start().map_err(|e| {
            error(
                ErrorKind::Failed,
                format!("starting container {id}: {}", chain(&e)),
            )
        })?;
        entry.info.state = ContainerState::Running;
        entry.info.started_at = Some(Timestamp::now());
        let info = entry.info.clone();
        self.persist(id);
        // It may have exited already (a fast `true`); its SIGCHLD may be pending.
        self.reap();
        Ok(Response::Container { container: info })
    }

    fn exec(
        &mut self,
        client: u64,
        id: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        tty: bool,
    ) -> Result<(), Refusal> {
        // The descriptors came with the request: take them first, so a refused
        // request does not leave them for the next one.
        let wanted = if tty { 1 } else { 3 };
        let mut stdio = Vec::new();
        if let Some(c) = self.clients.get_mut(&client) {
            while stdio.len() < wanted {
                match c.fds.pop_front() {
                    Some(fd) => stdio.push(fd),
                    None => break,
                }
            }
        }
        if stdio.len() != wanted {
            let what = if tty {
                "exec with a tty needs one descriptor (the console socket) sent with the request"
            } else {
                "exec needs three descriptors (stdin, stdout, stderr) sent with the request"
            };
            return Err(error(ErrorKind::BadRequest, what.into()));
        }
        if args.is_empty() {
            return Err(error(ErrorKind::BadRequest, "exec needs a command".into()));
        }
        // As containerd does, the process starts from the container's own
        // environment; the request's entries add to it or override it.
        let mut environment = std::collections::HashMap::new();
        if let Some(entry) = self.containers.get(id) {
            let spec_env = oci_spec::runtime::Spec::load(entry.info.bundle.join("config.json"))
                .ok()
                .and_then(|s| s.process().as_ref().and_then(|p| p.env().clone()))
                .unwrap_or_default();
            for pair in spec_env {
                if let Some((k, v)) = pair.split_once('=') {
                    environment.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        for entry in env {
            let Some((k, v)) = entry.split_once('=') else {
                return Err(error(
                    ErrorKind::BadRequest,
                    format!("environment entry {entry:?} has no '='"),
                ));
            };
            environment.insert(k.to_owned(), v.to_owned());
        }
        let state_dir = self.state_dir();
        let entry = self.entry(id)?;
        if entry.info.state != ContainerState::Running {
            return Err(error(
                ErrorKind::InvalidState,
                format!("container {id} is not running"),
            ));
        }
        let failed = |e: &dyn std::error::Error| {
            error(ErrorKind::Failed, format!("exec in {id}: {}", chain(e)))
        };
        let builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(&state_dir)
            .map_err(|e| failed(&e))?;
        let mut stdio = stdio.into_iter();
        let (builder, console) = if tty {
            let Some(client_socket) = stdio.next() else {
                return Err(error(ErrorKind::BadRequest, "no console socket".into()));
            };
            // libcontainer links to this path from elsewhere: it must be absolute.
            let path = std::path::absolute(self.config.root.join(format!("tty-{client}.sock")))
                .map_err(|e| failed(&e))?;
            let relay = ConsoleRelay::listen(path, client_socket).map_err(|e| failed(&e))?;
            let builder = builder.with_console_socket(Some(relay.path.clone()));
            (builder, Some(relay))
        } else {
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (stdio.next(), stdio.next(), stdio.next())
            else {
                return Err(error(
                    ErrorKind::BadRequest,
                    "exec needs three descriptors".into(),
                ));
            };
            let builder = builder
                .with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr);
            (builder, None)
        };
        let built = builder
            .as_tenant()
            .with_container_args(args)
            .with_env(environment)
            .with_cwd(cwd)
            .with_detach(true)
            .build();
        // libcontainer links the console socket into the container's state
        // directory under a random name and leaves the link there.
        if console.is_some() {
            remove_console_links(&state_dir.join(id));
        }
        let pid = built.map_err(|e| failed(&e))?;
        if let Some(relay) = console {
            // The process runs (build returns after its exec), so its master
            // has been sent already: this does not block.
            if let Err(e) = relay.forward() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                eprintln!("supervisor: exec in {id}: passing on the terminal: {e}");
            }
        }
        self.execs.insert(pid.as_raw(), client);
        // A very short command may be gone already.
        self.reap();
        Ok(())
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), Refusal> {
        let state_dir = self.state_dir().join(id);
        let entry = self.entry(id)?;
        if entry.info.state == ContainerState::Exited {
            return Ok(());
        }
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|e| error(ErrorKind::BadRequest, format!("signal {signal}: {e}")))?;
        let mut container = Container::load(state_dir).map_err(|e| {
            error(
                ErrorKind::Failed,
                format!("loading container {id}: {}", chain(&e)),
            )
        })?;
        container.kill(sig, true).map_err(|e| {
            error(
                ErrorKind::Failed,
                format!("signalling container {id}: {}", chain(&e)),
            )
        })
    }

    fn delete(&mut self, id: &str) -> Result<(), Refusal> {
        let state_dir = self.state_dir().join(id);
        let entry = self.entry(id)?;
        if entry.info.state != ContainerState::Exited {
            let pid = Pid::from_raw(entry.info.pid);
            let is_child = entry.is_child;
            if let Ok(mut container) = Container::load(state_dir.clone()) {
                let _ = container.kill(
                    libcontainer::signal::Signal::try_from(9).expect("SIGKILL"),
                    true,
                );
            }
            if is_child {
                // SIGKILL cannot be caught: the exit is imminent; collect it now so
                // the status is recorded before the entry goes.
                if let Ok(status) = waitpid(pid, None) {
                    self.record_exit(pid, status);
                }
            }
        }
        if let Some(mut entry) = self.containers.remove(id) {
            drain_outputs(&mut entry);
            if let Some(log) = entry.log.take() {
                let _ = log.finish();
            }
            for waiter in std::mem::take(&mut entry.waiters) {
                let info = entry.info.clone();
                self.reply(waiter, &Response::Container { container: info });
            }
        }
        if let Ok(mut container) = Container::load(state_dir.clone()) {
            container.delete(true).map_err(|e| {
                error(
                    ErrorKind::Failed,
                    format!("deleting container {id}: {}", chain(&e)),
                )
            })?;
        }
        let _ = fs::remove_dir_all(&state_dir);
        let _ = fs::remove_dir_all(self.container_dir(id));
        Ok(())
    }

    /// Collects every child that has exited.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.record_exit(pid, status);
                    }
                }
            }
        }
    }

    fn record_exit(&mut self, pid: Pid, status: WaitStatus) {
        let (code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => {
                (ExitStatus::code_for_signal(sig as i32), Some(sig as i32))
            }
            _ => return,
        };
        if let Some(client) = self.execs.remove(&pid.as_raw()) {
            self.reply(client, &Response::Exited { exit_code: code });
            return;
        }
        let Some(id) = self
            .containers
            .iter()
            .find(|(_, e)| e.info.pid == pid.as_raw() && e.info.state != ContainerState::Exited)
            .map(|(id, _)| id.clone())
        else {
            // An orphan reparented to us, or libcontainer's helper: nothing to record.
            return;
        };
        self.finish(&id, code, signal);
    }

    fn finish(&mut self, id: &str, code: i32, signal: Option<i32>) {
        let Some(entry) = self.containers.get_mut(id) else {
            return;
        };
        let now = Timestamp::now();
        entry.info.exit = Some(ExitStatus {
            exit_code: code,
            signal,
            oom_killed: oom_kills(&entry.cgroup) > 0,
            started_at: entry.info.started_at.unwrap_or(entry.info.created_at),
            finished_at: now,
        });
        entry.info.state = ContainerState::Exited;
        // The init is gone; so are the other processes of its PID namespace, and
        // with them the fifo writers: read what they left.
        drain_outputs(entry);
        let info = entry.info.clone();
        let waiters = std::mem::take(&mut entry.waiters);
        self.persist(id);
        for waiter in waiters {
            self.reply(
                waiter,
                &Response::Container {
                    container: info.clone(),
                },
            );
        }
    }

    /// Notices the exit of adopted processes (not our children).
    fn check_adopted(&mut self) {
        let gone: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, e)| !e.is_child && e.info.state != ContainerState::Exited)
            .filter(|(_, e)| e.pid_start.is_none() || process_start_time(e.info.pid) != e.pid_start)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            eprintln!("supervisor: container {id} ended while unsupervised; exit code unknown");
            self.finish(&id, 255, None);
        }
    }

    fn pump(&mut self, id: &str, index: usize) {
        let Some(entry) = self.containers.get_mut(id) else {
            return;
        };
        if pump_one(entry, index) {
            entry.outputs.remove(index);
        }
    }

    fn persist(&self, id: &str) {
        if let Some(entry) = self.containers.get(id) {
            let path = self.container_dir(id).join("record.json");
            if let Err(e) = state::write_json(&path, &entry.info, 0o600) {
                eprintln!("supervisor: {e}");
            }
        }
    }
}

enum Ready {
    Signal,
    Listener,
    Client(u64),
    Output(String, usize),
}

/// Reads what one output has; true when it reached end of file.
fn pump_one(entry: &mut Entry, index: usize) -> bool {
    let Some(out) = entry.outputs.get_mut(index) else {
        return false;
    };
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match out.fifo.read(&mut chunk) {
            Ok(0) => {
                if let Some(log) = entry.log.as_mut() {
                    let _ = log.end_of_stream(out.stream);
                }
                return true;
            }
            Ok(n) => {
                if let Some(log) = entry.log.as_mut() {
                    if let Err(e) = log.write_chunk(out.stream, &chunk[..n]) {
                        eprintln!("supervisor: {e}");
                    }
                }
                // One chunk per wake-up keeps other containers' output flowing.
                return false;
            }
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Reads outputs until they are empty (after the container's processes ended).
fn drain_outputs(entry: &mut Entry) {
    let mut index = 0;
    while index < entry.outputs.len() {
        let mut rounds = 0;
        let mut eof = false;
        // Bounded: a process that escaped the container could keep writing.
        while rounds < 4096 {
            rounds += 1;
            let mut probe = [PollFd::new(
                entry.outputs[index].fifo.as_fd(),
                PollFlags::POLLIN,
            )];
            if !matches!(poll(&mut probe, PollTimeout::ZERO), Ok(n) if n > 0) {
                break;
            }
            if pump_one(entry, index) {
                eof = true;
                break;
            }
        }
        if eof {
            entry.outputs.remove(index);
        } else {
            index += 1;
        }
    }
}

fn open_fifo_reader(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
}

fn open_outputs(dir: &Path) -> io::Result<Vec<Output>> {
    let mut outputs = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        let path = dir.join(stream.as_str());
        if path.exists() {
            outputs.push(Output {
                stream,
                fifo: open_fifo_reader(&path)?,
            });
        }
    }
    Ok(outputs)
}

/// The listening socket a supervisor that upgraded itself left us, if any.
fn inherited_listener() -> Option<UnixListener> {
    use std::os::fd::FromRawFd;

    let fd: RawFd = std::env::var(LISTEN_FD_ENV).ok()?.parse().ok()?;
    // Only a listening Unix socket is taken; anything else means the variable
    // is stale (inherited by something the previous program started).
    // SAFETY: only borrowed for the call; an unknown number at worst makes
    // getsockopt fail with EBADF or ENOTSOCK.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let listening = nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::AcceptConn);
    if listening != Ok(true) {
        return None;
    }
    set_cloexec(fd, true).ok()?;
    // SAFETY: the descriptor was handed over to this program and nothing else
    // in it owns it; it is a listening socket (checked above).
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// Sets or clears a descriptor's close-on-exec flag.
fn set_cloexec(fd: RawFd, on: bool) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    let flags = if on {
        flags | FdFlag::FD_CLOEXEC
    } else {
        flags - FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(|_| ())
}

/// The supervisor's end of the OCI console-socket handshake for one `exec -t`:
/// libcontainer connects to `path` and the new process sends the master side of
/// its pseudo-terminal there; [`ConsoleRelay::forward`] passes it on to the
/// client's socket. The supervisor keeps no copy, so the terminal closes when the
/// process and the client are done with it.
struct ConsoleRelay {
    path: PathBuf,
    listener: UnixListener,
    client: OwnedFd,
}

impl ConsoleRelay {
    fn listen(path: PathBuf, client: OwnedFd) -> io::Result<Self> {
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            path,
            listener,
            client,
        })
    }

    /// Receives the terminal's master and sends it to the client.
    fn forward(&self) -> io::Result<()> {
        use std::io::IoSlice;

        use nix::sys::socket::{ControlMessage, sendmsg};

        // libcontainer has connected by the time the process runs, but the
        // single-threaded loop must never hang on a promise: wait 5 s at most.
        let mut ready = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut ready, PollTimeout::from(5000u16))? == 0 {
            return Err(io::Error::new(
                IoErrorKind::TimedOut,
                "the process never connected to the console socket",
            ));
        }
        let (stream, _) = self.listener.accept()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut name = [0u8; 64];
        let mut fds = std::collections::VecDeque::new();
        let stream_fd = stream.as_fd();
        loop {
            match receive_blocking(stream_fd, &mut name, &mut fds) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => break,
            }
        }
        let master = fds.pop_front().ok_or_else(|| {
            io::Error::new(
                IoErrorKind::InvalidData,
                "no terminal came with the message",
            )
        })?;
        let raw = [master.as_raw_fd()];
        sendmsg::<()>(
            self.client.as_raw_fd(),
            &[IoSlice::new(b"ptmx")],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }
}

impl Drop for ConsoleRelay {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes the console-socket links libcontainer leaves in a container's
/// state directory (`tenant-tty-<random>.sock`).
fn remove_console_links(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("tenant-tty-"))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Blocking [`receive`] on any socket descriptor.
fn receive_blocking(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut std::collections::VecDeque<OwnedFd>,
) -> Result<usize, Errno> {
    receive_with(fd, buf, fds, MsgFlags::MSG_CMSG_CLOEXEC)
}

/// Reads from a client, collecting any descriptors sent along (SCM_RIGHTS).
fn receive(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut std::collections::VecDeque<OwnedFd>,
) -> Result<usize, Errno> {
    receive_with(
        stream.as_fd(),
        buf,
        fds,
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
}

fn receive_with(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut std::collections::VecDeque<OwnedFd>,
    flags: MsgFlags,
) -> Result<usize, Errno> {
    use std::io::IoSliceMut;
    use std::os::fd::FromRawFd;

    use nix::sys::socket::{ControlMessageOwned, recvmsg};

    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    let bytes = msg.bytes;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    Ok(bytes)
}

fn drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
}

fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> bool {
    let fd: RawFd = stream.as_raw_fd();
    let mut waited = 0;
    while !bytes.is_empty() {
        match send(fd, bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if waited < 50 => {
                waited += 1;
                let mut probe = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut probe, PollTimeout::from(100u16));
            }
            Err(_) => return false,
        }
    }
    true
}

/// The bundle libcontainer should use, and the `oom_score_adj` to give the
/// container ourselves.
///
/// libcontainer writes a spec's `oom_score_adj` into `/proc/self`, i.e. into the
/// calling process, for the child to inherit: fine for a one-shot runtime CLI,
/// wrong for a long-lived supervisor (it would take on each container's score).
/// So a spec carrying one is copied into the container's directory without it, and
/// [`apply_oom_score_adj`] sets it on the container's init after creation.
fn prepare_bundle(
    bundle: &Path,
    dir: &Path,
) -> Result<(PathBuf, Option<i32>), oci_spec::OciSpecError> {
    let mut spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))?;
    let Some(mut process) = spec.process().clone() else {
        return Ok((bundle.to_path_buf(), None));
    };
    let Some(wanted) = process.oom_score_adj() else {
        return Ok((bundle.to_path_buf(), None));
    };
    // The copy lives elsewhere: a root path relative to the bundle must not break.
    spec.canonicalize_rootfs(bundle)?;
    process.set_oom_score_adj(None);
    spec.set_process(Some(process));
    spec.save(dir.join("config.json"))?;
    Ok((dir.to_path_buf(), Some(wanted)))
}

/// Sets a container init's `oom_score_adj` before its command runs. Lowering a
/// score needs CAP_SYS_RESOURCE, which some VMs withhold (k3s has
/// `restrict_oom_score_adj` for them): then the container keeps the score it
/// inherited, the lowest this host allows, rather than failing over a hint.
fn apply_oom_score_adj(id: &str, pid: i32, wanted: i32) {
    let path = format!("/proc/{pid}/oom_score_adj");
    if let Err(e) = fs::write(&path, wanted.to_string()) {
        eprintln!(
            "supervisor: {id}: cannot set oom_score_adj {wanted} ({e}); keeping the inherited score"
        );
    }
}

/// The start time of a process (field 22 of /proc/<pid>/stat), which with the
/// pid identifies it: pids are reused, start times are not.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The container's cgroup path from its bundle's config.json.
fn cgroup_of(bundle: &Path) -> PathBuf {
    oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|s| s.linux().as_ref().and_then(|l| l.cgroups_path().clone()))
        .unwrap_or_default()
}

/// How many times the kernel's OOM killer struck in a cgroup (v2 `memory.events`,
/// v1 `memory.oom_control`).
fn oom_kills(cgroup: &Path) -> u64 {
    let relative = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let candidates = [
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.events"),
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.oom_control"),
    ];
    candidates
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .find_map(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// A refused request: becomes [`Response::Error`] on the wire.
struct Refusal {
    kind: ErrorKind,
    message: String,
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Self {
        Response::Error {
            kind: r.kind,
            message: r.message,
        }
    }
}

fn error(kind: ErrorKind, message: String) -> Refusal {
    Refusal { kind, message }
}

fn not_found(id: &str) -> Refusal {
    error(ErrorKind::NotFound, format!("no container {id}"))
}

/// An error with its causes, so "failed to create container" says why.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(t));
        assert_eq!(process_start_time(i32::MAX), None);
    }

    #[test]
    fn oom_counters_are_read_from_either_cgroup_version() {
        // A cgroup that does not exist has seen no OOM kill.
        assert_eq!(oom_kills(Path::new("/armlet-test-no-such-cgroup")), 0);
    }

    #[test]
    fn error_chains_name_every_cause() {
        let inner = io::Error::other("disk on fire");
        let outer = state::StateError::Io {
            op: "write",
            path: "/x".into(),
            source: inner,
        };
        assert_eq!(chain(&outer), "write /x: disk on fire");
    }
}
