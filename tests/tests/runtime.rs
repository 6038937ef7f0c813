//! armlet's container runtime on the real kernel: namespaces, cgroups, seccomp,
//! CRI logs and the supervisor, driven through its socket as the agent drives it.

use std::fs;
use std::path::Path;
use std::time::Duration;

use armlet_runtime::logs::{CollectOptions, read_lines};
use armlet_runtime::protocol::{
    ContainerInfo, ContainerState, ErrorKind, LABEL_CONTAINER_NAME, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use armlet_runtime::sandbox::{Sandbox, SandboxConfig};
use armlet_runtime::spec::{BindMount, ContainerConfig, Namespace, Seccomp};
use armlet_tests::node::{
    Supervisor, TempDir, bundle, busybox_rootfs, cgroup_file, container, leftover_cgroups,
    mounts_containing, remove_cgroups, require_root,
};

/// Creates, starts and waits for one container; returns its final info and output lines.
fn run(
    sup: &Supervisor,
    dir: &Path,
    id: &str,
    config: &ContainerConfig,
) -> (ContainerInfo, Vec<String>) {
    let mut client = sup.client();
    let bundle = bundle(dir, id, config);
    let log = dir.join("logs").join(format!("{id}.log"));
    client.create(id, &bundle, &log).unwrap();
    client.start(id).unwrap();
    let info = client.wait(id).unwrap();
    let lines = log_lines(&log);
    client.delete(id).unwrap();
    (info, lines)
}

fn log_lines(log: &Path) -> Vec<String> {
    read_lines(log, &CollectOptions::default())
        .unwrap()
        .lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.content).into_owned())
        .collect()
}

/// Waits (at most 10 s) until the container has logged something.
fn wait_for_output(client: &mut armlet_runtime::client::Client, id: &str, log: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log_lines(log).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} printed nothing: {:?}",
            client.status(id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exit_code(info: &ContainerInfo) -> i32 {
    info.exit
        .as_ref()
        .expect("exited container has an exit status")
        .exit_code
}

struct Fixture {
    dir: TempDir,
    group: &'static str,
    rootfs: std::path::PathBuf,
    sup: Supervisor,
}

impl Fixture {
    fn new(group: &'static str) -> Self {
        require_root();
        remove_cgroups(group);
        let dir = TempDir::new(group);
        let rootfs = busybox_rootfs(dir.path());
        let sup = Supervisor::start(&dir.path().join("runtime"));
        Self {
            dir,
            group,
            rootfs,
            sup,
        }
    }

    fn config(&self, id: &str, script: &str) -> ContainerConfig {
        container(&self.rootfs, self.group, id, &["/bin/sh", "-c", script])
    }

    fn run(&self, id: &str, config: &ContainerConfig) -> (ContainerInfo, Vec<String>) {
        run(&self.sup, self.dir.path(), id, config)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // A failed test must not leave containers running on the machine.
        let mut client = self.sup.client();
        for c in client.list().unwrap_or_default() {
            let _ = client.delete(&c.id);
        }
        remove_cgroups(self.group);
    }
}

#[test]
fn exit_code_and_both_streams_reach_the_cri_log() {
    let f = Fixture::new("exit");
    // stdout and stderr are separate pipes (as under containerd): their relative
    // order in the log holds only for writes some time apart.
    let (info, lines) = f.run(
        "c-exit",
        &f.config("c-exit", "echo out; sleep 0.1; echo err >&2; exit 7"),
    );
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(exit_code(&info), 7);
    assert_eq!(info.exit.as_ref().unwrap().reason(), "Error");
    assert!(info.started_at.is_some());
    assert_eq!(lines, vec!["out", "err"]);
    // The file itself is in the CRI format the kubelet and log shippers read.
    let raw = fs::read_to_string(f.dir.path().join("logs/c-exit.log")).unwrap();
    let records: Vec<&str> = raw.lines().collect();
    assert_eq!(records.len(), 2, "{raw}");
    assert!(records[0].ends_with(" stdout F out"), "{raw}");
    assert!(records[1].ends_with(" stderr F err"), "{raw}");
    assert_eq!(
        records[0].find(' '),
        Some(30),
        "RFC 3339 with nine fractional digits: {raw}"
    );
}

#[test]
fn signals_reach_the_container() {
    let f = Fixture::new("signal");
    let mut client = f.sup.client();
    // PID 1 of a PID namespace only receives signals it handles (or SIGKILL),
    // exactly as under containerd: a trap makes SIGTERM a graceful exit.
    let script = "trap 'echo bye; exit 42' TERM; echo ready; while true; do sleep 0.1; done";
    let b = bundle(f.dir.path(), "c-term", &f.config("c-term", script));
    let log = f.dir.path().join("logs/c-term.log");
    client.create("c-term", &b, &log).unwrap();
    assert_eq!(
        client.start("c-term").unwrap().state,
        ContainerState::Running
    );
    wait_for_output(&mut client, "c-term", &log);
    client.kill("c-term", 15).unwrap();
    let exit = client.wait("c-term").unwrap().exit.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (42, None));
    // busybox may print "Terminated" for the `sleep` the exiting shell
    // leaves, before or after "bye" depending on scheduling: not ours to order.
    let lines: Vec<String> = log_lines(&log)
        .into_iter()
        .filter(|l| l != "Terminated")
        .collect();
    assert!(
        lines.starts_with(&["ready".to_owned(), "bye".to_owned()]),
        "{lines:?}"
    );
    client.delete("c-term").unwrap();
    assert_eq!(
        client.status("c-term").unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );

    let b = bundle(
        f.dir.path(),
        "c-kill",
        &f.config("c-kill", "exec sleep 1000"),
    );
    client.create("c-kill", &b, &log).unwrap();
    client.start("c-kill").unwrap();
    client.kill("c-kill", 9).unwrap();
    let exit = client.wait("c-kill").unwrap().exit.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert!(!exit.oom_killed);
    client.delete("c-kill").unwrap();
}

