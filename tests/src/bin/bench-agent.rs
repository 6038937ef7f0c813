//! `bench-agent`: the node agent against the goals, measured end to
//! end: `armlet agent` in a network namespace of its own (as the end-to-end
//! tests run it, [`AgentNode`]), the release devserver and a real registry
//! (Debian's docker-registry) on the host end of its veth.
//!
//! Run by `cargo xtask bench agent` (as root), in this order:
//!
//! - binary size: the release aarch64 binary, stripped (the release profile
//!   strips; a copy is stripped with `aarch64-linux-gnu-strip` if it did not);
//! - agent start → Node Ready, with the server up, from spawn to the first
//!   watch event on the Node showing `Ready=True`:
//!   - fresh data dir: a first join (the node password's scrypt on the
//!     server included), each run in a new network namespace with a new
//!     devserver (started before the clock starts), [`START_RUNS`] runs;
//!   - restart: the same node stopped (SIGTERM) and started again on its
//!     data dir, [`START_RUNS`] runs. Its Node still says `Ready=True` from
//!     the last run, so before each start the driver sets `Ready=Unknown`
//!     as the node lifecycle controller does for a node that stopped
//!     posting status: the clock stops at the first `Ready=True` written by
//!     the new agent;
//! - pod created → Running (and → Ready) through a watch, image cached (a
//!   warm-up pod pulls it first): `--runs` pods (default 100) created one at a
//!   time, each bound with `spec.nodeName` (no scheduler), each measured from
//!   its POST to the watch event with `status.phase == Running` (and the
//!   Ready condition True) before the next is created; they stay (so the
//!   last ones run beside 99 others), then are deleted one at a time, each
//!   timed from its DELETE to its `DELETED` event. The container is busybox
//!   `sleep` under a shell that exits on SIGTERM (a bare `sleep` as PID 1
//!   ignores SIGTERM, which would time the grace period rather than the
//!   agent). The clock starts when curl sent the request (from curl's own
//!   timings), not at its response: the devserver's answers on a fresh
//!   connection often come ~40 ms late (a small write held back until the
//!   client's delayed ACK: Nagle's algorithm), long after the pod exists
//!   and often after it runs; how late is printed too;
//! - memory: PSS (and RSS) of every armlet process of the node (the agent
//!   and its container supervisor, found by their command lines; not the
//!   containers) from `/proc/<pid>/smaps_rollup`, idle, with 1, 10 and all
//!   pods running idle, and after they were all deleted.
//!
//! The agent runs with its default intervals (no `--lease-interval`), as on
//! a board. `ARMLET_BENCH_LOG=<file>` keeps a copy of the measured agent's
//! log (`ARMLET_LOG=debug`, timestamped) for a look at where the time goes.
//!
//! Timings are printed, not judged: the goals are reported as met or not.

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead as _, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use armlet_tests::agent_node::AgentNode;
use armlet_tests::bench::{BenchArgs, Stats};
use armlet_tests::devserver::{self, Devserver};
use armlet_tests::node::{TempDir, require_root};
use armlet_tests::{AARCH64, release_binary};
use serde_json::{Value, json};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const USAGE: &str =
    "usage: bench-agent --armlet <release armlet binary for this host> [--runs PODS]
(the devserver from ARMLET_DEVSERVER, the aarch64 binary from ARMLET_BIN_AARCH64)";

/// Pods timed unless `--runs` says otherwise (the issue asks for 100).
const DEFAULT_PODS: usize = 100;
/// Agent starts per kind (fresh data dir, restart).
const START_RUNS: usize = 5;
/// Pod counts at which the memory is read (and after all are deleted).
const MEMORY_AT: [usize; 2] = [1, 10];
/// How long the node is left alone before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

/// The goals.
const POD_P99_GOAL_MS: f64 = 500.0;
const PSS_1_GOAL_MIB: f64 = 16.0;
const PSS_10_GOAL_MIB: f64 = 24.0;
const SIZE_GOAL_MIB: f64 = 12.0;
const READY_GOAL_MS: f64 = 1000.0;
/// The peers' figures, quoted (neither runs here).
const K8S_POD_SLO: &str = "5 s (Kubernetes SLO)";
const K3S_AGENT_PSS: &str = "178 MiB (k3s agent, issue)";

