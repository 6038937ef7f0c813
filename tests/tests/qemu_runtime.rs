//! armlet's container runtime on a real ARM kernel with pure cgroup v2: Debian's
//! arm64 and armhf (LPAE) kernels booted under qemu-system, the release `armlet`
//! binary of each architecture running containers inside the guest.
//!
//! Why a whole machine: this host is a hybrid cgroup v1 VM, so the runtime's v2
//! code is otherwise only tested against a fake cgroupfs; and 32-bit ARM
//! containers (namespaces, cgroups, seccomp) cannot run under qemu-user at all.
//! Boards run pure v2 (current Raspberry Pi OS, armlet's firmware images).
//!
//! The bundles are built here with `armlet_runtime::spec`, packed into the
//! initramfs with a busybox root filesystem of the guest's architecture; a shell
//! script in the guest drives the `armlet` CLI and prints one `ARMLET-CHECK`
//! marker per check, which these tests assert on. The guest has no network device.

use std::fs;
use std::path::{Path, PathBuf};

use armlet_runtime::spec::{ContainerConfig, Namespace, Resources, Seccomp, build_spec};
use armlet_tests::node::{TempDir, container};
use armlet_tests::qemu::{Arch, Check, Console, Cpio, GuestKit, Vm, guest_initramfs};
use armlet_tests::release_binary;
use oci_spec::runtime::Arch as SeccompArch;

/// The pod cgroup the containers live under (as the agent's `kubepods/pod<uid>`).
const POD_CGROUP: &str = "/kubepods/pod-qemu";

/// Limits of the long-running container: checked in its cgroup while it runs.
const LIMITS_MEMORY: i64 = 48 << 20;
const LIMITS_PIDS: i64 = 16;
/// Its CPU: half the default shares, and a quota of two CPUs (more than the
/// guest has, so that it never slows the check down).
const LIMITS_CPU_SHARES: u64 = 512;
const LIMITS_CPU_QUOTA: i64 = 200_000;
const LIMITS_CPU_PERIOD: u64 = 100_000;

/// Memory limit of the container that allocates past it.
const OOM_MEMORY: i64 = 16 << 20;

/// Every check the guest script reports, each of which must pass.
const CHECKS: &[&str] = &[
    "cgroup2-only",
    "exit-code",
    "cgroup-limits",
    "stats",
    "exec",
    "pids-limit",
    "stop-rm",
    "oom",
    "oom-rm",
    "seccomp",
    "devices",
    "devices-allowed",
    "devices-privileged",
    "pty",
    "no-leftover-cgroups",
];

/// Checks that fail today because of a known armlet gap, each with the reason.
/// They are still run and must still fail: when one starts passing, the gap was
/// closed and it belongs in [`CHECKS`].
/// (None today: the last, the device allowlist on cgroup v2, is closed by
/// armlet's own eBPF program, `armlet_runtime::devices`.)
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// busybox applets linked in the containers' root filesystem.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "head", "tr", "dd", "hostname", "uname", "mknod", "seq", "true",
    "dmesg", "tty", "wc",
];

/// The guest's script (stage two of `/init` sources it): drives `armlet` and prints
/// a marker per check. `@NAME@` placeholders are filled in by [`guest_script`].
const GUEST_SCRIPT: &str = r#"
CG=/sys/fs/cgroup
POD=$CG@POD@
dump() { sed "s/^/$1: /" "$2" 2>/dev/null; }
# From `armlet ps -a`, whatever its other columns: a container's init PID while it
# runs, and its final state ("Exited(CODE) REASON").
ps_pid() { armlet ps | sed -n "s/^$1 .* Running  *\([0-9][0-9]*\) .*/\1/p"; }
ps_exit() { armlet ps -a | grep "^$1 " | grep -o 'Exited([0-9-]*) [A-Za-z]*'; }