#[test]
fn env_args_working_dir_user_and_hostname_are_applied() {
    let f = Fixture::new("process");
    let mut config = f.config(
        "c-proc",
        "echo $FOO $(id -u):$(id -g) $(pwd) $(hostname) \"$1\"",
    );
    config.args.push("arg0".into());
    config.args.push("first arg".into());
    config.env.push("FOO=bar".into());
    config.working_dir = Some("/tmp".into());
    config.user.uid = 1000;
    config.user.gid = 2000;
    config.hostname = Some("web-0".into());
    let (info, lines) = f.run("c-proc", &config);
    assert_eq!(exit_code(&info), 0, "{lines:?}");
    assert_eq!(lines, vec!["bar 1000:2000 /tmp web-0 first arg"]);
}

#[test]
fn read_only_root_filesystem_is_enforced() {
    let f = Fixture::new("rofs");
    let script = "touch /tmp/x && echo wrote; touch /x 2>/dev/null && echo root-writable || echo root-read-only";
    let mut config = f.config("c-rw", script);
    let (_, lines) = f.run("c-rw", &config);
    assert_eq!(lines, vec!["wrote", "root-writable"]);
    // Read-only root, with a writable volume on /tmp (an emptyDir, say).
    let volume = f.dir.path().join("tmp-volume");
    fs::create_dir_all(&volume).unwrap();
    config.security.read_only_root_filesystem = true;
    config.mounts.push(BindMount {
        source: volume.clone(),
        destination: "/tmp".into(),
        read_only: false,
    });
    let (_, lines) = f.run("c-ro", &config);
    assert_eq!(lines, vec!["wrote", "root-read-only"]);
    assert!(volume.join("x").exists(), "the write went to the volume");
}

#[test]
fn dropped_capabilities_are_really_dropped() {
    let f = Fixture::new("caps");
    let script = "grep CapEff /proc/self/status; hostname changed 2>/dev/null && echo can-set-hostname || echo cannot";
    let (_, lines) = f.run("c-defcaps", &f.config("c-defcaps", script));
    // containerd's default set, and no CAP_SYS_ADMIN to rename the host.
    assert_eq!(lines, vec!["CapEff:\t00000000a80425fb", "cannot"]);

    let mut config = f.config("c-nocaps", script);
    config.security.drop_capabilities = vec!["ALL".into()];
    let (_, lines) = f.run("c-nocaps", &config);
    assert_eq!(lines, vec!["CapEff:\t0000000000000000", "cannot"]);

    let mut config = f.config("c-sysadmin", script);
    config.security.add_capabilities = vec!["SYS_ADMIN".into()];
    let (_, lines) = f.run("c-sysadmin", &config);
    assert_eq!(lines[1], "can-set-hostname");
}

#[test]
fn runtime_default_seccomp_refuses_namespace_escapes() {
    let f = Fixture::new("seccomp");
    let script = "grep Seccomp: /proc/self/status; dd if=/dev/zero of=/dev/null count=1 2>/dev/null && echo syscalls-work";
    let mut config = f.config("c-unconfined", script);
    let (_, lines) = f.run("c-unconfined", &config);
    assert_eq!(lines, vec!["Seccomp:\t0", "syscalls-work"]);
    config.security.seccomp = Seccomp::RuntimeDefault;
    let (_, lines) = f.run("c-default", &config);
    assert_eq!(lines, vec!["Seccomp:\t2", "syscalls-work"]);
}

#[test]
fn memory_limit_ends_in_oom_killed() {
    let f = Fixture::new("oom");
    // `tail` keeps the "last line" of an endless newline-free stream in memory.
    let mut config = f.config("c-oom", "tail /dev/zero");
    config.resources.memory_limit = Some(16 << 20);
    let (info, _) = f.run("c-oom", &config);
    let exit = info.exit.unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.reason(), "OOMKilled");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
}