const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
const POD_TIMEOUT: Duration = Duration::from_secs(60);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = BenchArgs::parse(std::env::args().skip(1), USAGE, DEFAULT_PODS)?;
    require_root();
    // AgentNode runs the binary `ARMLET_BIN_HOST` names.
    // SAFETY: nothing else runs yet: the driver is still single-threaded.
    unsafe { std::env::set_var("ARMLET_BIN_HOST", &args.binary) };
    let server_bin = devserver::binary();
    let aarch64 = release_binary(&AARCH64);
    println!("armlet (host) {}", args.binary.display());
    println!("armlet-devserver {}", server_bin.display());

    let size = stripped_size(&aarch64)?;
    println!(
        "\naarch64 release binary, stripped: {:.2} MiB ({} bytes{})",
        size.bytes as f64 / MIB,
        size.bytes,
        if size.stripped_here {
            ", stripped here with aarch64-linux-gnu-strip"
        } else {
            ", as built"
        }
    );

    let scratch = TempDir::new("bench-agent");
    let fresh = fresh_starts(scratch.path());
    let main = main_node(scratch.path(), args.runs);

    print_starts(&fresh, &main.restarts);
    print_pods(&main, args.runs);
    print_memory(&main.memory);
    print_summary(size, &fresh, &main, args.runs);
    Ok(())
}

const MIB: f64 = (1u64 << 20) as f64;

// ---------------------------------------------------------------------------
// Binary size

#[derive(Clone, Copy)]
struct Size {
    bytes: u64,
    stripped_here: bool,
}

/// The size of `bin` stripped: as it is when `file` says it is stripped,
/// else of a copy stripped with binutils.
fn stripped_size(bin: &Path) -> Result<Size> {
    let out = Command::new("file").arg("-b").arg(bin).output()?;
    let what = String::from_utf8_lossy(&out.stdout);
    if what.contains(", stripped") {
        return Ok(Size {
            bytes: std::fs::metadata(bin)?.len(),
            stripped_here: false,
        });
    }
    let copy = std::env::temp_dir().join(format!("armlet-bench-stripped-{}", std::process::id()));
    let status = Command::new("aarch64-linux-gnu-strip")
        .arg("-o")
        .arg(&copy)
        .arg(bin)
        .status()?;
    let bytes = std::fs::metadata(&copy).map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    if !status.success() {
        return Err(format!("aarch64-linux-gnu-strip {}: {status}", bin.display()).into());
    }
    Ok(Size {
        bytes: bytes?,
        stripped_here: true,
    })
}

// ---------------------------------------------------------------------------
// Watches

enum Line {
    /// The response's headers are in: the watch is established.
    Connected(u16),
    /// One event, stamped when its line arrived.
    Event(Instant, Value),
    /// curl exited.
    Ended,
}

/// A watch as the admin: `curl -N` with its events read line by line on a
/// thread, each stamped on arrival. curl is killed when this is dropped.
struct Watch {
    child: Child,
    rx: Receiver<Line>,
    what: String,
}

impl Watch {
    /// Opens the watch `path` (`/api/v1/nodes?watch=true...`) and returns
    /// once the server has answered it.
    fn start(server: &Devserver, path: &str) -> Self {
        let (cert, key) = server.admin_credentials();
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-D", "-", "--cacert"])
            .arg(server.server_ca())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("{}{path}", server.url))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || read_watch(stdout, &tx));
        let watch = Self {
            child,
            rx,
            what: path.to_owned(),
        };
        match watch.rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Line::Connected(200)) => watch,
            Ok(Line::Connected(status)) => panic!("watch {path}: HTTP {status}"),
            _ => panic!("watch {path}: no answer from the devserver within 10 s"),
        }
    }

    /// The next event before `deadline`; `None` when there is none by then.
    /// Panics if the watch ended (the devserver closed it or died).
    fn next(&self, deadline: Instant) -> Option<(Instant, Value)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Line::Event(at, event)) => Some((at, event)),
            Ok(Line::Connected(_)) => self.next(deadline),
            Ok(Line::Ended) | Err(RecvTimeoutError::Disconnected) => {
                panic!("the watch {} ended", self.what)
            }
            Err(RecvTimeoutError::Timeout) => None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a watch's response from curl (`-D -`: headers first), sending
