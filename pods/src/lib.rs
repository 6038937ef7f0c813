//! The kubelet's pod logic, without any I/O to the Kubernetes API.
//!
//! armlet's agent watches the pods bound to its node and, for each, makes reality
//! match the spec. Everything a kubelet decides on the way is here, as plain
//! functions and small state machines the agent's reconcile loop drives:
//!
//! - [`env`]: a container's environment (`env`, `envFrom`, downward API,
//!   ConfigMap/Secret keys, service links) with the kubelet's `$(VAR)` rules;
//! - [`container`]: a pod's container plus its image's config turned into the
//!   runtime's [`armlet_runtime::spec::ContainerConfig`] (command, user, security
//!   context, cgroup limits, mounts);
//! - [`volumes`]: the pod's volumes planned and materialised under the pod
//!   directory as the kubelet lays them out (emptyDir, hostPath, configMap,
//!   secret, downwardAPI, projected), written atomically;
//! - [`status`]: the `PodStatus` a kubelet reports for what ran;
//! - [`backoff`]: CrashLoopBackOff and image-pull back-off;
//! - [`probes`]: liveness, readiness and startup probes;
//! - [`termination`]: preStop, stop signal, grace period, SIGKILL.
//!
//! API objects a pod refers to (ConfigMaps, Secrets, Services) are read through
//! [`objects::ObjectSource`], which the agent implements over its watches.
//! Resource quantities are parsed by [`quantity`].

pub mod backoff;
pub mod container;
pub mod env;
pub mod objects;
pub mod probes;
pub mod quantity;
pub mod status;
pub mod termination;
pub mod volumes;

/// `<name>_<namespace>(<uid>)`: how the kubelet names a pod in messages
/// (`format.Pod`), e.g. in `back-off 10s restarting failed container=c pod=…`.
pub fn pod_display_name(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let meta = &pod.metadata;
    format!(
        "{}_{}({})",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    //! Pods are external input: whatever the API (or a manifest file) hands
    //! over, every entry point answers with a value or a precise error.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use k8s_openapi::api::core::v1::Pod;

    use crate::objects::MapObjects;
    use crate::testutil::pod;

    struct Join;
    impl volumes::SubPaths for Join {
        fn prepare(
            &self,
            _: &str,
            volume_path: &Path,
            sub: &str,
            _: &str,
            _: usize,
        ) -> Result<PathBuf, volumes::VolumeError> {
            Ok(volume_path.join(sub))
        }
    }

    use super::*;

    const ODD_PODS: &[&str] = &[
        "{}",
        "metadata: {}\nspec: {containers: []}",
        "spec:\n  containers: [{name: ''}]",
        "spec:\n  containers:\n  - name: c\n    env: [{name: A}, {name: B, valueFrom: {}}, {name: '', value: '$('}]\n    envFrom: [{}, {prefix: '1'}]",
        "spec:\n  containers:\n  - name: c\n    command: []\n    args: ['$(', '$$', '$(A']\n    workingDir: ''\n    volumeMounts: [{name: v, mountPath: ''}]\n  volumes: [{name: v}]",
        "spec:\n  containers:\n  - name: c\n    resources: {limits: {cpu: '-1', memory: 'x'}, requests: {cpu: '1e400'}}\n    livenessProbe: {}\n    readinessProbe: {httpGet: {port: -1}}\n    startupProbe: {tcpSocket: {port: ''}}\n    lifecycle: {preStop: {}}",
        "spec:\n  securityContext: {runAsUser: -5, fsGroup: 99999999999, supplementalGroups: [-1]}\n  containers:\n  - name: c\n    securityContext: {capabilities: {add: ['']}, seccompProfile: {type: ''}}",
        "metadata: {uid: '../../..', name: '..'}\nspec:\n  hostname: '...'\n  terminationGracePeriodSeconds: -1\n  restartPolicy: Sometimes\n  initContainers: [{name: i, restartPolicy: Always}]\n  containers: [{name: c, ports: [{containerPort: -1, hostPort: 70000}]}]\n  volumes: [{name: a, emptyDir: {sizeLimit: '-1'}}, {name: b, configMap: {name: '', items: [{key: '', path: ''}]}}, {name: c, secret: {}}, {name: d, projected: {sources: [{}]}}, {name: e, downwardAPI: {items: [{path: x}]}}]",
    ];

    fn all_containers(p: &Pod) -> Vec<k8s_openapi::api::core::v1::Container> {
        p.spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .cloned()
            .collect()
    }

    #[test]
    fn malformed_pods_never_panic_any_entry_point() {
        let objects = MapObjects::default();
        let node = env::NodeAllocatable::default();
        let ips = vec!["10.42.0.9".to_owned()];
        let runtime = container::RuntimeInputs {
            rootfs: "/r".into(),
            cgroups_path: "/c".into(),
            namespaces: armlet_runtime::spec::Namespaces {
                net: armlet_runtime::spec::Namespace::Private,
                ipc: armlet_runtime::spec::Namespace::Private,
                uts: armlet_runtime::spec::Namespace::Private,
                pid: armlet_runtime::spec::Namespace::Private,
                cgroup: armlet_runtime::spec::Namespace::Private,
            },
            shm: None,
            hostname: "h".into(),
            etc_hosts: None,
            etc_hostname: None,
            resolv_conf: None,
            termination_log: None,
            cgroup_v2: false,
            memory_capacity: 0,
            seccomp_root: "/s".into(),
        };
        for yaml in ODD_PODS {
            let p = pod(yaml);
            let ctx = env::PodContext {
                pod: &p,
                host_ips: &ips,
                pod_ips: &ips,
                node: &node,
            };
            let _ = volumes::plan(&p, Path::new("/var/lib/kubelet"), &Default::default());
            let _ = container::pod_hostname(&p, "cluster.local");
            let _ = container::host_ports(&p);
            let _ = status::qos_class(&p);
            let _ = status::pod_status(&status::StatusInput {
                pod: &p,
                host_ips: &ips,
                pod_ips: &[],
                containers: &[],
                start_failures: &BTreeMap::new(),
                probes: &Default::default(),
                terminal: true,
                now: k8s_openapi::chrono::Utc::now(),
            });
            for c in all_containers(&p) {
                let env = env::container_env(&ctx, &c, &objects).unwrap_or_default();
                let _ = container::build(&container::ContainerInput {
                    pod: &p,
                    container: &c,
                    env: &env,
                    image: &Default::default(),
                    users: &Default::default(),
                    volumes: &BTreeMap::new(),
                    subpaths: &Join,
                    runtime: &runtime,
                });
                for kind in [
                    probes::ProbeKind::Liveness,
                    probes::ProbeKind::Readiness,
                    probes::ProbeKind::Startup,
                ] {
                    if let Some(probe) = kind.of(&c) {
                        let _ = probes::probe_handler(probe, &c, Some("10.42.0.9"));
                        let _ = probes::ProbeWorker::new(kind, probe);
                    }
                }
                let (mut stop, _) = termination::ContainerStop::for_container(
                    &p,
                    &c,
                    termination::KillReason::Stop,
                    None,
                    15,
                    None,
                );
                let _ = stop.poll(Instant::now());
                let _ = backoff::container_key(&p, &c);
                let _ = backoff::PullPolicy::of(&c);
            }
        }
    }
}
