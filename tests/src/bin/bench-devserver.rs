//! `bench-devserver`: how fast the development control plane is ready and
//! how much memory it holds, against the goals (ready < 1 s, memory
//! < 30 MiB; a K3s v1.21 server takes ~35 s to be ready and cannot run on
//! this machine, so its figure is quoted, not measured).
//!
//! Run by `cargo xtask bench devserver`. Everything stays on loopback.
//!
//! - cold start: a fresh data directory (CAs, keys and certificates are
//!   generated), from spawn to the "ready" line;
//! - warm start: the same directory again (everything reloaded);
//! - memory (VmRSS; VmHWM is the peak): idle after a warm start; after a
//!   workload of one node joining as an agent does (node password check:
//!   scrypt, 32 MiB while it runs, as in K3s), Debian's kubectl applying a
//!   node and 200 pods, and 10 `kubectl get pods -w` watches open.
//!
//! Timings are printed, not judged; the goals are reported as met or not.

use std::error::Error;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use armlet_tests::bench::{BenchArgs, Stats};
use armlet_tests::node::TempDir;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const DEFAULT_RUNS: usize = 10;
const PODS: usize = 200;
/// A small cluster's worth first (a test's or a demo's).
const SMALL_PODS: usize = 30;
const WATCHES: usize = 10;
const READY_GOAL_S: f64 = 1.0;
const MEMORY_GOAL_MIB: f64 = 30.0;
/// The password agents join with.
const PASSWORD: &str = "benchbenchbenchbenchbenchbench00";

const USAGE: &str =
    "usage: bench-devserver --devserver <release armlet-devserver binary> [--runs N]";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-devserver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A running devserver, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the server on `data` and returns it with the time to its ready line.
fn start(bin: &Path, data: &Path) -> Result<(Server, Duration)> {
    let port = free_port()?;
    let begun = Instant::now();
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--https-listen-port",
            &port.to_string(),
            "--token",
            PASSWORD,
        ])
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(line) => {
                if line?.contains("ready on") {
                    break;
                }
            }
            None => return Err("the devserver exited before it was ready".into()),
        }
    }
    let took = begun.elapsed();
    std::thread::spawn(move || for _ in lines {});
    Ok((Server { child, port }, took))
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .ok_or(format!("{name} missing from /proc/{pid}/status"))?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn kubectl_path() -> PathBuf {
    std::env::var_os("ARMLET_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/armlet-dev/kubectl/usr/bin/kubectl"))
}

fn kubectl(data: &Path, home: &Path) -> Command {
    let mut c = Command::new(kubectl_path());
    c.env("HOME", home)
        .env("KUBECONFIG", data.join("kubeconfig.yaml"));
    c
}

/// One node's join: the kubelet client certificate with the node-password
/// headers, as the agent asks for it.
fn join(server: &Server, data: &Path, node: &str) -> Result<()> {
    let out = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "--cacert"])
        .arg(data.join("server/tls/server-ca.crt"))
        .args(["-u", &format!("node:{PASSWORD}")])
        .args(["-H", &format!("K3s-Node-Name: {node}")])
        .args(["-H", "K3s-Node-Password: 0123456789abcdef0123456789abcdef"])
        .args(["-H", "K3s-Node-IP: 127.0.0.1"])
        .arg(format!(
            "https://127.0.0.1:{}/v1-k3s/client-kubelet.crt",
            server.port
        ))
        .status()?;
    if !out.success() {
        return Err(format!("the join of {node} failed: curl {out}").into());
    }
    Ok(())
}

/// A node and pods `from..to` as one List for `kubectl apply`.
fn workload_yaml(from: usize, to: usize) -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: bench-node\n",
    );
    for i in from..to {
        text.push_str(&format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: pod-{i}\n    labels:\n      app: bench\n  spec:\n    containers:\n    - name: c\n      image: busybox:1.36\n      command: [sleep, \"3600\"]\n"
        ));
    }
    text
}