/// what comes to `tx` until curl ends or nobody listens any more.
fn read_watch(stdout: std::process::ChildStdout, tx: &std::sync::mpsc::Sender<Line>) {
    let mut headers = true;
    let mut status = 0;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let at = Instant::now();
        if headers {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("HTTP/") {
                status = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if line.is_empty() {
                headers = false;
                if tx.send(Line::Connected(status)).is_err() {
                    return;
                }
            }
            continue;
        }
        if let Ok(event) = serde_json::from_str(&line) {
            if tx.send(Line::Event(at, event)).is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Line::Ended);
}

fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

fn ready_condition(object: &Value) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c.to_string())
        .unwrap_or_else(|| "no Ready condition".into())
}

// ---------------------------------------------------------------------------
// Agent start → Node Ready

/// One start: when the agent first wrote the Node, and when the Node was
/// first seen Ready (both from spawn).
#[derive(Clone, Copy)]
struct Start {
    first_write: Duration,
    ready: Duration,
}

fn node_watch(server: &Devserver, name: &str) -> Watch {
    Watch::start(
        server,
        &format!("/api/v1/nodes?watch=true&fieldSelector=metadata.name%3D{name}"),
    )
}

/// Spawns `command` on `node` and follows its Node on `watch` until it is
/// Ready; events carrying `old_version` (the Node as it was before the
/// start) are not the agent's writes.
fn time_start(node: &mut AgentNode, command: Command, watch: &Watch, old_version: &str) -> Start {
    let spawned = Instant::now();
    node.start(command);
    let deadline = spawned + NODE_READY_TIMEOUT;
    let mut first_write = None;
    let mut last = Value::Null;
    loop {
        let Some((at, event)) = watch.next(deadline) else {
            panic!(
                "node {} not Ready {} s after the agent's start; last seen: {}",
                node.name,
                NODE_READY_TIMEOUT.as_secs(),
                ready_condition(&last)
            );
        };
        let object = &event["object"];
        if object["metadata"]["resourceVersion"].as_str() == Some(old_version) {
            continue;
        }
        let since = at.saturating_duration_since(spawned);
        first_write.get_or_insert(since);
        if condition_true(object, "Ready") {
            return Start {
                first_write: first_write.unwrap_or(since),
                ready: since,
            };
        }
        last = object.clone();
    }
}

