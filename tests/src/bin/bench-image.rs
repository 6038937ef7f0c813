//! `bench-image`: how fast armlet pulls and unpacks an image from a registry,
//! beside `skopeo copy` + `umoci unpack`, and how fast a restart with a
//! gigabyte of already-imported air-gap tarballs is.
//!
//! Run by `cargo xtask bench image` (as root). A local registry (Debian's
//! docker-registry on a loopback port, plain HTTP) holds a test image of five
//! data layers (~100 MB of text-like content, gzip ~2.4×) over a busybox
//! layer, as an index for three platforms; every tool pulls the host's
//! (linux/amd64). Each run starts from empty directories, all on one file
//! system; armlet and the peers alternate who goes first, so that the page
//! cache and a concurrent build on this 2-core machine favour neither.
//!
//! - armlet: `armlet images --root <dir> --registries <registries.yaml> pull
//!   <ref>`, which fetches and unpacks every layer (exit 0 = done).
//! - peers: `skopeo copy docker://<ref> oci:<dir>:1`, then `umoci unpack`;
//!   timed together and each alone.
//!
//! Then the air-gap case: four 256 MiB docker-archive tarballs in a directory,
//! imported once by `armlet images --root <dir> import <dir>` (timed), then
//! imported again several times: the import ledger should make that a `stat`
//! per tarball (goal < 50 ms).
//!
//! Timings are printed, not judged; the goals are reported as met or not.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use armlet_tests::bench::{BenchArgs, Stats};
use armlet_tests::node::TempDir;
use armlet_tests::oci::{docker_archive, sized_image};
use armlet_tests::registry::{TestRegistry, plain_http_registries_yaml};

/// Errors end the run with a message; the guards clean up on the way out.
type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Pulls per tool unless `--runs` says otherwise: each moves ~45 MB and writes
/// ~150 MB, so a handful is what a shared machine affords.
const DEFAULT_RUNS: usize = 5;

/// Data layers of the test image, and their size in all (uncompressed).
const LAYERS: usize = 5;
const IMAGE_BYTES: u64 = 100 << 20;

/// The repository and tag the image is pushed as.
const REPO: &str = "bench/app:1";

/// Air-gap tarballs: how many, and the size of each.
const TARBALLS: usize = 4;
const TARBALL_BYTES: u64 = 256 << 20;

/// Repeated imports of the already-imported directory.
const IMPORT_RUNS: usize = 10;

/// The goals the issue sets.
const PULL_GOAL: f64 = 1.5;
const REIMPORT_GOAL_MS: f64 = 50.0;

const USAGE: &str = "usage: bench-image --armlet <release armlet binary> [--runs N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = BenchArgs::parse(std::env::args().skip(1), USAGE, DEFAULT_RUNS)?;
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: armlet and umoci unpack layers with their owners".into());
    }
    let armlet = Armlet {
        bin: args.binary.clone(),
    };
    armlet.check()?;

    let dir = TempDir::new("bench-image");
    let registry = TestRegistry::plain();
    let started = Instant::now();
    let image = sized_image(&dir.path().join("layout"), "1", LAYERS, IMAGE_BYTES);
    let built = started.elapsed();
    let started = Instant::now();
    registry.push(&image.dir, "1", REPO);
    println!(
        "test image: {LAYERS} data layers + busybox, {} unpacked, {} gzip (built in {:.1} s, \
         pushed in {:.1} s)",
        mib(image.uncompressed_bytes),
        mib(image.compressed_bytes),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    fs::remove_dir_all(&image.dir)?;
    let reference = format!("{}/{REPO}", registry.host());
    let registries = dir.path().join("registries.yaml");
    fs::write(&registries, plain_http_registries_yaml(&[&registry.host()]))?;

    // One untimed pull each: proves both work (with the error if not) and
    // warms the registry's files and the tools' binaries alike.
    let runs = dir.path().join("runs");
    // What each left on disk shows that both did the whole job.
    let scratch = runs.join("warm-up");
    armlet.pull(&scratch, &registries, &reference)?;
    let armlet_bytes = disk_bytes(&scratch);
    clean(&scratch);
    peers_pull(&scratch, &reference)?;
    let peer_bytes = disk_bytes(&scratch);
    clean(&scratch);
    println!(
        "after one pull: armlet's root holds {}, skopeo's layout + umoci's bundle {}",
        mib(armlet_bytes),
        mib(peer_bytes)
    );

    let mut armlet_times = Vec::new();
    let mut peer_times: [Vec<Duration>; 3] = Default::default();
    for round in 0..args.runs {
        for turn in 0..2 {
            let scratch = runs.join(format!("r{round}"));
            if (round + turn) % 2 == 0 {
                armlet_times.push(armlet.pull(&scratch, &registries, &reference)?);
            } else {
                let (copy, unpack) = peers_pull(&scratch, &reference)?;
                peer_times[0].push(copy + unpack);
                peer_times[1].push(copy);
                peer_times[2].push(unpack);
            }
            clean(&scratch);
        }
    }

    println!();
    println!(
        "pull + unpack of {reference} (linux/amd64), {} runs each, alternating, fresh \
         directories",
        args.runs
    );
    println!(
        "{:<24} {:>5} {:>9} {:>7} {:>7}",
        "", "runs", "median s", "min s", "max s"
    );
    let armlet_stats = Stats::of(&armlet_times);
    let [both, copy, unpack] = peer_times.map(|t| Stats::of(&t));
    for (name, s) in [
        ("armlet images pull", &armlet_stats),
        ("skopeo copy + umoci", &both),
        ("  skopeo copy", &copy),
        ("  umoci unpack", &unpack),
    ] {
        println!(
            "{name:<24} {:>5} {:>9.2} {:>7.2} {:>7.2}",
            s.runs, s.median, s.min, s.max
        );
    }
    let ratio = both.median / armlet_stats.median;
    println!(
        "armlet is {ratio:.1}× faster than skopeo copy + umoci unpack (median over median; \
         goal ≥ {PULL_GOAL}×: {})",
        if ratio >= PULL_GOAL { "met" } else { "NOT met" }
    );

    println!();
    airgap(&armlet, dir.path(), args.runs.max(IMPORT_RUNS))
}

