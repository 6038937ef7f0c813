use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxNamespaceType, LinuxSeccompAction, LinuxSyscall, PosixRlimitType, Spec,
};

use super::*;

fn pod_container() -> ContainerConfig {
    ContainerConfig {
        rootfs: PathBuf::from("/var/lib/armlet/rootfs/c1"),
        args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["FOO=bar".into()],
        working_dir: None,
        user: User::default(),
        hostname: Some("web-0".into()),
        tty: false,
        mounts: vec![BindMount {
            source: PathBuf::from("/var/lib/armlet/pods/p1/etc-hosts"),
            destination: PathBuf::from("/etc/hosts"),
            read_only: false,
        }],
        shm: None,
        namespaces: Namespaces {
            net: Namespace::Join("/run/armlet/ns/p1/net".into()),
            ipc: Namespace::Join("/run/armlet/ns/p1/ipc".into()),
            uts: Namespace::Join("/run/armlet/ns/p1/uts".into()),
            pid: Namespace::Private,
            cgroup: Namespace::Host,
        },
        cgroups_path: PathBuf::from("/armlet/pod-p1/c1"),
        resources: Resources::default(),
        security: Security::default(),
    }
}

fn caps_of(spec: &Spec) -> HashSet<Capability> {
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    let bounding = caps.bounding().clone().unwrap();
    assert_eq!(caps.effective().as_ref(), Some(&bounding));
    assert_eq!(caps.permitted().as_ref(), Some(&bounding));
    bounding
}

fn names(list: &[&str]) -> HashSet<Capability> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn mount_types(spec: &Spec) -> Vec<(String, String)> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.destination().to_string_lossy().into_owned(),
                m.typ().clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn seccomp_rules(spec: &Spec) -> Vec<LinuxSyscall> {
    let linux = spec.linux().as_ref().unwrap();
    linux
        .seccomp()
        .as_ref()
        .unwrap()
        .syscalls()
        .clone()
        .unwrap()
}

fn denied_names(spec: &Spec) -> HashSet<String> {
    seccomp_rules(spec)
        .iter()
        .filter(|r| r.args().is_none() && r.errno_ret() == Some(1))
        .flat_map(|r| r.names().clone())
        .collect()
}

#[test]
fn a_plain_container_gets_containerds_defaults() {
    let spec = build_spec(&pod_container()).unwrap();
    assert_eq!(caps_of(&spec), names(DEFAULT_CAPABILITIES));
    assert_eq!(caps_of(&spec).len(), 14);

    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.args().as_ref().unwrap()[0], "/bin/sh");
    assert_eq!(process.cwd(), &PathBuf::from("/"));
    assert_eq!(process.no_new_privileges(), None, "absent means false");
    let caps = process.capabilities().as_ref().unwrap();
    assert_eq!(caps.inheritable().as_ref().map(|c| c.len()), Some(0));
    assert_eq!(caps.ambient().as_ref().map(|c| c.len()), Some(0));
    assert_eq!(
        process.env().as_ref().unwrap(),
        &vec![DEFAULT_PATH.to_owned(), "FOO=bar".to_owned()]
    );
    let rlimits = process.rlimits().as_ref().unwrap();
    assert_eq!(rlimits.len(), 1);
    assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
    assert_eq!((rlimits[0].soft(), rlimits[0].hard()), (1024, 1024));

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.masked_paths().as_ref().unwrap().len(),
        MASKED_PATHS.len()
    );
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_owned())
    );
    assert!(
        linux.seccomp().is_none(),
        "Unconfined is Kubernetes' default"
    );
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));

    let mounts = mount_types(&spec);
    let expected: Vec<(String, String)> = [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup"),
        ("/dev/shm", "tmpfs"),
        ("/etc/hosts", "bind"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(mounts, expected);
    let sys = &spec.mounts().as_ref().unwrap()[4];
    assert!(sys.options().as_ref().unwrap().contains(&"ro".to_owned()));
}

#[test]
fn pod_namespaces_are_joined_by_path_and_host_ones_left_out() {
    let spec = build_spec(&pod_container()).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let find = |t| ns.iter().find(|n| n.typ() == t);
    assert_eq!(
        find(LinuxNamespaceType::Network).unwrap().path().as_deref(),
        Some(std::path::Path::new("/run/armlet/ns/p1/net"))
    );
    assert!(find(LinuxNamespaceType::Pid).unwrap().path().is_none());
    assert!(find(LinuxNamespaceType::Mount).is_some());

    let mut host = pod_container();
    host.namespaces = Namespaces {
        net: Namespace::Host,
        ipc: Namespace::Host,
        uts: Namespace::Host,
        pid: Namespace::Host,
        cgroup: Namespace::Host,
    };
    let spec = build_spec(&host).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let types: Vec<_> = ns.iter().map(|n| n.typ()).collect();
    assert_eq!(types, vec![LinuxNamespaceType::Mount]);
    assert_eq!(
        spec.hostname(),
        &None,
        "the host's UTS namespace keeps its name"
    );
}

#[test]
fn privileged_gets_everything_and_no_masks() {
    let mut c = pod_container();
    c.security.privileged = true;
    c.security.seccomp = Seccomp::RuntimeDefault;
    c.security.allow_privilege_escalation = Some(false);
    let spec = build_spec(&c).unwrap();
    assert_eq!(caps_of(&spec).len(), ALL_CAPABILITIES.len());
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().is_none());
    assert!(linux.readonly_paths().is_none());
    assert!(linux.seccomp().is_none());
    let devices = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].allow());
    assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), None);
    let sys = &spec.mounts().as_ref().unwrap()[4];
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_owned()));
}