/// [`START_RUNS`] first joins, each on a new node (network namespace, data
/// dir) against a new devserver.
fn fresh_starts(scratch: &Path) -> Vec<Start> {
    let mut starts = Vec::new();
    for i in 0..START_RUNS {
        let dir = scratch.join(format!("fresh-{i}"));
        let mut node = AgentNode::new(&dir.join("node"), &format!("bench-fresh-{i}"));
        let server =
            Devserver::start_on(&dir.join("server"), IpAddr::V4(node.netns.host_ip), 0, &[]);
        let watch = node_watch(&server, &node.name);
        let command = node.command(&server.url, &server.token());
        starts.push(time_start(&mut node, command, &watch, ""));
        drop(watch);
        drop(node);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    starts
}

/// Stops the agent of `node`, marks its Node `Ready=Unknown` as the node
/// lifecycle controller would, and times its start on the same data dir.
fn restart(node: &mut AgentNode, server: &Devserver, token: &str) -> Start {
    node.stop();
    let body = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
    }]}});
    let (status, reply) = server.admin_curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/strategic-merge-patch+json",
        "-d",
        &body.to_string(),
        &format!("URL/api/v1/nodes/{}/status", node.name),
    ]);
    assert_eq!(
        status,
        200,
        "marking node {} Ready=Unknown: {}",
        node.name,
        String::from_utf8_lossy(&reply)
    );
    // Controllers react to the change (taints); the Node as the watch
    // first shows it after that is the old one: any other version is the
    // agent's.
    std::thread::sleep(Duration::from_millis(500));
    let watch = node_watch(server, &node.name);
    let (_, first) = watch
        .next(Instant::now() + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the watch on node {} showed nothing", node.name));
    let version = first["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let command = node.command(&server.url, token);
    time_start(node, command, &watch, &version)
}

// ---------------------------------------------------------------------------
// Pods

/// What the pod watch saw of one pod.
#[derive(Default)]
struct Seen {
    running: Option<Instant>,
    ready: Option<Instant>,
    deleted: Option<Instant>,
    last: Value,
}

/// The watch on the default namespace's pods, folded per pod name.
struct Pods {
    watch: Watch,
    seen: HashMap<String, Seen>,
}

impl Pods {
    fn new(server: &Devserver) -> Self {
        Self {
            watch: Watch::start(server, "/api/v1/namespaces/default/pods?watch=true"),
            seen: HashMap::new(),
        }
    }

    fn record(&mut self, at: Instant, event: Value) {
        let Some(name) = event["object"]["metadata"]["name"].as_str() else {
            return;
        };
        let seen = self.seen.entry(name.to_owned()).or_default();
        if event["type"] == "DELETED" {
            seen.deleted.get_or_insert(at);
        } else {
            let object = &event["object"];
            if object["status"]["phase"] == "Running" {
                seen.running.get_or_insert(at);
            }
            if condition_true(object, "Ready") {
                seen.ready.get_or_insert(at);
            }
        }
        seen.last = event;
    }

    /// Follows the watch until `done` holds for pod `name`; panics (with
    /// what was last seen of it) after `timeout`.
    fn wait(&mut self, name: &str, what: &str, timeout: Duration, done: fn(&Seen) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.seen.get(name).is_some_and(done) {
                return;
            }
            match self.watch.next(deadline) {
                Some((at, event)) => self.record(at, event),
                None => panic!(
                    "pod {name} not {what} within {} s; last seen: {}",
                    timeout.as_secs(),
                    self.seen
                        .get(name)
                        .map(|s| s.last["object"]["status"].to_string())
                        .unwrap_or_else(|| "nothing".into())
                ),
            }
        }
    }

    fn get(&self, name: &str) -> &Seen {
        &self.seen[name]
    }
}

fn running_and_ready(s: &Seen) -> bool {
    s.running.is_some() && s.ready.is_some()
}

fn deleted(s: &Seen) -> bool {
    s.deleted.is_some()
}

/// The pod `name` on `node`: busybox sleeping, ending at once on SIGTERM.
fn pod(name: &str, node: &str, image: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": "bench-agent"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "sleep",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/busybox", "sh", "-c",
                            "trap 'exit 0' TERM; /bin/busybox sleep 3600 & wait"],
            }],
        },
    })
}

/// One API request as the admin, timed by curl itself.
struct Call {
    status: u16,
    body: Vec<u8>,
    /// When the request went out (curl had its connection and sent it).
    sent: Instant,
    /// When curl had the whole response.
    answered: Instant,
}

/// `curl -X <method>` of `URL<path>` (with a JSON `body`), with curl's own
/// timings turned into instants: `sent` is when the request went out,
/// `answered` when the response was complete (both just before curl exited,
/// less what curl says it spent since).
fn call(server: &Devserver, method: &str, path: &str, body: Option<&Value>) -> Call {
    let (cert, key) = server.admin_credentials();
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", method, "--cacert"])
        .arg(server.server_ca())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["-w", "\n%{http_code} %{time_pretransfer} %{time_total}"]);
    if let Some(body) = body {
        c.args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ]);
    }
    let out = c
        .arg(format!("{}{path}", server.url))
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    let exited = Instant::now();
    let out = out.stdout;
    let split = out.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let trailer = String::from_utf8_lossy(&out[split..]).into_owned();
    let mut fields = trailer.split_whitespace();
    let mut next = || fields.next().unwrap_or_default().to_owned();
    let status: u16 = next().parse().unwrap_or(0);
    let pretransfer: f64 = next().parse().unwrap_or(0.0);
    let total: f64 = next().parse().unwrap_or(0.0);
    let before = |secs: f64| exited - Duration::from_secs_f64(secs.max(0.0));
    Call {
        status,
        body: out[..split].to_vec(),
        sent: before(total - pretransfer),
        answered: exited,
    }
}