#[test]
fn pids_limit_stops_fork_bombs() {
    let f = Fixture::new("pids");
    let mut client = f.sup.client();
    let script = "i=0; while [ $i -lt 30 ]; do sleep 60 & i=$((i+1)); done; echo spawned $i";
    let mut config = f.config("c-pids", script);
    config.resources.pids_limit = Some(10);
    let b = bundle(f.dir.path(), "c-pids", &config);
    let log = f.dir.path().join("logs/c-pids.log");
    client.create("c-pids", &b, &log).unwrap();
    client.start("c-pids").unwrap();
    let info = client.wait("c-pids").unwrap();
    let max = cgroup_file(f.group, "c-pids", "pids", "pids.max").expect("pids cgroup");
    assert_eq!(max.trim(), "10");
    // The shell and nine sleeps fit; the tenth fork fails and the shell gives up.
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("can't fork"), "{lines:?}");
    assert_eq!(exit_code(&info), 2);
    client.delete("c-pids").unwrap();
}

#[test]
fn containers_and_logs_survive_a_supervisor_crash() {
    require_root();
    let group = "survive";
    remove_cgroups(group);
    let dir = TempDir::new(group);
    let rootfs = busybox_rootfs(dir.path());
    let root = dir.path().join("runtime");
    let config = container(
        &rootfs,
        group,
        "c-long",
        &[
            "/bin/sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    let b = bundle(dir.path(), "c-long", &config);
    let log = dir.path().join("logs/c-long.log");

    let sup = Supervisor::start(&root);
    let mut client = sup.client();
    client.create("c-long", &b, &log).unwrap();
    let pid = client.start("c-long").unwrap().pid;
    std::thread::sleep(Duration::from_millis(400));
    // The agent's connection going away changes nothing.
    drop(client);
    let mut client = sup.client();
    assert_eq!(
        client.status("c-long").unwrap().state,
        ContainerState::Running
    );

    sup.crash();
    // Output written while no supervisor runs waits in the fifo.
    std::thread::sleep(Duration::from_millis(300));
    let before = log_lines(&log).len();
    let sup = Supervisor::start(&root);
    let mut client = sup.client();
    let info = client.status("c-long").unwrap();
    assert_eq!((info.state, info.pid), (ContainerState::Running, pid));
    std::thread::sleep(Duration::from_millis(500));
    let lines = log_lines(&log);
    assert!(
        lines.len() > before + 3,
        "logging continued: {before} then {}",
        lines.len()
    );
    // No line lost or repeated across the crash.
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line, &format!("line {i}"));
    }
    client.kill("c-long", 9).unwrap();
    let info = client.wait("c-long").unwrap();
    // Not our child any more: the exit is seen, its code is not.
    assert_eq!(exit_code(&info), 255);
    client.delete("c-long").unwrap();
    drop(sup);
    remove_cgroups(group);
}