#[test]
fn capabilities_add_and_drop_like_kubernetes() {
    let mut c = pod_container();
    c.security.drop_capabilities = vec!["ALL".into()];
    c.security.add_capabilities = vec!["NET_BIND_SERVICE".into(), "CAP_NET_ADMIN".into()];
    let spec = build_spec(&c).unwrap();
    assert_eq!(caps_of(&spec), names(&["NET_BIND_SERVICE", "NET_ADMIN"]));

    c.security.drop_capabilities = vec!["net_raw".into()];
    c.security.add_capabilities = vec![];
    let caps = caps_of(&build_spec(&c).unwrap());
    assert_eq!(caps.len(), 13);
    assert!(!caps.contains(&Capability::NetRaw));

    c.security.add_capabilities = vec!["ALL".into()];
    assert_eq!(
        caps_of(&build_spec(&c).unwrap()).len(),
        ALL_CAPABILITIES.len()
    );

    c.security.add_capabilities = vec!["FLY".into()];
    let err = build_spec(&c).unwrap_err();
    assert!(
        matches!(err, SpecError::UnknownCapability(ref n) if n == "FLY"),
        "{err}"
    );
}

#[test]
fn security_context_flags_reach_the_spec() {
    let mut c = pod_container();
    c.security.allow_privilege_escalation = Some(false);
    c.security.read_only_root_filesystem = true;
    c.security.oom_score_adj = Some(-997);
    c.user = User {
        uid: 1000,
        gid: 2000,
        additional_gids: vec![3000],
    };
    c.working_dir = Some("/srv".into());
    c.env.push("PATH=/custom".into());
    let spec = build_spec(&c).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.oom_score_adj(), Some(-997));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 2000));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[3000u32][..]));
    assert_eq!(p.cwd(), &PathBuf::from("/srv"));
    assert_eq!(
        p.env().as_ref().unwrap(),
        &vec!["FOO=bar".to_owned(), "PATH=/custom".to_owned()]
    );
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
}

#[test]
fn cgroup_v2_choices_reach_the_spec() {
    let mut c = pod_container();
    let spec = build_spec(&c).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let has_cgroupns = |l: &oci_spec::runtime::Linux| {
        l.namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    };
    assert!(!has_cgroupns(linux));
    assert_eq!(linux.resources().as_ref().unwrap().unified(), &None);

    c.namespaces.cgroup = Namespace::Private;
    c.resources.memory_oom_group = true;
    let spec = build_spec(&c).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(has_cgroupns(linux));
    let unified = linux
        .resources()
        .as_ref()
        .unwrap()
        .unified()
        .clone()
        .unwrap();
    assert_eq!(
        unified.get("memory.oom.group").map(String::as_str),
        Some("1")
    );
}

#[test]
fn resources_become_cgroup_limits() {
    let mut c = pod_container();
    c.resources = Resources {
        cpu_shares: Some(cpu_shares(250)),
        cpu_quota: Some(cpu_quota(500, DEFAULT_CPU_PERIOD)),
        cpu_period: Some(DEFAULT_CPU_PERIOD),
        memory_limit: Some(64 << 20),
        pids_limit: Some(100),
        memory_oom_group: false,
    };
    let spec = build_spec(&c).unwrap();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.shares(), Some(256));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(100_000));
    let mem = r.memory().unwrap();
    assert_eq!(mem.limit(), Some(64 << 20));
    assert_eq!(mem.swap(), Some(64 << 20), "no swap beyond the limit");
    assert_eq!(r.pids().unwrap().limit(), 100);
    let devices = r.devices().clone().unwrap();
    assert!(!devices[0].allow(), "device access starts from deny-all");
    assert!(devices.iter().any(|d| d.allow() && d.major() == Some(136)));
}