/// POSTs a pod.
fn create(server: &Devserver, pod: &Value) -> Call {
    let c = call(server, "POST", "/api/v1/namespaces/default/pods", Some(pod));
    assert_eq!(
        c.status,
        201,
        "creating pod {}: {}",
        pod["metadata"]["name"],
        String::from_utf8_lossy(&c.body)
    );
    c
}

/// DELETEs a pod.
fn delete(server: &Devserver, name: &str) -> Call {
    let c = call(
        server,
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/{name}"),
        None,
    );
    assert!(
        c.status == 200 || c.status == 202,
        "deleting pod {name}: HTTP {}: {}",
        c.status,
        String::from_utf8_lossy(&c.body)
    );
    c
}

// ---------------------------------------------------------------------------
// Memory

/// PSS and RSS of one process, KiB, and its thread count.
#[derive(Clone, Copy, Default)]
struct Memory {
    pss: u64,
    rss: u64,
    threads: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {name} in /proc/{pid}/smaps_rollup").into())
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Self {
            pss: field("Pss:")?,
            rss: field("Rss:")?,
            threads,
        })
    }
}

/// The node's armlet processes at one moment: the agent's and the
/// supervisor's memory (several supervisors would be summed and counted).
#[derive(Clone)]
struct NodeMemory {
    label: String,
    agent: Memory,
    supervisor: Memory,
    processes: usize,
}

impl NodeMemory {
    fn total(&self) -> Memory {
        Memory {
            pss: self.agent.pss + self.supervisor.pss,
            rss: self.agent.rss + self.supervisor.rss,
            threads: self.agent.threads + self.supervisor.threads,
        }
    }
}

/// The processes whose command line is `<armlet> --runtime-root <root>
/// <subcommand> ...`: the agent (`agent`) and the supervisor (`supervise`)
/// of this node, and not the containers (whatever they run) nor `nsenter`.
fn armlet_processes(root: &Path) -> Vec<(u32, String)> {
    let root = root.to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let [_, flag, dir, sub, ..] = args.as_slice() {
            if flag == "--runtime-root" && *dir == *root && (sub == "agent" || sub == "supervise") {
                found.push((pid, sub.clone()));
            }
        }
    }
    found
}

fn node_memory(node: &AgentNode, label: &str) -> NodeMemory {
    let processes = armlet_processes(&node.runtime_root());
    let mut m = NodeMemory {
        label: label.to_owned(),
        agent: Memory::default(),
        supervisor: Memory::default(),
        processes: processes.len(),
    };
    for (pid, sub) in &processes {
        let Ok(mem) = Memory::of(*pid) else { continue };
        let into = if sub == "agent" {
            &mut m.agent
        } else {
            &mut m.supervisor
        };
        into.pss += mem.pss;
        into.rss += mem.rss;
        into.threads += mem.threads;
    }
    assert!(
        processes.iter().any(|(_, s)| s == "agent")
            && processes.iter().any(|(_, s)| s == "supervise"),
        "the agent and its supervisor of {} should both run; found {processes:?}",
        node.name
    );
    m
}

// ---------------------------------------------------------------------------
// The measured node

struct MainNode {
    restarts: Vec<Start>,
    warm_up: Duration,
    running: Vec<Duration>,
    ready: Vec<Duration>,
    /// The devserver's answers to the POSTs, after the request was sent.
    answers: Vec<Duration>,
    gone: Vec<Duration>,
    memory: Vec<NodeMemory>,
}