# The kernel offers cgroup2 alone: nothing mounted as v1, and v1 cannot be mounted.
v1=$(grep -c ' cgroup ' /proc/mounts)
mkdir -p /mnt/v1
if mount -t cgroup -o memory cgroup /mnt/v1 2>/dev/null; then v1="$v1 mountable"; fi
[ "$v1" = 0 ] && grep -q '^cgroup2 /sys/fs/cgroup cgroup2' /proc/mounts
check cgroup2-only $? "v1=$v1 controllers=$(cat $CG/cgroup.controllers)"

# Output and exit code of a container come back through `armlet run`.
out=$(armlet run --rm --bundle /bundles/exit exit 2>&1); rc=$?
[ "$rc" = 7 ] && [ "$out" = "hello from @MACHINE@" ]
check exit-code $? "rc=$rc out=$out"

# A running container's cgroup carries the spec's limits and holds its processes.
armlet run -d --bundle /bundles/limits limits >/dev/null 2>&1; rc=$?
i=0
until armlet logs limits 2>/dev/null | grep -q ready || [ $i -ge 150 ]; do
    sleep 0.2; i=$((i+1))
done
C=$POD/limits
pid=$(ps_pid limits)
mem=$(cat $C/memory.max 2>&1); pids=$(cat $C/pids.max 2>&1)
own=$(cat /proc/$pid/cgroup 2>&1)
cpumax=$(cat $C/cpu.max 2>&1); weight=$(cat $C/cpu.weight 2>&1); group=$(cat $C/memory.oom.group 2>&1)
# (Half the default shares give less than the default weight, 100, whichever
# shares-to-weight mapping is used: runc changed it in 1.3.2.)
[ "$rc" = 0 ] && [ "$mem" = @LIMITS_MEMORY@ ] && [ "$pids" = @LIMITS_PIDS@ ] \
    && [ "$cpumax" = "@LIMITS_CPU_MAX@" ] && [ "$weight" -ge 1 ] 2>/dev/null \
    && [ "$weight" -lt 100 ] && [ "$own" = "0::@POD@/limits" ] && [ "$group" = 1 ]
check cgroup-limits $? "rc=$rc memory.max=$mem pids.max=$pids cpu.max=$cpumax cpu.weight=$weight oom.group=$group pid=$pid cgroup=$own subtree=$(cat $POD/cgroup.subtree_control 2>&1)"

# Usage comes from the v2 files: the container holds a 4 MB string.
st=$(armlet stats limits 2>&1 | tail -n 1); kib=$(echo "$st" | awk '{ print $NF }')
[ "${kib:-0}" -ge 3900 ] 2>/dev/null
check stats $? "$st"

# exec runs in the container (its hostname, its cgroup, seen through its own
# cgroup namespace as the root) and returns the exit code.
out=$(armlet exec limits -- /bin/sh -c 'echo in $(hostname) $(cat /proc/self/cgroup); exit 5' 2>&1); rc=$?
[ "$rc" = 5 ] && [ "$out" = "in limits 0::/" ]
check exec $? "rc=$rc out=$out"

# A terminal of its own (`exec -t`) opens /dev/ptmx (5:2) and /dev/pts/N (136:N),
# which the device allowlist must let through.
out=$(armlet exec -t limits -- /bin/sh -c 'tty; echo pty-ok > $(tty)' </dev/null 2>&1); rc=$?
out=$(echo "$out" | tr -d '\r' | tr '\n' ' ')
[ "$rc" = 0 ] && echo "$out" | grep -q '^/dev/pts/[0-9]* pty-ok $'
check pty $? "rc=$rc out=$out"

# The pids limit holds for processes exec'd into the container too.
armlet exec limits -- /bin/sh -c 'for i in $(seq 30); do sleep 60 & done; true' >/dev/null 2>&1
cur=$(cat $C/pids.current 2>&1); hits=$(awk '$1 == "max" { print $2 }' $C/pids.events 2>&1)
[ "$cur" -le @LIMITS_PIDS@ ] 2>/dev/null && [ "${hits:-0}" -gt 0 ] 2>/dev/null
check pids-limit $? "pids.current=$cur max-events=$hits"