#[test]
fn an_upgraded_supervisor_keeps_containers_logs_and_exit_codes() {
    require_root();
    let group = "upgrade";
    remove_cgroups(group);
    let dir = TempDir::new(group);
    let rootfs = busybox_rootfs(dir.path());
    let root = dir.path().join("runtime");
    let script = "trap 'echo bye; exit 3' TERM; i=0; \
                  while true; do echo line $i; i=$((i+1)); sleep 0.05; done";
    let config = container(&rootfs, group, "c-up", &["/bin/sh", "-c", script]);
    let b = bundle(dir.path(), "c-up", &config);
    let log = dir.path().join("logs/c-up.log");
    // The "new version": another copy of the program, so the exec is visible.
    let new_binary = dir.path().join("armlet-new");
    fs::copy(
        armlet_tests::release_binary(&armlet_tests::HOST),
        &new_binary,
    )
    .unwrap();

    let sup = Supervisor::start(&root);
    let mut client = sup.client();
    client.create("c-up", &b, &log).unwrap();
    let pid = client.start("c-up").unwrap().pid;
    std::thread::sleep(Duration::from_millis(300));
    let (_, sup_pid) = client.hello().unwrap();
    assert_eq!(sup_pid as u32, sup.pid());

    // A relative path is refused and nothing happens.
    let err = client.upgrade(Path::new("armlet-new")).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));
    // So is a file that cannot be executed: the exec would fail after "Ok".
    let not_executable = dir.path().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let err = client.upgrade(&not_executable).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));
    client.upgrade(&new_binary).unwrap();
    // The exec closes this connection; the same process answers again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        if let Ok(mut c) =
            armlet_runtime::client::Client::connect(&armlet_runtime::supervisor::socket_path(&root))
        {
            if let Ok((_, p)) = c.hello() {
                break (c, p);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer after the upgrade"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(client.1 as u32, sup.pid(), "same process after the upgrade");
    assert_eq!(
        fs::read_link(format!("/proc/{}/exe", sup.pid())).unwrap(),
        new_binary
    );
    let info = client.0.status("c-up").unwrap();
    assert_eq!((info.state, info.pid), (ContainerState::Running, pid));
    std::thread::sleep(Duration::from_millis(200));
    // And back, through the operator CLI.
    let back = std::process::Command::new(armlet_tests::release_binary(&armlet_tests::HOST))
        .arg("--runtime-root")
        .arg(&root)
        .args(["supervisor", "upgrade"])
        .output()
        .unwrap();
    assert!(back.status.success(), "{back:?}");
    assert!(
        String::from_utf8_lossy(&back.stdout)
            .starts_with(&format!("supervisor pid {}:", sup.pid())),
        "{back:?}"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{}/exe", sup.pid())).unwrap(),
        armlet_tests::release_binary(&armlet_tests::HOST)
    );
    let mut client =
        armlet_runtime::client::Client::connect(&armlet_runtime::supervisor::socket_path(&root))
            .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // Still our child: the exit code is the container's own, not "unknown".
    client.kill("c-up", 15).unwrap();
    let info = client.wait("c-up").unwrap();
    assert_eq!(exit_code(&info), 3);
    let lines = log_lines(&log);
    // The trap said goodbye (busybox also reports the interrupted sleep, on
    // stderr, so the order of the two is not fixed).
    let counted: Vec<&String> = lines.iter().filter(|l| l.starts_with("line ")).collect();
    assert!(lines.iter().any(|l| l == "bye"), "{lines:?}");
    assert!(counted.len() > 10, "{lines:?}");
    // No line lost or repeated across the exec.
    for (i, line) in counted.iter().enumerate() {
        assert_eq!(*line, &format!("line {i}"));
    }
    client.delete("c-up").unwrap();
    drop(sup);
    remove_cgroups(group);
}

#[test]
fn repeated_create_and_delete_leaves_nothing_behind() {
    let f = Fixture::new("cycles");
    let mut client = f.sup.client();
    let config = f.config("c-cycle", "true");
    let b = bundle(f.dir.path(), "c-cycle", &config);
    let mut fds_after_first = 0;
    for i in 0..200 {
        let id = format!("c-cycle-{i}");
        let log = f.dir.path().join("logs").join(format!("{id}.log"));
        client.create(&id, &b, &log).unwrap();
        if i % 2 == 0 {
            client.start(&id).unwrap();
            assert_eq!(client.wait(&id).unwrap().exit.unwrap().exit_code, 0);
        }
        // Odd ones are deleted without ever starting.
        client.delete(&id).unwrap();
        if i == 1 {
            // After one cycle of each kind: whatever is opened once is open.
            fds_after_first = f.sup.open_fds();
        }
    }
    assert!(client.list().unwrap().is_empty());
    assert_eq!(
        f.sup.open_fds(),
        fds_after_first,
        "no descriptor leaks per container"
    );
    let pid = f.sup.pid();
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    assert_eq!(children.trim(), "", "no process left behind");
    assert!(
        leftover_cgroups(f.group).is_empty(),
        "{:?}",
        leftover_cgroups(f.group)
    );
    assert!(mounts_containing(&f.dir.path().to_string_lossy()).is_empty());
    let runtime = f.dir.path().join("runtime");
    assert_eq!(fs::read_dir(runtime.join("containers")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(runtime.join("state")).unwrap().count(), 0);
}

#[test]
fn bad_requests_are_refused_cleanly() {
    let f = Fixture::new("bad");
    let mut client = f.sup.client();
    let log = f.dir.path().join("logs/x.log");
    let err = client.create("../escape", f.dir.path(), &log).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));
    let err = client
        .create("c-nobundle", &f.dir.path().join("missing"), &log)
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));
    assert_eq!(
        client.start("nope").unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );
    // A command that does not exist fails at create and leaves nothing.
    let config = container(&f.rootfs, f.group, "c-nocmd", &["/bin/no-such-command"]);
    let b = bundle(f.dir.path(), "c-nocmd", &config);
    let err = client.create("c-nocmd", &b, &log).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Failed));
    assert!(err.to_string().contains("no-such-command"), "{err}");
    assert!(client.list().unwrap().is_empty());
    let config = f.config("c-twice", "sleep 100");
    let b = bundle(f.dir.path(), "c-twice", &config);
    client.create("c-twice", &b, &log).unwrap();
    assert_eq!(
        client.create("c-twice", &b, &log).unwrap_err().kind(),
        Some(ErrorKind::AlreadyExists)
    );
    client.start("c-twice").unwrap();
    assert_eq!(
        client.start("c-twice").unwrap_err().kind(),
        Some(ErrorKind::InvalidState)
    );
    client.delete("c-twice").unwrap();
}