/// The node whose restarts, pods and memory are measured.
fn main_node(scratch: &Path, pods: usize) -> MainNode {
    let dir = scratch.join("main");
    let mut node = AgentNode::new(&dir.join("node"), "bench-node");
    let server = Devserver::start_on(&dir.join("server"), IpAddr::V4(node.netns.host_ip), 0, &[]);
    let (registry, image) = node.serve_busybox(&dir.join("layout"));
    let token = server.token();

    // The first start (a join, untimed: the fresh starts are measured above).
    {
        let watch = node_watch(&server, &node.name);
        let command = node.command(&server.url, &token);
        time_start(&mut node, command, &watch, "");
    }
    let restarts: Vec<Start> = (0..START_RUNS)
        .map(|_| restart(&mut node, &server, &token))
        .collect();

    let mut memory = Vec::new();
    std::thread::sleep(SETTLE);
    memory.push(node_memory(&node, "0 pods (idle node)"));

    let mut watch = Pods::new(&server);
    let name = &node.name.clone();
    let created = create(&server, &pod("warm-up", name, &image));
    watch.wait(
        "warm-up",
        "Running and Ready",
        WARM_UP_TIMEOUT,
        running_and_ready,
    );
    let warm_up = watch
        .get("warm-up")
        .running
        .map(|r| r.saturating_duration_since(created.sent))
        .unwrap_or_default();
    delete(&server, "warm-up");
    watch.wait("warm-up", "deleted", POD_TIMEOUT, deleted);

    let (mut running, mut ready, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    let names: Vec<String> = (0..pods).map(|i| format!("pod-{i}")).collect();
    for (i, pod_name) in names.iter().enumerate() {
        let created = create(&server, &pod(pod_name, name, &image));
        answers.push(created.answered.saturating_duration_since(created.sent));
        watch.wait(
            pod_name,
            "Running and Ready",
            POD_TIMEOUT,
            running_and_ready,
        );
        let seen = watch.get(pod_name);
        let since = |t: Option<Instant>| {
            t.unwrap_or(created.sent)
                .saturating_duration_since(created.sent)
        };
        running.push(since(seen.running));
        ready.push(since(seen.ready));
        let count = i + 1;
        if MEMORY_AT.contains(&count) || count == pods {
            std::thread::sleep(SETTLE);
            let plural = if count == 1 { "pod" } else { "pods" };
            memory.push(node_memory(&node, &format!("{count} idle {plural}")));
        }
    }

    let mut gone = Vec::new();
    for pod_name in &names {
        let asked = delete(&server, pod_name).sent;
        watch.wait(pod_name, "deleted", POD_TIMEOUT, deleted);
        let at = watch.get(pod_name).deleted.unwrap_or(asked);
        gone.push(at.saturating_duration_since(asked));
    }
    std::thread::sleep(SETTLE);
    memory.push(node_memory(&node, "0 pods (after all were deleted)"));

    if let Some(keep) = std::env::var_os("ARMLET_BENCH_LOG") {
        match std::fs::write(&keep, node.log()) {
            Ok(()) => println!("\nthe agent's log: {}", PathBuf::from(&keep).display()),
            Err(e) => eprintln!("ARMLET_BENCH_LOG {}: {e}", PathBuf::from(&keep).display()),
        }
    }
    drop(watch);
    drop(node);
    drop(registry);
    drop(server);
    MainNode {
        restarts,
        warm_up,
        running,
        ready,
        answers,
        gone,
        memory,
    }
}

// ---------------------------------------------------------------------------
// Reports

/// The nearest-rank percentile `q` (0 < q ≤ 1) of `times`, in ms.
fn percentile_ms(times: &[Duration], q: f64) -> f64 {
    let mut s: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil() as usize;
    rank.checked_sub(1)
        .and_then(|i| s.get(i))
        .copied()
        .unwrap_or(f64::NAN)
}

fn ms(times: &[Duration]) -> Stats {
    Stats::of(times).scaled(1e3)
}

fn print_starts(fresh: &[Start], restarts: &[Start]) {
    println!(
        "\nagent start → Node Ready, ms ({START_RUNS} runs)   median      p90      min      max   first Node write (median)"
    );
    for (name, runs) in [
        ("fresh data dir (first join)", fresh),
        ("restart (existing data dir)", restarts),
    ] {
        let ready: Vec<Duration> = runs.iter().map(|s| s.ready).collect();
        let first: Vec<Duration> = runs.iter().map(|s| s.first_write).collect();
        let s = ms(&ready);
        println!(
            "{name:<36} {:>8.1} {:>8.1} {:>8.1} {:>8.1}   {:>8.1}",
            s.median,
            s.p90,
            s.min,
            s.max,
            ms(&first).median
        );
    }
}

fn print_pods(main: &MainNode, pods: usize) {
    println!(
        "\npods created one at a time (bound with spec.nodeName, image cached), ms\n\
         {:<36} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "from the request (POST, DELETE) to", "p50", "p90", "p99", "min", "max"
    );
    for (name, times) in [
        ("Running (watch)", &main.running),
        ("Ready (watch)", &main.ready),
        ("the POST's response", &main.answers),
        ("DELETE → gone (DELETED event)", &main.gone),
    ] {
        let s = ms(times);
        println!(
            "{name:<36} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            s.median,
            s.p90,
            percentile_ms(times, 0.99),
            s.min,
            s.max
        );
    }
    println!(
        "({pods} pods; the warm-up pod, whose image was pulled: Running after {:.0} ms)",
        main.warm_up.as_secs_f64() * 1e3
    );
}

fn print_memory(rows: &[NodeMemory]) {
    println!(
        "\narmlet processes' memory, MiB (agent + supervisor; containers not counted)\n\
         {:<34} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "", "agent PSS", "sup. PSS", "PSS", "RSS", "agent threads"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for m in rows {
        let total = m.total();
        println!(
            "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>14}{}",
            m.label,
            mib(m.agent.pss),
            mib(m.supervisor.pss),
            mib(total.pss),
            mib(total.rss),
            m.agent.threads,
            if m.processes == 2 {
                String::new()
            } else {
                format!("  ({} processes)", m.processes)
            }
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn print_summary(size: Size, fresh: &[Start], main: &MainNode, pods: usize) {
    let pss = |label: &str| {
        main.memory
            .iter()
            .find(|m| m.label == label)
            .map(|m| m.total())
    };
    let mut rows: Vec<[String; 5]> = Vec::new();
    let p50 = percentile_ms(&main.running, 0.5);
    let p99 = percentile_ms(&main.running, 0.99);
    rows.push([
        format!("pod created → Running, p50 ({pods} pods)"),
        format!("{p50:.0} ms"),
        String::new(),
        String::new(),
        String::new(),
    ]);
    rows.push([
        "pod created → Running, p99".into(),
        format!("{p99:.0} ms"),
        format!("≤ {POD_P99_GOAL_MS:.0} ms"),
        K8S_POD_SLO.into(),
        verdict(p99 <= POD_P99_GOAL_MS).into(),
    ]);
    rows.push([
        "pod created → Ready, p50 / p99".into(),
        format!(
            "{:.0} / {:.0} ms",
            percentile_ms(&main.ready, 0.5),
            percentile_ms(&main.ready, 0.99)
        ),
        String::new(),
        String::new(),
        String::new(),
    ]);
    rows.push([
        "pod deleted → gone, p50 / p99".into(),
        format!(
            "{:.0} / {:.0} ms",
            percentile_ms(&main.gone, 0.5),
            percentile_ms(&main.gone, 0.99)
        ),
        String::new(),
        String::new(),
        String::new(),
    ]);
    for (label, goal, peer) in [
        ("1 idle pod", PSS_1_GOAL_MIB, K3S_AGENT_PSS),
        ("10 idle pods", PSS_10_GOAL_MIB, ""),
    ] {
        let Some(m) = pss(label) else { continue };
        let mib = m.pss as f64 / 1024.0;
        rows.push([
            format!("armlet PSS, {label} (RSS)"),
            format!("{mib:.1} MiB ({:.1})", m.rss as f64 / 1024.0),
            format!("≤ {goal:.0} MiB"),
            peer.into(),
            verdict(mib <= goal).into(),
        ]);
    }
    let size_mib = size.bytes as f64 / MIB;
    rows.push([
        "aarch64 binary, stripped".into(),
        format!("{size_mib:.2} MiB"),
        format!("≤ {SIZE_GOAL_MIB:.0} MiB"),
        String::new(),
        verdict(size_mib <= SIZE_GOAL_MIB).into(),
    ]);
    for (label, runs) in [
        ("fresh data dir", fresh),
        ("restart", main.restarts.as_slice()),
    ] {
        let ready: Vec<Duration> = runs.iter().map(|s| s.ready).collect();
        let median = ms(&ready).median;
        rows.push([
            format!("start → node Ready, {label} (median of {})", runs.len()),
            format!("{median:.0} ms"),
            format!("≤ {READY_GOAL_MS:.0} ms"),
            String::new(),
            verdict(median <= READY_GOAL_MS).into(),
        ]);
    }
    let header = [
        "figure".to_owned(),
        "armlet".into(),
        "goal".into(),
        "peer".into(),
        "verdict".into(),
    ];
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    println!("\nsummary");
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