#[test]
fn kubelet_cpu_conversions() {
    assert_eq!(cpu_shares(0), 2);
    assert_eq!(cpu_shares(1), 2);
    assert_eq!(cpu_shares(100), 102);
    assert_eq!(cpu_shares(1000), 1024);
    assert_eq!(cpu_shares(u64::MAX), 262_144);
    assert_eq!(cpu_quota(0, DEFAULT_CPU_PERIOD), 0);
    assert_eq!(cpu_quota(1, DEFAULT_CPU_PERIOD), 1000);
    assert_eq!(cpu_quota(100, DEFAULT_CPU_PERIOD), 10_000);
    assert_eq!(cpu_quota(2500, DEFAULT_CPU_PERIOD), 250_000);
    // Absurd inputs saturate instead of overflowing.
    assert_eq!(cpu_quota(u64::MAX, u64::MAX), (u64::MAX / 1000) as i64);
}

#[test]
fn bad_descriptions_are_errors() {
    let mut c = pod_container();
    c.args.clear();
    assert!(matches!(build_spec(&c), Err(SpecError::NoCommand)));

    let mut c = pod_container();
    c.rootfs = "rootfs".into();
    assert!(matches!(
        build_spec(&c),
        Err(SpecError::RelativePath { what: "rootfs", .. })
    ));

    let mut c = pod_container();
    c.env.push("NOEQUALS".into());
    assert!(matches!(build_spec(&c), Err(SpecError::BadEnv(_))));

    let mut c = pod_container();
    c.mounts[0].destination = "etc/hosts".into();
    assert!(matches!(
        build_spec(&c),
        Err(SpecError::RelativePath { .. })
    ));

    let mut c = pod_container();
    c.namespaces.net = Namespace::Join("ns/net".into());
    assert!(matches!(
        build_spec(&c),
        Err(SpecError::RelativePath { .. })
    ));
}

#[test]
fn runtime_default_seccomp_denies_unless_the_capability_is_held() {
    let mut c = pod_container();
    c.security.seccomp = Seccomp::RuntimeDefault;
    let spec = build_spec(&c).unwrap();
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
    let denied = denied_names(&spec);
    for name in [
        "mount",
        "unshare",
        "setns",
        "ptrace",
        "reboot",
        "init_module",
        "keyctl",
        "bpf",
    ] {
        assert!(denied.contains(name), "{name} must be denied");
    }
    for name in ["read", "write", "clone", "execve", "chown", "kill"] {
        assert!(!denied.contains(name), "{name} must be allowed");
    }
    let rules = seccomp_rules(&spec);
    let clone_rules: Vec<_> = rules
        .iter()
        .filter(|r| r.names() == &vec!["clone".to_owned()])
        .collect();
    assert_eq!(clone_rules.len(), 7, "one rule per CLONE_NEW* flag");
    let clone3 = rules
        .iter()
        .find(|r| r.names() == &vec!["clone3".to_owned()])
        .unwrap();
    assert_eq!(
        clone3.errno_ret(),
        Some(38),
        "ENOSYS makes libc fall back to clone"
    );

    c.security.add_capabilities = vec!["SYS_ADMIN".into(), "SYS_PTRACE".into()];
    let spec = build_spec(&c).unwrap();
    let denied = denied_names(&spec);
    assert!(!denied.contains("mount") && !denied.contains("ptrace"));
    assert!(denied.contains("reboot") && denied.contains("keyctl"));
    assert!(
        !seccomp_rules(&spec)
            .iter()
            .any(|r| r.names() == &vec!["clone".to_owned()])
    );
}

#[test]
fn the_spec_serialises_as_runtimes_expect() {
    let mut c = pod_container();
    c.security.seccomp = Seccomp::RuntimeDefault;
    let spec = build_spec(&c).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    for needle in [
        "\"CAP_CHOWN\"",
        "\"ociVersion\":\"1.0.2\"",
        "\"SCMP_ACT_ERRNO\"",
        "\"SCMP_CMP_MASKED_EQ\"",
        "\"cgroupsPath\":\"/armlet/pod-p1/c1\"",
    ] {
        assert!(json.contains(needle), "{needle} missing from {json}");
    }
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
}