/// The air-gap restart: a gigabyte of tarballs imported once, then again.
fn airgap(armlet: &Armlet, dir: &Path, runs: usize) -> Result<()> {
    let tarballs = dir.join("airgap");
    fs::create_dir_all(&tarballs)?;
    let started = Instant::now();
    for n in 0..TARBALLS {
        docker_archive(
            &tarballs.join(format!("bench-{n}.tar")),
            &format!("docker.io/library/airgap-{n}:1"),
            TARBALL_BYTES,
            n as u64 + 1,
        );
    }
    let total: u64 = fs::read_dir(&tarballs)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "air-gap: {TARBALLS} docker-archive tarballs, {} in all (made in {:.1} s)",
        mib(total),
        started.elapsed().as_secs_f64()
    );
    let root = dir.join("import-root");
    let first = armlet.import(&root, &tarballs)?;
    let again: Vec<Duration> = (0..runs)
        .map(|_| armlet.import(&root, &tarballs))
        .collect::<Result<_>>()?;
    let again = Stats::of(&again);
    println!(
        "{:<34} {:>5} {:>10} {:>8} {:>8}",
        "armlet images import", "runs", "median ms", "min ms", "max ms"
    );
    let first_ms = first.as_secs_f64() * 1e3;
    println!(
        "{:<34} {:>5} {:>10.1} {:>8.1} {:>8.1}",
        "first (reads every tarball)", 1, first_ms, first_ms, first_ms
    );
    println!(
        "{:<34} {:>5} {:>10.1} {:>8.1} {:>8.1}",
        "again (already imported)",
        again.runs,
        again.median * 1e3,
        again.min * 1e3,
        again.max * 1e3
    );
    println!(
        "re-import of {} already imported: {:.1} ms median (goal < {REIMPORT_GOAL_MS} ms: {})",
        mib(total),
        again.median * 1e3,
        if again.median * 1e3 < REIMPORT_GOAL_MS {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// armlet's side, through its command line.
struct Armlet {
    bin: PathBuf,
}

impl Armlet {
    /// Fails with a clear message when this armlet has no `images` command
    /// (before minutes go into building test data).
    fn check(&self) -> Result<()> {
        let out = Command::new(&self.bin)
            .args(["images", "--help"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} has no `images` command yet ({}: {}); this benchmark measures \
             `armlet images pull` and `armlet images import`",
            self.bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )
        .into())
    }

    /// Runs `armlet images --root <root> <args>`, timed; fails unless it exits 0.
    fn images(&self, root: &Path, args: &[&str]) -> Result<Duration> {
        let started = Instant::now();
        let out = Command::new(&self.bin)
            .arg("images")
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let took = started.elapsed();
        if !out.status.success() {
            return Err(format!(
                "`armlet images --root {} {}` failed ({}):\n{}",
                root.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            )
            .into());
        }
        Ok(took)
    }

    /// One pull (fetch and unpack every layer) into a fresh root under `scratch`.
    fn pull(&self, scratch: &Path, registries: &Path, reference: &str) -> Result<Duration> {
        let root = scratch.join("armlet");
        fs::create_dir_all(scratch)?;
        let registries = registries.to_string_lossy();
        self.images(&root, &["--registries", &registries, "pull", reference])
    }

    /// One `import` of the tarball directory into `root`.
    fn import(&self, root: &Path, tarballs: &Path) -> Result<Duration> {
        self.images(root, &["import", &tarballs.to_string_lossy()])
    }
}

/// The peers' pull: `skopeo copy` to an OCI layout, then `umoci unpack` of it;
/// each timed.
fn peers_pull(scratch: &Path, reference: &str) -> Result<(Duration, Duration)> {
    fs::create_dir_all(scratch)?;
    let layout = scratch.join("oci");
    let mut copy = TestRegistry::skopeo();
    copy.args([
        "copy",
        "--retry-times",
        "0",
        "--src-tls-verify=false",
        "--src-no-creds",
    ])
    .arg(format!("docker://{reference}"))
    .arg(format!("oci:{}:1", layout.display()));
    let copy = timed(&mut copy, "skopeo copy")?;
    let mut unpack = Command::new("umoci");
    unpack
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(scratch.join("bundle"));
    let unpack = timed(&mut unpack, "umoci unpack")?;
    Ok((copy, unpack))
}

/// Runs a command, timed; fails with its error output unless it exits 0.
fn timed(c: &mut Command, what: &str) -> Result<Duration> {
    let started = Instant::now();
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )
        .into());
    }
    Ok(took)
}

/// Removes a run's directory and flushes what it wrote, untimed: the next run
/// must not pay for this one's writeback.
fn clean(scratch: &Path) {
    if let Err(e) = fs::remove_dir_all(scratch) {
        eprintln!("bench-image: cannot remove {}: {e}", scratch.display());
    }
    nix::unistd::sync();
}

/// Bytes in the regular files under `dir` (hard links counted once per name:
/// an upper bound of what is on disk).
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// "12.3 MiB".
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
