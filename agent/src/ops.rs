//! Operator commands on the node's containers, in the spirit of `crictl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use armlet_runtime::client::Client;
use armlet_runtime::logs::{CollectOptions, LogConfig, read_lines};
use armlet_runtime::protocol::{
    ContainerInfo, ContainerState, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
};
use armlet_runtime::supervisor;

/// Runs the supervisor in this process (single-threaded: nothing else runs here).
pub fn supervise(root: PathBuf, log_max_size: u64, log_max_files: usize) -> Result<()> {
    let logs = LogConfig {
        max_size: log_max_size,
        max_files: log_max_files,
        ..LogConfig::default()
    };
    logs.validate().context("log settings")?;
    supervisor::serve(supervisor::Config {
        root,
        logs,
        version: crate::VERSION.to_owned(),
    })
    .context("container supervisor")
}

/// Prints which supervisor runs (version, pid).
pub fn supervisor_status(root: &Path) -> Result<()> {
    let (version, pid) = connect(root)?.hello()?;
    println!("supervisor pid {pid}, armlet {version}");
    Ok(())
}

/// Makes the running supervisor exec `binary` (this program by default): an
/// upgrade that keeps every container and its exit status.
pub fn supervisor_upgrade(root: &Path, binary: Option<PathBuf>) -> Result<()> {
    let binary = match binary {
        Some(b) => std::path::absolute(b)?,
        None => std::env::current_exe().context("locating the armlet binary")?,
    };
    let mut client = connect(root)?;
    let (before, pid) = client.hello()?;
    client.upgrade(&binary)?;
    drop(client);
    // The old program closes every connection as it execs; the new one answers
    // on the same socket once it has adopted the containers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(&supervisor::socket_path(root)).and_then(|mut c| c.hello()) {
            Ok((after, new_pid)) if new_pid == pid => {
                // The same process answers whether or not its exec worked: what
                // it runs now tells.
                let running = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .with_context(|| format!("reading /proc/{pid}/exe"))?;
                if running != binary {
                    bail!(
                        "the supervisor still runs {} (see {} for why the exec failed)",
                        running.display(),
                        root.join("supervisor.log").display()
                    );
                }
                println!("supervisor pid {pid}: armlet {before} -> {after}");
                return Ok(());
            }
            Ok((_, new_pid)) => bail!("a different supervisor (pid {new_pid}) answers now"),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the upgraded supervisor does not answer");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn connect(root: &Path) -> Result<Client> {
    let socket = supervisor::socket_path(root);
    Client::connect(&socket).with_context(|| {
        format!(
            "cannot reach the container supervisor at {} (is armlet running?)",
            socket.display()
        )
    })
}

fn state_text(c: &ContainerInfo) -> String {
    match (&c.state, &c.exit) {
        (ContainerState::Exited, Some(exit)) => {
            format!("Exited({}) {}", exit.exit_code, exit.reason())
        }
        (state, _) => format!("{state:?}"),
    }
}

/// How `armlet run` runs a container.
pub struct RunOptions {
    /// The OCI bundle.
    pub bundle: PathBuf,
    /// The CRI log file (default under the runtime root).
    pub log: Option<PathBuf>,
    /// Delete the container after it exited.
    pub rm: bool,
    /// Do not wait for the container.
    pub detach: bool,
    /// Labels, as `key=value`.
    pub labels: Vec<String>,
}