#[test]
fn containers_of_a_pod_share_localhost_ipc_and_hostname() {
    let f = Fixture::new("pod");
    // Even a failed run must leave no namespace mount behind.
    struct Release(std::path::PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = armlet_runtime::sandbox::release_root(&self.0);
        }
    }
    let _release = Release(f.dir.path().join("sandboxes"));
    let sandbox = Sandbox::create(
        &f.dir.path().join("sandboxes"),
        &SandboxConfig {
            pod_id: "pod-a".into(),
            hostname: "pod-a".into(),
            host_network: false,
            host_ipc: false,
        },
    )
    .unwrap();
    let in_pod = |id: &str, script: &str| {
        let mut config = f.config(id, script);
        config.namespaces.net = Namespace::Join(sandbox.net_path().unwrap().to_path_buf());
        config.namespaces.ipc = Namespace::Join(sandbox.ipc_path().unwrap().to_path_buf());
        config.namespaces.uts = Namespace::Join(sandbox.uts_path().unwrap().to_path_buf());
        config.hostname = Some("pod-a".into());
        config
    };
    let mut client = f.sup.client();
    // The server: a POSIX message queue (it lives in the pod's IPC namespace, seen
    // through /dev/mqueue) for the other container to find, then a TCP answer on
    // the pod's localhost.
    let server = in_pod(
        "c-server",
        "touch /dev/mqueue/pod-queue && echo queue-made; echo hello-from-server | nc -l -p 8080 -w 10 127.0.0.1",
    );
    let b = bundle(f.dir.path(), "c-server", &server);
    let server_log = f.dir.path().join("logs/c-server.log");
    client.create("c-server", &b, &server_log).unwrap();
    client.start("c-server").unwrap();
    wait_for_output(&mut client, "c-server", &server_log);

    let (info, lines) = f.run(
        "c-client",
        &in_pod(
            "c-client",
            "hostname; ls /dev/mqueue; for i in $(seq 50); do nc 127.0.0.1 8080 && break; sleep 0.1; done",
        ),
    );
    assert_eq!(exit_code(&info), 0, "{lines:?}");
    assert_eq!(lines, vec!["pod-a", "pod-queue", "hello-from-server"]);
    let server = client.wait("c-server").unwrap();
    assert_eq!(exit_code(&server), 0);
    client.delete("c-server").unwrap();

    // A container outside the pod sees neither.
    let (_, lines) = f.run(
        "c-outside",
        &f.config(
            "c-outside",
            "ls /dev/mqueue | wc -l; nc -w 1 127.0.0.1 8080 2>/dev/null || echo refused",
        ),
    );
    assert_eq!(lines.first().map(String::as_str), Some("0"));
    assert_eq!(lines.last().map(String::as_str), Some("refused"));
    sandbox.remove().unwrap();
    let sandboxes = f.dir.path().join("sandboxes");
    armlet_runtime::sandbox::release_root(&sandboxes).unwrap();
    assert!(mounts_containing(&sandboxes.to_string_lossy()).is_empty());
}

#[test]
fn oom_score_adj_is_applied_or_raised_to_what_the_host_allows() {
    let f = Fixture::new("oomadj");
    let mut config = f.config("c-adj-up", "cat /proc/self/oom_score_adj");
    config.security.oom_score_adj = Some(999);
    let (info, lines) = f.run("c-adj-up", &config);
    assert_eq!((exit_code(&info), lines), (0, vec!["999".to_owned()]));
    // Guaranteed pods get -997; a host without CAP_SYS_RESOURCE (like this VM)
    // cannot lower scores, and the container must run all the same.
    let mut config = f.config("c-adj-down", "cat /proc/self/oom_score_adj");
    config.security.oom_score_adj = Some(-997);
    let (info, lines) = f.run("c-adj-down", &config);
    assert_eq!(exit_code(&info), 0, "{lines:?}");
    let got: i32 = lines[0].parse().unwrap();
    assert!((-997..=0).contains(&got), "{got}");
    // And the supervisor keeps its own score whatever its containers get.
    let own = fs::read_to_string(format!("/proc/{}/oom_score_adj", f.sup.pid())).unwrap();
    assert_eq!(own.trim(), "0");
}

#[test]
fn a_running_container_reports_cpu_and_memory_usage() {
    let f = Fixture::new("stats");
    let mut client = f.sup.client();
    // Burn some CPU, then hold ~8 MiB in a shell variable and idle.
    let script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
                  x=$(head -c 8000000 /dev/zero | tr '\\0' x); echo ready; exec sleep 1000";
    let b = bundle(f.dir.path(), "c-stats", &f.config("c-stats", script));
    let log = f.dir.path().join("logs/c-stats.log");
    client.create("c-stats", &b, &log).unwrap();
    client.start("c-stats").unwrap();
    wait_for_output(&mut client, "c-stats", &log);
    let usage = client.stats("c-stats").unwrap();
    assert!(usage.cpu_usage_ns > 10_000_000, "{usage:?}");
    assert!(usage.memory_working_set_bytes > 100_000, "{usage:?}");
    client.delete("c-stats").unwrap();
    assert_eq!(
        client.stats("c-stats").unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );
}