# Stopping (SIGTERM, which the container traps) and removing it removes its cgroup.
armlet stop --timeout 10 limits >/dev/null 2>&1; stop=$?
state=$(ps_exit limits)
armlet rm limits >/dev/null 2>&1; rm=$?
left=no; [ -e $C ] && left=yes
[ "$stop" = 0 ] && [ "$state" = "Exited(0) Completed" ] && [ "$rm" = 0 ] && [ "$left" = no ]
check stop-rm $? "stop=$stop state=$state rm=$rm cgroup-left=$left"

# A container allocating past its memory limit is OOM-killed, and reported so.
out=$(armlet run --bundle /bundles/oom oom 2>&1); rc=$?
state=$(ps_exit oom)
events=$(tr '\n' ' ' < $POD/oom/memory.events 2>&1)
[ "$rc" = 137 ] && [ "$state" = "Exited(137) OOMKilled" ]
check oom $? "rc=$rc state=$state memory.max=$(cat $POD/oom/memory.max 2>&1) events=$events out=$out"
armlet rm oom >/dev/null 2>&1; rm=$?
left=no; [ -e $POD/oom ] && left=yes
[ "$rm" = 0 ] && [ "$left" = no ]
check oom-rm $? "rm=$rm cgroup-left=$left"

# The RuntimeDefault seccomp profile refuses syslog(2) to a container without
# CAP_SYSLOG; unconfined, the same container reads the kernel log (which the
# guest allows anyone to): the filter, not a capability check, makes the difference.
echo 0 > /proc/sys/kernel/dmesg_restrict
off=$(armlet run --rm --bundle /bundles/seccomp-off seccomp-off 2>&1)
on=$(armlet run --rm --bundle /bundles/seccomp-on seccomp-on 2>&1)
[ "$off" = log-read ] && [ "$on" = log-refused ]
check seccomp $? "unconfined: $off; RuntimeDefault: $on"

# Devices outside the allowlist cannot be opened (here: /dev/kmsg, 1:11, made with
# mknod, which the default capabilities and the allowlist allow).
out=$(armlet run --rm --bundle /bundles/devices devices 2>&1); rc=$?
[ "$rc" != 0 ] && echo "$out" | grep -q node-made && ! echo "$out" | grep -q device-opened \
    && echo "$out" | grep -q 'Operation not permitted'
check devices $? "rc=$rc out=$out; probe lines in the kernel log: $(dmesg | grep -c armlet-devices-probe)"

# The allowed ones still work: read, written, made with mknod; /dev/full is
# opened (and refuses the write with ENOSPC, not EPERM).
out=$(armlet run --rm --bundle /bundles/devices-allowed devices-allowed 2>&1); rc=$?
[ "$rc" = 0 ] && echo "$out" | grep -q '^zero=zzz null=ok urandom=16 mknod=ok$' \
    && echo "$out" | grep -q 'No space left on device' && ! echo "$out" | grep -q 'not permitted'
check devices-allowed $? "rc=$rc out=$out"

# A privileged container may use any device (no program is attached for it).
out=$(armlet run --rm --bundle /bundles/devices-privileged devices-privileged 2>&1); rc=$?
[ "$rc" = 0 ] && echo "$out" | grep -q device-opened
check devices-privileged $? "rc=$rc out=$out"

left=$(find $POD -mindepth 1 -type d 2>&1)
[ -z "$left" ]
check no-leftover-cgroups $? "left=$left"

dump supervisor.log /run/armlet/runtime/supervisor.log
"#;

fn guest_script(arch: Arch) -> String {
    GUEST_SCRIPT
        .replace("@POD@", POD_CGROUP)
        .replace("@MACHINE@", arch.uname_machine())
        .replace("@LIMITS_MEMORY@", &LIMITS_MEMORY.to_string())
        .replace("@LIMITS_PIDS@", &LIMITS_PIDS.to_string())
        .replace(
            "@LIMITS_CPU_MAX@",
            &format!("{LIMITS_CPU_QUOTA} {LIMITS_CPU_PERIOD}"),
        )
}