fn run() -> Result<()> {
    let args = BenchArgs::parse_with("--devserver", std::env::args().skip(1), USAGE, DEFAULT_RUNS)?;
    let bin = args.binary;
    let size = std::fs::metadata(&bin)?.len() as f64 / (1 << 20) as f64;
    println!("armlet-devserver {} ({size:.1} MiB)", bin.display());

    let scratch = TempDir::new("bench-devserver");
    let mut cold = Vec::new();
    for i in 0..args.runs {
        let data = scratch.path().join(format!("cold-{i}"));
        let (server, took) = start(&bin, &data)?;
        cold.push(took);
        drop(server);
    }
    let data = scratch.path().join("cold-0");
    let mut warm = Vec::new();
    for _ in 0..args.runs {
        let (server, took) = start(&bin, &data)?;
        warm.push(took);
        drop(server);
    }
    let cold = Stats::of(&cold).scaled(1e3);
    let warm = Stats::of(&warm).scaled(1e3);
    println!(
        "\nstart to ready, ms ({} runs)      median      p90      min      max",
        args.runs
    );
    for (name, s) in [
        ("armlet-devserver, fresh data dir", cold),
        ("armlet-devserver, restart", warm),
    ] {
        println!(
            "{name:<34} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            s.median, s.p90, s.min, s.max
        );
    }
    println!(
        "{:<34} {:>8}  (K3s's own figure; no K3s server runs here)",
        "k3s server v1.21", "~35000"
    );

    let (server, _) = start(&bin, &data)?;
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let (idle, _) = memory(pid)?;
    join(&server, &data, "bench-agent")?;
    let (after_join, join_peak) = memory(pid)?;
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home)?;
    let apply = |from: usize, to: usize| -> Result<Duration> {
        let mut apply = kubectl(&data, &home)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        {
            use std::io::Write as _;
            let mut stdin = apply.stdin.take().ok_or("no stdin")?;
            stdin.write_all(workload_yaml(from, to).as_bytes())?;
        }
        let applied = Instant::now();
        if !apply.wait()?.success() {
            return Err("kubectl apply of the workload failed".into());
        }
        Ok(applied.elapsed())
    };
    apply(0, SMALL_PODS)?;
    std::thread::sleep(Duration::from_secs(2));
    let (small, _) = memory(pid)?;
    let apply_time = apply(SMALL_PODS, PODS)?;
    let mut watches = Vec::new();
    for _ in 0..WATCHES {
        watches.push(
            kubectl(&data, &home)
                .args(["get", "pods", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let (loaded, peak) = memory(pid)?;
    for mut w in watches {
        let _ = w.kill();
        let _ = w.wait();
    }
    drop(server);

    println!("\nmemory, MiB (VmRSS)");
    println!("{:<50} {idle:>7.1}", "idle after start");
    println!(
        "{:<50} {after_join:>7.1}  (peak {join_peak:.1}: scrypt's 32 MiB, as K3s)",
        "after one node's join"
    );
    println!("{:<50} {small:>7.1}", format!("with {SMALL_PODS} pods"));
    println!(
        "{:<50} {loaded:>7.1}  (peak {peak:.1})",
        format!("with {PODS} pods and {WATCHES} open watches")
    );
    println!(
        "{:<50} {:>7.1} s",
        format!("kubectl apply of {} more pods", PODS - SMALL_PODS),
        apply_time.as_secs_f64()
    );

    println!("\ngoals");
    println!(
        "ready < {READY_GOAL_S} s: {} (fresh data dir median {:.0} ms, restart {:.0} ms)",
        if cold.p90 < READY_GOAL_S * 1e3 && warm.p90 < READY_GOAL_S * 1e3 {
            "met"
        } else {
            "NOT met"
        },
        cold.median,
        warm.median
    );
    for (what, mib) in [
        ("idle".to_owned(), idle),
        (format!("{SMALL_PODS} pods"), small),
        (format!("{PODS} pods, {WATCHES} watches"), loaded),
    ] {
        let verdict = if mib < MEMORY_GOAL_MIB {
            "met"
        } else {
            "NOT met"
        };
        println!("memory < {MEMORY_GOAL_MIB} MiB, {what}: {verdict} ({mib:.1} MiB)");
    }
    Ok(())
}
