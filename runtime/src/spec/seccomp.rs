//! armlet's `RuntimeDefault` seccomp profile.
//!
//! It withholds the syscalls that containerd's and Docker's default profiles withhold
//! from an unprivileged container (kernel modules, mounts, namespaces, clock
//! setting, tracing other processes, keyrings, BPF, reboot...), each unless the
//! container holds the capability that would make the call legitimate, exactly as
//! those profiles do. Unlike them it is written as a deny list: the same calls are
//! refused, in a filter a fraction of the size, which matters on a 1 GiB board
//! running many containers. Calls the filter refuses fail with `EPERM`; `clone3`
//! fails with `ENOSYS` so that libc falls back to `clone`, whose namespace flags
//! the filter can inspect.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::SpecError;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The `CLONE_NEW*` flags of clone(2): creating namespaces needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// Syscalls refused unless the container holds the given capability
/// (`None`: refused to every unprivileged container).
const DENIED: &[(Option<Capability>, &[&str])] = &[
    (
        Some(Capability::SysAdmin),
        &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "unshare",
            "setns",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "name_to_handle_at",
            "bpf",
            "perf_event_open",
        ],
    ),
    (
        Some(Capability::SysModule),
        &[
            "create_module",
            "delete_module",
            "finit_module",
            "init_module",
            "get_kernel_syms",
            "query_module",
        ],
    ),
    (
        Some(Capability::SysBoot),
        &["reboot", "kexec_load", "kexec_file_load"],
    ),
    (
        Some(Capability::SysTime),
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
            "adjtimex",
        ],
    ),
    (
        Some(Capability::SysPtrace),
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
    ),
    (Some(Capability::SysPacct), &["acct"]),
    (Some(Capability::SysRawio), &["iopl", "ioperm"]),
    (Some(Capability::Syslog), &["syslog"]),
    (
        Some(Capability::SysNice),
        &["mbind", "set_mempolicy", "get_mempolicy", "move_pages"],
    ),
    (Some(Capability::DacReadSearch), &["open_by_handle_at"]),
    (
        None,
        &[
            "add_key",
            "keyctl",
            "request_key",
            "nfsservctl",
            "swapon",
            "swapoff",
            "sysfs",
            "_sysctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "vm86",
            "vm86old",
        ],
    ),
];

fn syscalls(
    names: &[&str],
    action: LinuxSeccompAction,
    errno: u32,
) -> Result<LinuxSyscall, SpecError> {
    Ok(LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action)
        .errno_ret(errno)
        .build()?)
}

/// The architectures whose syscalls the filter covers: the native one and the
/// compat one it can run, so a 32-bit binary cannot step around the filter.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else if cfg!(target_arch = "arm") {
        vec![Arch::ScmpArchArm]
    } else {
        Vec::new()
    }
}

/// The `RuntimeDefault` profile for a container holding `caps`.
pub fn runtime_default(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    let mut rules = Vec::new();
    let mut denied: Vec<&str> = Vec::new();
    for (cap, names) in DENIED {
        if cap.is_none_or(|c| !caps.contains(&c)) {
            denied.extend_from_slice(names);
        }
    }
    rules.push(syscalls(&denied, LinuxSeccompAction::ScmpActErrno, EPERM)?);
    if !caps.contains(&Capability::SysAdmin) {
        // clone with any CLONE_NEW* flag. libseccomp compares "arg & mask == value",
        // so "any of these bits set" takes one rule per bit (rules are ORed). On
        // every architecture armlet runs on the flags are the first argument.
        for flag in CLONE_NAMESPACE_FLAGS {
            rules.push(
                LinuxSyscallBuilder::default()
                    .names(vec!["clone".to_owned()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(EPERM)
                    .args(vec![
                        LinuxSeccompArgBuilder::default()
                            .index(0usize)
                            .value(*flag)
                            .value_two(*flag)
                            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                            .build()?,
                    ])
                    .build()?,
            );
        }
    }
    rules.push(syscalls(
        &["clone3"],
        LinuxSeccompAction::ScmpActErrno,
        ENOSYS,
    )?);
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(rules)
        .build()?)
}