/// Creates and starts a container from a bundle; unless detached, waits for it,
/// copies its log to stdout and stderr and returns its exit code.
pub fn run(root: &Path, id: &str, options: &RunOptions) -> Result<i32> {
    let armlet = std::env::current_exe().context("locating the armlet binary")?;
    let mut client = armlet_runtime::client::connect_or_start(&armlet, root)
        .context("starting the container supervisor")?;
    let bundle = std::path::absolute(&options.bundle)
        .with_context(|| format!("bundle {}", options.bundle.display()))?;
    let log = match &options.log {
        Some(log) => std::path::absolute(log)?,
        None => root.join("logs").join(format!("{id}.log")),
    };
    let mut labels = std::collections::BTreeMap::new();
    for pair in &options.labels {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("label {pair:?} is not key=value");
        };
        labels.insert(k.to_owned(), v.to_owned());
    }
    client.create_with_labels(id, &bundle, &log, labels)?;
    if let Err(e) = client.start(id) {
        let _ = client.delete(id);
        return Err(e.into());
    }
    if options.detach {
        println!("{id}");
        return Ok(0);
    }
    let info = match client.wait(id) {
        Ok(info) => info,
        Err(e) => {
            if options.rm {
                let _ = client.delete(id);
            }
            return Err(e.into());
        }
    };
    let collected = read_lines(&log, &CollectOptions::default())
        .with_context(|| format!("reading {}", log.display()))?;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in collected.lines {
        let sink: &mut dyn Write = match line.stream {
            armlet_runtime::logs::Stream::Stdout => &mut out,
            armlet_runtime::logs::Stream::Stderr => &mut err,
        };
        sink.write_all(&line.content)?;
        sink.write_all(b"\n")?;
    }
    out.flush()?;
    if options.rm {
        client.delete(id)?;
    }
    let exit = info
        .exit
        .with_context(|| format!("container {id} has no exit status"))?;
    Ok(exit.exit_code)
}

/// Lists containers.
pub fn ps(root: &Path, all: bool) -> Result<()> {
    let containers = connect(root)?.list()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<32} {:<16} {:<32} {:<22} {:>8}  CREATED",
        "CONTAINER", "NAME", "POD", "STATE", "PID"
    )?;
    for c in containers
        .iter()
        .filter(|c| all || c.state != ContainerState::Exited)
    {
        writeln!(
            out,
            "{:<32} {:<16} {:<32} {:<22} {:>8}  {}",
            c.id,
            c.label(LABEL_CONTAINER_NAME).unwrap_or("-"),
            pod_name(c).unwrap_or_else(|| "-".into()),
            state_text(c),
            c.pid,
            c.created_at.format_rfc3339_nano()
        )?;
    }
    Ok(())
}

/// `namespace/name` of a container's pod, from its labels.
fn pod_name(c: &ContainerInfo) -> Option<String> {
    let name = c.label(LABEL_POD_NAME)?;
    Some(match c.label(LABEL_POD_NAMESPACE) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    })
}

/// One pod as `armlet pods` shows it: its containers grouped by pod uid.
#[derive(Debug, PartialEq, Eq)]
struct PodRow {
    uid: String,
    name: String,
    running: usize,
    total: usize,
    /// The pod's cgroup: the common parent of its containers' cgroups.
    cgroup: Option<PathBuf>,
}

/// Groups containers by their pod uid label; containers without one are not
/// part of a pod (`armlet ps` still lists them).
fn pod_rows(containers: &[ContainerInfo]) -> Vec<PodRow> {
    let mut pods: std::collections::BTreeMap<&str, PodRow> = Default::default();
    for c in containers {
        let Some(uid) = c.label(LABEL_POD_UID) else {
            continue;
        };
        let row = pods.entry(uid).or_insert_with(|| PodRow {
            uid: uid.to_owned(),
            name: pod_name(c).unwrap_or_else(|| "-".into()),
            running: 0,
            total: 0,
            cgroup: c
                .cgroup
                .parent()
                .filter(|p| p.components().count() > 1)
                .map(Path::to_path_buf),
        });
        row.total += 1;
        if c.state == ContainerState::Running {
            row.running += 1;
        }
        let parent = c.cgroup.parent();
        if row.cgroup.as_deref() != parent {
            // Containers of one pod in different cgroups: no pod-level figure.
            row.cgroup = None;
        }
    }
    pods.into_values().collect()
}

