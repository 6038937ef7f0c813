//! `armlet`: the node daemon and its command-line tools, in one static binary.

mod agent;
mod check_config;
mod images;
mod ops;
mod terminal;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The version line: crate version plus the target it was built for, so a user
/// (and the demo) can tell an aarch64 build from an armv7 one.
pub(crate) const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("ARMLET_TARGET"), ")");

/// Where the container supervisor keeps its socket and state (tmpfs).
const DEFAULT_RUNTIME_ROOT: &str = "/run/armlet/runtime";

/// A Kubernetes node for ARM single-board computers that joins K3s clusters.
#[derive(Debug, Parser)]
#[command(name = "armlet", version = VERSION, about, arg_required_else_help = true)]
struct Cli {
    /// The container supervisor's directory.
    #[arg(long, global = true, default_value = DEFAULT_RUNTIME_ROOT, env = "ARMLET_RUNTIME_ROOT")]
    runtime_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a K3s cluster and keep this node in it (k3s agent's flags and
    /// config file).
    Agent(Box<agent::AgentCmd>),
    /// Run the container supervisor (started by the agent; runs until SIGTERM).
    Supervise {
        /// Rotate a container's log file when it reaches this many bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        log_max_size: u64,
        /// Keep at most this many log files per container.
        #[arg(long, default_value_t = 5)]
        log_max_files: usize,
    },
    /// Run a container from an OCI bundle: create, start and wait for it, then
    /// print its output and exit with its exit code (as `crun run` does).
    /// Starts the supervisor when none runs.
    Run {
        /// Container id.
        id: String,
        /// The bundle directory (holding `config.json`).
        #[arg(long, default_value = ".")]
        bundle: PathBuf,
        /// The CRI log file; `<runtime-root>/logs/<id>.log` by default.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Remove the container once it has exited.
        #[arg(long)]
        rm: bool,
        /// Return once the container runs instead of waiting for it.
        #[arg(short, long, conflicts_with = "rm")]
        detach: bool,
        /// A label, key=value (repeatable); the io.kubernetes.pod.* keys make
        /// the container part of a pod in `armlet pods`.
        #[arg(short, long = "label")]
        label: Vec<String>,
    },
    /// List pods (containers grouped by their pod labels) with each pod's CPU
    /// and memory usage.
    Pods,
    /// Ask about or upgrade the running container supervisor.
    #[command(subcommand)]
    Supervisor(SupervisorCommand),
    /// List containers with their state.
    Ps {
        /// Also list exited containers.
        #[arg(short, long)]
        all: bool,
    },
    /// Show a container's logs.
    Logs {
        /// Container id.
        id: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Prefix lines with their RFC 3339 timestamps.
        #[arg(long)]
        timestamps: bool,
        /// Keep printing new lines until the container has exited.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command in a running container, with this terminal's stdin, stdout
    /// and stderr; exits with the command's exit code.
    Exec {
        /// Container id.
        id: String,
        /// Extra environment, NAME=value (repeatable).
        #[arg(short, long = "env")]
        env: Vec<String>,
        /// Give the command a terminal (this terminal, set raw while it runs).
        #[arg(short, long)]
        tty: bool,
        /// Command and arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Show a running container's CPU and memory usage.
    Stats {
        /// Container id.
        id: String,
    },
    /// Stop a container: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Container id.
        id: String,
        /// Seconds to wait after SIGTERM.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Pull, list, remove, import and inspect images.
    Images(ImagesArgs),
    /// Remove a container (killing it if it still runs).
    Rm {
        /// Container ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Check that this kernel and system can run armlet (kernel options,
    /// cgroups, overlay, vxlan, nftables, clock).
    CheckConfig,
}

#[derive(Debug, clap::Args)]
struct ImagesArgs {
    /// The image directory (content store, layers, snapshots, metadata).
    #[arg(long, default_value = images::DEFAULT_IMAGES_ROOT, env = "ARMLET_IMAGES_ROOT")]
    root: PathBuf,
    /// k3s's registries.yaml (mirrors, rewrites, auth, TLS); a missing file
    /// means none.
    #[arg(long, default_value = images::DEFAULT_REGISTRIES, env = "ARMLET_REGISTRIES")]
    registries: PathBuf,
    /// Pull and unpack for this platform (os/arch[/variant]) instead of this
    /// node's.
    #[arg(long)]
    platform: Option<String>,
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// Pull an image and unpack its layers.
    Pull {
        /// The image reference (`busybox`, `ghcr.io/org/app:1.2`, `...@sha256:...`).
        reference: String,
        /// A Docker config JSON with credentials (a `.dockerconfigjson` pull
        /// secret's content); repeatable.
        #[arg(long = "auth-file")]
        auth_file: Vec<PathBuf>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only the names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images, and the blobs and layers only they used.
    #[command(alias = "remove")]
    Rm {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Import image tarballs (docker-archive or OCI archive; a directory means
    /// every tarball in it). Tarballs imported before cost a stat.
    Import {
        /// Tarballs or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show an image's record, manifest, config and layers as JSON.
    Inspect {
        /// Image name.
        name: String,
    },
    /// Remove unused images if the disk is fuller than --high percent, until
    /// it is at most --low percent (the kubelet's image GC).
    Gc {
        /// Start above this use, in percent.
        #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
        high: u8,
        /// Stop at this use, in percent.
        #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
        low: u8,
        /// Images never to remove (repeatable).
        #[arg(long)]
        keep: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SupervisorCommand {
    /// Show the running supervisor's version and pid.
    Status,
    /// Replace the running supervisor's program (an upgraded armlet) in place:
    /// same pid, every container kept, exit codes still collected.
    Upgrade {
        /// The program to switch to; this armlet binary by default.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    // glibc gives every thread that allocates an arena of its own, and what
    // is freed stays in them: the agent's blocking pool would keep memory
    // of every busy moment. Two arenas keep the resident set near what is
    // in use.
    // SAFETY: called before any other thread exists; mallopt sets a tunable.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    let root = cli.runtime_root;
    match cli.command {
        Command::Agent(cmd) => agent::run(&cmd, &root),
        Command::Supervise {
            log_max_size,
            log_max_files,
        } => ops::supervise(root, log_max_size, log_max_files),
        Command::Run {
            id,
            bundle,
            log,
            rm,
            detach,
            label,
        } => {
            let options = ops::RunOptions {
                bundle,
                log,
                rm,
                detach,
                labels: label,
            };
            let code = ops::run(&root, &id, &options)?;
            std::process::exit(code);
        }
        Command::Supervisor(SupervisorCommand::Status) => ops::supervisor_status(&root),
        Command::Supervisor(SupervisorCommand::Upgrade { binary }) => {
            ops::supervisor_upgrade(&root, binary)
        }
        Command::Ps { all } => ops::ps(&root, all),
        Command::Pods => ops::pods(&root),
        Command::Logs {
            id,
            tail,
            timestamps,
            follow,
        } => ops::logs(&root, &id, tail, timestamps, follow),
        Command::Exec {
            id,
            env,
            tty,
            command,
        } => {
            let code = ops::exec(&root, &id, &env, &command, tty)?;
            std::process::exit(code);
        }
        Command::Stats { id } => ops::stats(&root, &id),
        Command::Stop { id, timeout } => ops::stop(&root, &id, timeout),
        Command::Rm { ids } => ops::rm(&root, &ids),
        Command::CheckConfig => std::process::exit(check_config::run()),
        Command::Images(args) => {
            let ctx = images::ImagesContext {
                root: args.root,
                registries: args.registries,
                platform: args.platform,
            };
            match args.command {
                ImagesCommand::Pull {
                    reference,
                    auth_file,
                } => images::pull(&ctx, &reference, &auth_file),
                ImagesCommand::Ls { quiet } => images::ls(&ctx, quiet),
                ImagesCommand::Rm { names } => images::rm(&ctx, &names),
                ImagesCommand::Import { paths } => images::import(&ctx, &paths),
                ImagesCommand::Inspect { name } => images::inspect(&ctx, &name),
                ImagesCommand::Gc { high, low, keep } => images::gc(
                    &ctx,
                    armlet_image::service::GcPolicy {
                        high_percent: high,
                        low_percent: low,
                        ..armlet_image::service::GcPolicy::default()
                    },
                    &keep,
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_names_the_build_target() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.ends_with(&format!("({})", env!("ARMLET_TARGET"))));
    }

    #[test]
    fn operator_commands_parse() {
        let cli = Cli::try_parse_from(["armlet", "logs", "c1", "--tail", "5"]).unwrap();
        assert_eq!(cli.runtime_root, PathBuf::from(DEFAULT_RUNTIME_ROOT));
        assert!(matches!(cli.command, Command::Logs { ref id, tail: Some(5), .. } if id == "c1"));
        assert!(Cli::try_parse_from(["armlet", "rm"]).is_err());
        let cli = Cli::try_parse_from(["armlet", "exec", "c1", "-e", "A=1", "--", "sh", "-c", "x"])
            .unwrap();
        assert!(
            matches!(cli.command, Command::Exec { ref command, ref env, .. } if command.len() == 3 && env == &["A=1"])
        );
        assert!(Cli::try_parse_from(["armlet", "exec", "c1"]).is_err());
        let cli = Cli::try_parse_from(["armlet", "run", "--bundle", "/b", "--rm", "c1"]).unwrap();
        assert!(
            matches!(cli.command, Command::Run { ref id, ref bundle, rm: true, detach: false, .. } if id == "c1" && bundle == Path::new("/b"))
        );
        assert!(Cli::try_parse_from(["armlet", "run", "-d", "--rm", "c1"]).is_err());
        assert!(Cli::try_parse_from(["armlet", "stop", "c1", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn images_commands_parse() {
        let cli = Cli::try_parse_from([
            "armlet",
            "images",
            "--root",
            "/r",
            "pull",
            "busybox",
            "--auth-file",
            "/s.json",
        ])
        .unwrap();
        let Command::Images(args) = cli.command else {
            panic!("not images");
        };
        assert_eq!(args.root, PathBuf::from("/r"));
        assert!(matches!(
            args.command,
            ImagesCommand::Pull { ref reference, ref auth_file } if reference == "busybox" && auth_file.len() == 1
        ));
        assert!(Cli::try_parse_from(["armlet", "images", "rm"]).is_err());
        assert!(Cli::try_parse_from(["armlet", "images", "gc", "--high", "200"]).is_err());
        let cli = Cli::try_parse_from(["armlet", "images", "ls", "-q"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Images(ImagesArgs {
                command: ImagesCommand::Ls { quiet: true },
                ..
            })
        ));
    }

    #[test]
    fn logs_follow_parses() {
        for flag in ["-f", "--follow"] {
            let cli = Cli::try_parse_from(["armlet", "logs", flag, "--tail", "10", "c1"]).unwrap();
            assert!(matches!(
                cli.command,
                Command::Logs { ref id, tail: Some(10), follow: true, .. } if id == "c1"
            ));
        }
        let cli = Cli::try_parse_from(["armlet", "logs", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Logs { follow: false, .. }));
    }
}