/// A container of the guest's root filesystem (`/rootfs`), in the pod cgroup.
fn config(id: &str, script: &str, resources: Resources) -> ContainerConfig {
    let mut config = container(Path::new("/rootfs"), "qemu", id, &["/bin/sh", "-c", script]);
    config.cgroups_path = PathBuf::from(POD_CGROUP).join(id);
    // What armlet on a v2 board asks for (containerd's and the kubelet's v2
    // choices); the host building the spec here is v1.
    config.namespaces.cgroup = Namespace::Private;
    config.resources = Resources {
        memory_oom_group: true,
        ..resources
    };
    config
}

/// Writes the OCI bundle of `config` as `dir/bundles/<id>`, as armlet on a board of
/// `arch` would make it. Specs are built here, on x86_64, where the RuntimeDefault
/// seccomp profile names x86's syscall architectures; a board builds them natively,
/// with its own (`spec::seccomp`): the guest's are put in their place.
fn guest_bundle(dir: &Path, arch: Arch, config: &ContainerConfig) {
    let id = config
        .hostname
        .as_deref()
        .expect("test containers are named");
    let bundle = dir.join("bundles").join(id);
    fs::create_dir_all(&bundle).unwrap();
    let mut spec = build_spec(config).unwrap();
    let seccomp = spec
        .linux_mut()
        .as_mut()
        .and_then(|linux| linux.seccomp_mut().as_mut());
    if let Some(seccomp) = seccomp {
        seccomp.set_architectures(Some(match arch {
            Arch::Aarch64 => vec![SeccompArch::ScmpArchAarch64, SeccompArch::ScmpArchArm],
            Arch::Armv7 => vec![SeccompArch::ScmpArchArm],
        }));
    }
    spec.save(bundle.join("config.json")).unwrap();
}

/// The bundles the guest script runs, written under `dir/bundles`.
fn write_bundles(dir: &Path, arch: Arch) {
    let write = |config: ContainerConfig| guest_bundle(dir, arch, &config);
    let none = Resources::default;
    write(config(
        "exit",
        "echo hello from $(uname -m); exit 7",
        none(),
    ));
    // Holds 4 MB (for stats), says it is ready, and exits 0 on SIGTERM: `wait` is
    // interrupted by a trapped signal, `sleep` alone would not be.
    write(config(
        "limits",
        "trap 'exit 0' TERM; x=$(head -c 4000000 /dev/zero | tr '\\0' x); echo ready; \
         sleep 1000 & wait",
        Resources {
            memory_limit: Some(LIMITS_MEMORY),
            pids_limit: Some(LIMITS_PIDS),
            cpu_shares: Some(LIMITS_CPU_SHARES),
            cpu_quota: Some(LIMITS_CPU_QUOTA),
            cpu_period: Some(LIMITS_CPU_PERIOD),
            memory_oom_group: true,
        },
    ));
    // dd's buffer is one allocation four times the limit, filled at once: the
    // kernel kills it (the container's init) rather than anything else.
    write(config(
        "oom",
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        Resources {
            memory_limit: Some(OOM_MEMORY),
            ..Resources::default()
        },
    ));
    write(config(
        "devices",
        "mknod /tmp/kmsg c 1 11 && echo node-made && echo armlet-devices-probe > /tmp/kmsg \
         && echo device-opened",
        none(),
    ));
    write(config(
        "devices-allowed",
        "echo zero=$(head -c 3 /dev/zero | tr '\\0' z) null=$(echo x > /dev/null && echo ok) \
         urandom=$(head -c 16 /dev/urandom | wc -c | tr -d ' ') \
         mknod=$(mknod /tmp/null2 c 1 3 && echo x > /tmp/null2 && echo ok); \
         (echo x > /dev/full) 2>&1; exit 0",
        none(),
    ));
    let mut privileged = config(
        "devices-privileged",
        "mknod /tmp/kmsg-privileged c 1 11 && echo armlet-devices-privileged > /tmp/kmsg-privileged \
         && echo device-opened",
        none(),
    );
    privileged.security.privileged = true;
    write(privileged);
    let read_log = "dmesg >/dev/null 2>&1 && echo log-read || echo log-refused";
    write(config("seccomp-off", read_log, none()));
    let mut confined = config("seccomp-on", read_log, none());
    confined.security.seccomp = Seccomp::RuntimeDefault;
    write(confined);
}