/// Lists pods (containers grouped by their pod labels) with the usage of each
/// pod's cgroup.
pub fn pods(root: &Path) -> Result<()> {
    let containers = connect(root)?.list()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<38} {:<32} {:>10} {:>10} {:>12}",
        "POD UID", "POD", "CONTAINERS", "CPU (ms)", "MEMORY (KiB)"
    )?;
    for row in pod_rows(&containers) {
        let usage = row
            .cgroup
            .as_deref()
            .and_then(|cg| armlet_runtime::stats::read(cg).ok());
        let (cpu, memory) = match usage {
            Some(u) => (
                (u.cpu_usage_ns / 1_000_000).to_string(),
                (u.memory_working_set_bytes / 1024).to_string(),
            ),
            None => ("-".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<38} {:<32} {:>10} {:>10} {:>12}",
            row.uid,
            row.name,
            format!("{}/{}", row.running, row.total),
            cpu,
            memory
        )?;
    }
    Ok(())
}

/// Prints a container's log lines; with `follow`, then the lines it goes on
/// writing, across log rotations, until it has exited and its log is read to
/// the end (as the kubelet stops following a container that is not running).
/// A closed output (`| head`) ends the command quietly; so does Ctrl-C.
pub fn logs(
    root: &Path,
    id: &str,
    tail: Option<usize>,
    timestamps: bool,
    follow: bool,
) -> Result<()> {
    use armlet_runtime::logs::{FollowEvent, LogFollower, LogLine};
    use armlet_runtime::protocol::ErrorKind;
    use std::io::{ErrorKind as IoErrorKind, StdoutLock};

    /// How often a follower asks the supervisor whether the container still runs.
    const STATUS_INTERVAL: Duration = Duration::from_millis(500);

    fn print(out: &mut StdoutLock, line: &LogLine, timestamps: bool) -> std::io::Result<()> {
        if timestamps {
            write!(out, "{} ", line.timestamp.format_rfc3339_nano())?;
        }
        out.write_all(&line.content)?;
        out.write_all(b"\n")
    }

    let mut client = connect(root)?;
    let info = client.status(id)?;
    let options = CollectOptions {
        tail_lines: tail,
        since: None,
    };
    let reading = || format!("reading {}", info.log_path.display());
    let mut out = std::io::stdout().lock();
    let result = (|| -> Result<()> {
        if !follow {
            let collected = read_lines(&info.log_path, &options).with_context(reading)?;
            for line in &collected.lines {
                print(&mut out, line, timestamps)?;
            }
            return Ok(out.flush()?);
        }
        let (collected, mut follower) =
            LogFollower::collect(&info.log_path, &options).with_context(reading)?;
        for line in &collected.lines {
            print(&mut out, line, timestamps)?;
        }
        out.flush()?;
        // The supervisor reads a container's last output into the log before
        // it reports the exit: once it has, reading to the end gets it all.
        let mut exited = info.state == ContainerState::Exited;
        let mut checked = Instant::now();
        loop {
            let events = if exited {
                follower.poll()
            } else {
                follower.wait(STATUS_INTERVAL)
            }
            .with_context(reading)?;
            if events.is_empty() && exited {
                break;
            }
            for event in events {
                match event {
                    FollowEvent::Line(line) => print(&mut out, &line, timestamps)?,
                    FollowEvent::Gap(gap) => {
                        out.flush()?;
                        let _ = writeln!(std::io::stderr(), "armlet: {gap}");
                    }
                }
            }
            out.flush()?;
            if !exited && checked.elapsed() >= STATUS_INTERVAL {
                let mut status = client.status(id);
                if status.as_ref().is_err_and(|e| e.kind().is_none()) {
                    // The connection broke (a supervisor upgrade re-executes
                    // it): ask again on a new one.
                    client = connect(root)?;
                    status = client.status(id);
                }
                exited = match status {
                    Ok(info) => info.state == ContainerState::Exited,
                    // Removed meanwhile: its log is complete too.
                    Err(e) if e.kind() == Some(ErrorKind::NotFound) => true,
                    Err(e) => return Err(e.into()),
                };
                checked = Instant::now();
            }
        }
        // Lines the container never finished (it was killed mid-line).
        for line in follower.finish() {
            print(&mut out, &line, timestamps)?;
        }
        Ok(out.flush()?)
    })();
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == IoErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Runs a command in a container with this process's stdio, or on a terminal
/// relayed to this one; returns its exit code.
pub fn exec(root: &Path, id: &str, env: &[String], command: &[String], tty: bool) -> Result<i32> {
    use std::os::fd::AsFd;
    if tty {
        let exec = connect(root)?.exec_tty(id, command, env)?;
        return crate::terminal::relay(exec);
    }
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let code = connect(root)?.exec(
        id,
        command,
        env,
        [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
    )?;
    Ok(code)
}

/// Prints a running container's usage.
pub fn stats(root: &Path, id: &str) -> Result<()> {
    let usage = connect(root)?.stats(id)?;
    println!(
        "{:<40} {:>14} {:>14}",
        "CONTAINER", "CPU (ms)", "MEMORY (KiB)"
    );
    println!(
        "{:<40} {:>14} {:>14}",
        id,
        usage.cpu_usage_ns / 1_000_000,
        usage.memory_working_set_bytes / 1024
    );
    Ok(())
}

/// SIGTERM, then SIGKILL when the container outlives `timeout` seconds.
pub fn stop(root: &Path, id: &str, timeout: u64) -> Result<()> {
    let mut client = connect(root)?;
    client.kill(id, 15)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < deadline {
        if client.status(id)?.state == ContainerState::Exited {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    client.kill(id, 9)?;
    let info = client.wait(id)?;
    if info.state != ContainerState::Exited {
        bail!("container {id} did not stop");
    }
    Ok(())
}

/// Removes containers.
pub fn rm(root: &Path, ids: &[String]) -> Result<()> {
    let mut client = connect(root)?;
    let mut failed = 0;
    for id in ids {
        match client.delete(id) {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("armlet: {id}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers could not be removed", ids.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use armlet_runtime::time::Timestamp;

    fn container(
        id: &str,
        pod: Option<(&str, &str)>,
        cgroup: &str,
        running: bool,
    ) -> ContainerInfo {
        let mut labels = std::collections::BTreeMap::new();
        if let Some((uid, name)) = pod {
            labels.insert(LABEL_POD_UID.to_owned(), uid.to_owned());
            labels.insert(LABEL_POD_NAME.to_owned(), name.to_owned());
            labels.insert(LABEL_POD_NAMESPACE.to_owned(), "default".to_owned());
        }
        ContainerInfo {
            id: id.into(),
            state: if running {
                ContainerState::Running
            } else {
                ContainerState::Exited
            },
            pid: 1,
            bundle: "/b".into(),
            log_path: "/l".into(),
            created_at: Timestamp::now(),
            started_at: None,
            exit: None,
            labels,
            cgroup: cgroup.into(),
        }
    }

    #[test]
    fn containers_are_grouped_into_pods_with_their_common_cgroup() {
        let rows = pod_rows(&[
            container("a1", Some(("u-a", "web")), "/kubepods/pod-a/a1", true),
            container("a2", Some(("u-a", "web")), "/kubepods/pod-a/a2", false),
            container("b1", Some(("u-b", "db")), "/kubepods/pod-b/b1", true),
            container("b2", Some(("u-b", "db")), "/elsewhere/b2", true),
            container("loose", None, "/x/loose", true),
            container("top", Some(("u-c", "flat")), "/c1", true),
        ]);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            PodRow {
                uid: "u-a".into(),
                name: "default/web".into(),
                running: 1,
                total: 2,
                cgroup: Some("/kubepods/pod-a".into()),
            }
        );
        // Split across cgroups: no pod figure rather than a wrong one.
        assert_eq!(
            (rows[1].running, rows[1].total, &rows[1].cgroup),
            (2, 2, &None)
        );
        // A container right under the root has no pod cgroup (never the root's).
        assert_eq!(rows[2].cgroup, None);
    }
}