#[test]
fn exec_runs_a_process_inside_a_running_container() {
    use std::os::fd::AsFd;

    let f = Fixture::new("exec");
    let mut client = f.sup.client();
    let mut config = f.config("c-exec", "echo ready; exec sleep 1000");
    config.env.push("FOO=from-container".into());
    let b = bundle(f.dir.path(), "c-exec", &config);
    let log = f.dir.path().join("logs/c-exec.log");
    client.create("c-exec", &b, &log).unwrap();
    client.start("c-exec").unwrap();
    wait_for_output(&mut client, "c-exec", &log);

    let io = f.dir.path().join("io");
    fs::create_dir_all(&io).unwrap();
    fs::write(io.join("in"), "typed-in\n").unwrap();
    let stdin = fs::File::open(io.join("in")).unwrap();
    let stdout = fs::File::create(io.join("out")).unwrap();
    let stderr = fs::File::create(io.join("err")).unwrap();
    let script = "read line; echo $line $FOO $BAR $(hostname) $(cat /proc/1/cmdline | tr '\\0' ' '); echo oops >&2; exit 3";
    let code = client
        .exec(
            "c-exec",
            &["/bin/sh".into(), "-c".into(), script.into()],
            &["BAR=from-exec".into()],
            [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
        )
        .unwrap();
    assert_eq!(code, 3);
    assert_eq!(
        fs::read_to_string(io.join("out")).unwrap(),
        "typed-in from-container from-exec c-exec sleep 1000\n"
    );
    assert_eq!(fs::read_to_string(io.join("err")).unwrap(), "oops\n");
    // Its output went where it was told, not into the container's log.
    assert_eq!(log_lines(&log), vec!["ready"]);

    let err = client
        .exec(
            "nope",
            &["true".into()],
            &[],
            [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
        )
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));
    client.delete("c-exec").unwrap();
}

#[test]
fn exec_with_a_tty_gets_a_terminal_of_its_own() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    let f = Fixture::new("exec-tty");
    let client = f.sup.client();
    let config = f.config("c-tty", "echo ready; exec sleep 1000");
    let b = bundle(f.dir.path(), "c-tty", &config);
    let log = f.dir.path().join("logs/c-tty.log");
    let mut control = f.sup.client();
    control.create("c-tty", &b, &log).unwrap();
    control.start("c-tty").unwrap();
    wait_for_output(&mut control, "c-tty", &log);

    // The terminal is the container's own (its devpts), the process's
    // controlling terminal, sized by the caller, and carries input and output.
    // It reads first: by then the size below is set.
    let script = "read line; tty; [ -t 0 ] && [ -t 2 ] && echo stdio-is-a-tty; stty size; \
                  echo got:$line; exit 5";
    let mut exec = client
        .exec_tty(
            "c-tty",
            &["/bin/sh".into(), "-c".into(), script.into()],
            &[],
        )
        .unwrap();
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one Winsize from the pointer, which lives here.
    let rc = unsafe { nix::libc::ioctl(exec.master().as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "resizing the terminal");
    let mut master = fs::File::from(exec.master().try_clone_to_owned().unwrap());
    master.write_all(b"hello\n").unwrap();
    let code = exec.wait().unwrap();
    assert_eq!(code, 5);
    drop(exec);
    // Read what is left; the terminal reports EIO once the process side is gone.
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    let output = String::from_utf8_lossy(&output).replace('\r', "");
    assert!(output.contains("/dev/pts/0\n"), "{output:?}");
    assert!(output.contains("stdio-is-a-tty\n"), "{output:?}");
    assert!(output.contains("got:hello\n"), "{output:?}");
    assert!(output.contains("33 101\n"), "{output:?}");
    // The container's own log saw none of it.
    assert_eq!(log_lines(&log), vec!["ready"]);
    // Nothing of the handshake is left in the supervisor's directory.
    let leftovers: Vec<_> = fs::read_dir(&f.sup.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tty-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A refused tty exec is an error, not a hang.
    let err = f
        .sup
        .client()
        .exec_tty("nope", &["true".into()], &[])
        .err()
        .unwrap();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));
    control.delete("c-tty").unwrap();
}