/// The initramfs: the guest's busybox and `/init`, the `armlet` binary, the
/// containers' root filesystem and their bundles.
fn initramfs(kit: &GuestKit, arch: Arch, dir: &Path) -> PathBuf {
    write_bundles(dir, arch);
    let mut cpio: Cpio = guest_initramfs(kit, &guest_script(arch));
    cpio.copy("bin/armlet", &release_binary(arch.target()))
        .tree("bundles", &dir.join("bundles"));
    for sub in ["proc", "dev", "sys", "tmp", "run", "etc"] {
        cpio.dir(&format!("rootfs/{sub}"), 0o755);
    }
    cpio.copy("rootfs/bin/busybox", &kit.busybox).file(
        "rootfs/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    for applet in APPLETS {
        cpio.symlink(&format!("rootfs/bin/{applet}"), "busybox");
    }
    let path = dir.join("initramfs.cpio");
    cpio.write_to(&path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Boots the guest of `arch`, runs the checks, and asserts on every marker.
fn runtime_on_pure_cgroup_v2(arch: Arch) {
    let kit = GuestKit::find(arch).unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new(&format!("qemu-{}", arch.uname_machine()));
    let initramfs = initramfs(&kit, arch, dir.path());
    let vm = Vm::new(&kit, &initramfs);
    let console: Console = vm
        .run(&dir.path().join("console.log"))
        .unwrap_or_else(|e| panic!("{} guest: {e}", arch.uname_machine()));
    // The whole console, shown when the test fails (and with --nocapture).
    println!("{}", console.text);
    println!(
        "{} guest: booted, checked and powered off in {:.1} s",
        arch.uname_machine(),
        console.elapsed.as_secs_f64()
    );
    assert!(
        console
            .text
            .contains(&format!("machine={}", arch.uname_machine())),
        "the guest is not {}:\n{}",
        arch.uname_machine(),
        console.tail(30)
    );
    assert!(
        console.completed(),
        "the guest script did not finish (qemu {}):\n{}",
        console.status,
        console.tail(40)
    );
    let checks = console.checks();
    let find = |name: &str| -> Option<&Check> { checks.iter().find(|c| c.name == name) };
    let mut failures = Vec::new();
    for name in CHECKS {
        match find(name) {
            Some(c) if c.ok => {}
            Some(c) => failures.push(format!("{name}: failed: {}", c.detail)),
            None => failures.push(format!("{name}: not reported")),
        }
    }
    for (name, why) in KNOWN_GAPS {
        match find(name) {
            Some(c) if c.ok => failures.push(format!(
                "{name}: passes now, so the known gap ({why}) is closed: move it to CHECKS"
            )),
            Some(c) => println!("known gap {name}: {why}\n  guest saw: {}", c.detail),
            None => failures.push(format!("{name}: not reported")),
        }
    }
    for c in &checks {
        if !CHECKS.contains(&c.name.as_str()) && !KNOWN_GAPS.iter().any(|(n, _)| *n == c.name) {
            failures.push(format!("{}: reported but not asserted on", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} guest:\n  {}",
        arch.uname_machine(),
        failures.join("\n  ")
    );
}

#[test]
fn aarch64_runtime_on_pure_cgroup_v2() {
    runtime_on_pure_cgroup_v2(Arch::Aarch64);
}

#[test]
fn armv7_runtime_on_pure_cgroup_v2() {
    runtime_on_pure_cgroup_v2(Arch::Armv7);
}