#[test]
fn the_operator_cli_lists_shows_logs_execs_and_removes() {
    let f = Fixture::new("cli");
    let mut client = f.sup.client();
    let b = bundle(
        f.dir.path(),
        "c-cli",
        &f.config("c-cli", "echo ready; exec sleep 1000"),
    );
    let log = f.dir.path().join("logs/c-cli.log");
    let labels = [
        (LABEL_POD_UID, "0d5c-uid"),
        (LABEL_POD_NAME, "web"),
        (LABEL_POD_NAMESPACE, "shop"),
        (LABEL_CONTAINER_NAME, "nginx"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into_iter()
    .collect();
    client
        .create_with_labels("c-cli", &b, &log, labels)
        .unwrap();
    client.start("c-cli").unwrap();
    wait_for_output(&mut client, "c-cli", &log);

    let armlet = |args: &[&str]| {
        std::process::Command::new(armlet_tests::release_binary(&armlet_tests::HOST))
            .arg("--runtime-root")
            .arg(&f.sup.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let ps = armlet(&["ps"]);
    let ps_out = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.status.success());
    assert!(
        ps_out
            .lines()
            .any(|l| l.starts_with("c-cli ") && l.contains("Running")),
        "{ps_out}"
    );
    assert!(
        ps_out
            .lines()
            .any(|l| l.starts_with("c-cli ") && l.contains(" nginx ") && l.contains(" shop/web ")),
        "{ps_out}"
    );
    // The pod, its one running container, and its cgroup's usage (the pod's
    // cgroup is the parent of the container's).
    let pods = armlet(&["pods"]);
    let pods_out = String::from_utf8_lossy(&pods.stdout);
    assert!(pods.status.success(), "{pods:?}");
    let row: Vec<&str> = pods_out
        .lines()
        .find(|l| l.starts_with("0d5c-uid "))
        .unwrap_or_else(|| panic!("{pods_out}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], &["0d5c-uid", "shop/web", "1/1"], "{pods_out}");
    let memory_kib: u64 = row[4].parse().unwrap_or_else(|_| panic!("{pods_out}"));
    assert!(memory_kib > 0, "{pods_out}");
    let logs = armlet(&["logs", "c-cli"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "ready\n");
    let exec = armlet(&[
        "exec",
        "c-cli",
        "-e",
        "X=42",
        "--",
        "/bin/sh",
        "-c",
        "echo $X $(hostname); exit 4",
    ]);
    assert_eq!(exec.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "42 c-cli\n");
    // With -t the output comes through the container's terminal (with its
    // carriage returns), even when this side is no terminal.
    let exec_tty = armlet(&["exec", "-t", "c-cli", "--", "/bin/sh", "-c", "tty; exit 6"]);
    assert_eq!(exec_tty.status.code(), Some(6), "{exec_tty:?}");
    assert_eq!(String::from_utf8_lossy(&exec_tty.stdout), "/dev/pts/0\r\n");
    // Piped input, far more than a pty buffers, echoed back while it is typed:
    // all of it arrives, and its end reaches the process as end of file.
    let mut piped = std::process::Command::new(armlet_tests::release_binary(&armlet_tests::HOST))
        .arg("--runtime-root")
        .arg(&f.sup.root)
        .args(["exec", "-t", "c-cli", "--", "/bin/sh", "-c", "wc -c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("{}\n", "x".repeat(99)).repeat(2000);
    let mut stdin = piped.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let piped = piped.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(piped.status.code(), Some(0), "{piped:?}");
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(
        text.trim_end().ends_with("200000"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    let stats = armlet(&["stats", "c-cli"]);
    assert!(stats.status.success(), "{stats:?}");
    let rm = armlet(&["rm", "c-cli", "c-missing"]);
    assert!(!rm.status.success());
    assert_eq!(String::from_utf8_lossy(&rm.stdout), "c-cli\n");
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("no container c-missing"),
        "{rm:?}"
    );
    assert!(client.list().unwrap().is_empty());
    // Without a supervisor the CLI says so instead of failing obscurely.
    let lost = std::process::Command::new(armlet_tests::release_binary(&armlet_tests::HOST))
        .args(["--runtime-root", "/nonexistent-armlet-root", "ps"])
        .output()
        .unwrap();
    assert!(!lost.status.success());
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("cannot reach the container supervisor")
    );
}

#[test]
fn a_pod_cgroup_holds_its_containers_and_its_limits() {
    use armlet_runtime::cgroup::{ensure_pod_cgroup, remove_pod_cgroup};
    use armlet_runtime::spec::Resources;

    let f = Fixture::new("podcg");
    let pod = std::path::PathBuf::from("/armlet-e2e/podcg/pod-1");
    let limits = Resources {
        memory_limit: Some(64 << 20),
        pids_limit: Some(20),
        ..Resources::default()
    };
    ensure_pod_cgroup(&pod, &limits).unwrap();
    ensure_pod_cgroup(&pod, &limits).unwrap();
    let pod_file = |controller: &str, file: &str| cgroup_file("podcg", "pod-1", controller, file);
    assert_eq!(pod_file("pids", "pids.max").unwrap().trim(), "20");
    let memory =
        pod_file("memory", "memory.limit_in_bytes").or_else(|| pod_file("memory", "memory.max"));
    assert_eq!(memory.unwrap().trim(), (64u64 << 20).to_string());

    let mut client = f.sup.client();
    let mut config = f.config("c-in-pod", "echo ready; exec sleep 1000");
    config.cgroups_path = pod.join("c-in-pod");
    let b = bundle(f.dir.path(), "c-in-pod", &config);
    let log = f.dir.path().join("logs/c-in-pod.log");
    client.create("c-in-pod", &b, &log).unwrap();
    client.start("c-in-pod").unwrap();
    wait_for_output(&mut client, "c-in-pod", &log);
    // The container's processes count against the pod.
    let pids = pod_file("pids", "pids.current").unwrap();
    assert_eq!(pids.trim(), "1");
    // A pod cgroup with a container in it is not removed from under it.
    assert!(remove_pod_cgroup(&pod).is_err());
    client.delete("c-in-pod").unwrap();
    remove_pod_cgroup(&pod).unwrap();
    assert!(pod_file("pids", "pids.max").is_none());
    remove_pod_cgroup(&pod).unwrap();
}

#[test]
fn the_agent_starts_a_detached_supervisor_once() {
    use armlet_runtime::client::connect_or_start;

    require_root();
    let dir = TempDir::new("start");
    let root = dir.path().join("runtime");
    let armlet = armlet_tests::release_binary(&armlet_tests::HOST);
    let mut first = connect_or_start(&armlet, &root).unwrap();
    assert!(first.list().unwrap().is_empty());
    let mut second = connect_or_start(&armlet, &root).unwrap();
    assert!(second.list().unwrap().is_empty());
    // One supervisor, in a session of its own.
    let pids: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*root.to_string_lossy()))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let stat = fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[3], pids[0].to_string(), "session leader: {stat}");
    let _ = std::process::Command::new("kill")
        .arg(pids[0].to_string())
        .status();
}

#[test]
fn logs_follow_prints_the_tail_then_new_lines_until_the_container_exits() {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    /// Waits for `child` at most 30 s (killing it then), for its status.
    fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("armlet logs -f did not end");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let f = Fixture::new("follow");
    let mut client = f.sup.client();
    let armlet = |args: &[&str]| {
        let mut command = Command::new(armlet_tests::release_binary(&armlet_tests::HOST));
        command
            .arg("--runtime-root")
            .arg(&f.sup.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };

    let script = "seq 1 5; sleep 1; seq 6 8; sleep 1; printf 'no newline'";
    let b = bundle(f.dir.path(), "c-follow", &f.config("c-follow", script));
    let log = f.dir.path().join("logs/c-follow.log");
    client.create("c-follow", &b, &log).unwrap();
    client.start("c-follow").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_lines(&log).len() < 5 {
        assert!(Instant::now() < deadline, "{:?}", log_lines(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut follow = armlet(&["logs", "-f", "--tail", "2", "c-follow"])
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut follow);
    let mut stdout = String::new();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stdout.take().unwrap(), &mut stdout).unwrap();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    // The last two lines, every later one once, and the end without newline
    // (written as a full record when the stream ended).
    assert_eq!(stdout, "4\n5\n6\n7\n8\nno newline\n", "{stderr}");
    assert_eq!(stderr, "");
    assert_eq!(
        client.status("c-follow").unwrap().state,
        ContainerState::Exited
    );
    client.delete("c-follow").unwrap();

    // A reader that goes away ends the follower quietly, container running.
    let script = "while true; do echo tick; sleep 0.1; done";
    let b = bundle(f.dir.path(), "c-ticks", &f.config("c-ticks", script));
    let log = f.dir.path().join("logs/c-ticks.log");
    client.create("c-ticks", &b, &log).unwrap();
    client.start("c-ticks").unwrap();
    let mut follow = armlet(&["logs", "--follow", "c-ticks"]).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(follow.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "tick\n");
    let status = wait_bounded(&mut follow);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
    assert_eq!(
        client.status("c-ticks").unwrap().state,
        ContainerState::Running
    );
    client.delete("c-ticks").unwrap();

    // Following from before the start, across some 25 rotations: a
    // supervisor of its own with small log files.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let root = f.dir.path().join("runtime-small-logs");
    let _small = Killed(
        Command::new(armlet_tests::release_binary(&armlet_tests::HOST))
            .arg("--runtime-root")
            .arg(&root)
            .args(["supervise", "--log-max-size=4096", "--log-max-files=1000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = armlet_runtime::supervisor::socket_path(&root);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut small = loop {
        if let Ok(client) = armlet_runtime::client::Client::connect(&socket) {
            break client;
        }
        assert!(Instant::now() < deadline, "supervisor did not come up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let script = "sleep 0.5; seq 1 2000; sleep 0.3; seq 2001 2500";
    let b = bundle(f.dir.path(), "c-rotate", &f.config("c-rotate", script));
    let log = f.dir.path().join("logs/c-rotate.log");
    small.create("c-rotate", &b, &log).unwrap();
    let mut follow = Command::new(armlet_tests::release_binary(&armlet_tests::HOST))
        .arg("--runtime-root")
        .arg(&root)
        .args(["logs", "-f", "c-rotate"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    small.start("c-rotate").unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut follow.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = wait_bounded(&mut follow);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let want = (1..=2500)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert!(stdout == want, "{} lines: {stderr}", stdout.lines().count());
    let rotated = fs::read_dir(log.parent().unwrap())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("c-rotate.log.")
        })
        .count();
    assert!(rotated >= 20, "{rotated} rotations");
    small.delete("c-rotate").unwrap();
}
