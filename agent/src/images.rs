//! `armlet images`: pull, list, remove, import and inspect images, in the
//! spirit of `crictl images` / `ctr images`. Pulls and imports show progress
//! on a terminal and print plain lines otherwise (logs, CI, pipes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use armlet_image::digest::Digest;
use armlet_image::platform::Platform;
use armlet_image::pull::{Progress, PullEvent, PullOptions};
use armlet_image::registries::Registries;
use armlet_image::secrets::PullSecrets;
use armlet_image::service::{GcPolicy, ImageService};

/// Where images live unless told otherwise.
pub const DEFAULT_IMAGES_ROOT: &str = "/var/lib/armlet/images";
/// k3s's registries.yaml, so an existing K3s user's file works as it is.
pub const DEFAULT_REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";

/// The options every `images` subcommand shares.
#[derive(Debug, Clone)]
pub struct ImagesContext {
    /// The image directory.
    pub root: PathBuf,
    /// registries.yaml.
    pub registries: PathBuf,
    /// Pull and unpack for this platform instead of this node's.
    pub platform: Option<String>,
}

impl ImagesContext {
    fn open(&self) -> Result<ImageService> {
        let registries = Registries::load(&self.registries)
            .with_context(|| format!("reading {}", self.registries.display()))?;
        let mut service = ImageService::open(&self.root, registries)
            .with_context(|| format!("opening the image directory {}", self.root.display()))?;
        if let Some(p) = &self.platform {
            let platform: Platform = p.parse().context("--platform")?;
            service = service.with_platform(platform);
        }
        Ok(service)
    }
}

/// A runtime for the network side: two workers are plenty on a 4-core board,
/// and unpacking runs on tokio's blocking threads.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `images pull`.
pub fn pull(ctx: &ImagesContext, reference: &str, secret_files: &[PathBuf]) -> Result<()> {
    let service = ctx.open()?;
    let mut secrets = PullSecrets::default();
    for file in secret_files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        secrets
            .add_docker_config(&bytes)
            .with_context(|| file.display().to_string())?;
    }
    let options = PullOptions {
        secrets,
        ..PullOptions::default()
    };
    let display = Arc::new(Display::new(std::io::stderr().is_terminal()));
    let started = Instant::now();
    let pulled = runtime()?.block_on(service.pull(
        reference,
        &options,
        Arc::clone(&display) as Arc<dyn Progress>,
    ));
    // The progress block is left whole, whatever happened.
    display.finish();
    let (name, pulled) = pulled?;
    println!(
        "{name} {} ({} downloaded in {:.1} s from {})",
        pulled.digest,
        human(pulled.downloaded),
        started.elapsed().as_secs_f64(),
        pulled.location
    );
    Ok(())
}

/// `images ls`; a reader that goes away (`| head`) is not an error.
pub fn ls(ctx: &ImagesContext, quiet: bool) -> Result<()> {
    let service = ctx.open()?;
    match write_list(&service, quiet) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn write_list(service: &ImageService, quiet: bool) -> std::io::Result<()> {
    let images = service.list().map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for image in images {
            writeln!(out, "{}", image.name)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<50} {:<19} {:>10}  SOURCE",
        "IMAGE", "DIGEST", "SIZE"
    )?;
    for image in images {
        let digest = image.digest.to_string();
        writeln!(
            out,
            "{:<50} {:<19} {:>10}  {}",
            image.name,
            &digest[..digest.len().min(19)],
            image.size.map_or("-".to_owned(), human),
            image.source
        )?;
    }
    Ok(())
}

/// `images rm`.
pub fn rm(ctx: &ImagesContext, names: &[String]) -> Result<()> {
    let service = ctx.open()?;
    let rt = runtime()?;
    let mut failed = false;
    for name in names {
        match rt.block_on(service.remove(name)) {
            Ok(swept) => println!(
                "removed {name} ({} blobs, {} layers freed)",
                swept.blobs, swept.layers
            ),
            Err(e) => {
                eprintln!("armlet: {e}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some images were not removed");
    }
    Ok(())
}

/// `images import`.
pub fn import(ctx: &ImagesContext, paths: &[PathBuf]) -> Result<()> {
    let service = ctx.open()?;
    let rt = runtime()?;
    let mut failed = false;
    for path in paths {
        let started = Instant::now();
        let report = rt.block_on(service.import(path))?;
        for (name, digest) in &report.images {
            println!("{name} {digest}");
        }
        for digest in &report.unnamed {
            println!("(unnamed) {digest}");
        }
        for error in &report.errors {
            eprintln!("armlet: {error}");
            failed = true;
        }
        eprintln!(
            "{}: {} images in {:.0} ms",
            path.display(),
            report.images.len() + report.unnamed.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    if failed {
        bail!("some imports failed");
    }
    Ok(())
}

/// `images inspect`.
pub fn inspect(ctx: &ImagesContext, name: &str) -> Result<()> {
    let service = ctx.open()?;
    let value = service.inspect(name)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `images gc`.
pub fn gc(ctx: &ImagesContext, policy: GcPolicy, keep: &[String]) -> Result<()> {
    if policy.low_percent > policy.high_percent || policy.high_percent > 100 {
        bail!("--low must not exceed --high, and --high must be at most 100");
    }
    let service = ctx.open()?;
    let keep: BTreeSet<String> = keep
        .iter()
        .map(|k| ImageService::normalise(k).unwrap_or_else(|_| k.clone()))
        .collect();
    let report = runtime()?.block_on(service.gc(&policy, &keep))?;
    for name in &report.removed {
        println!("removed {name}");
    }
    println!(
        "disk use {}% → {}% ({} blobs, {} layers freed)",
        report.before_percent, report.after_percent, report.blobs, report.layers
    );
    Ok(())
}

/// Bytes for people: `12.3 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn short(digest: &Digest) -> String {
    digest.hex()[..12].to_owned()
}

/// Most layers drawn as a redrawn block; more (rare) could outgrow the
/// terminal, and get the plain lines instead.
const MAX_DRAWN_LAYERS: usize = 20;

/// Per-layer state for the display.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LayerState {
    Waiting,
    Downloading(u64, u64),
    Unpacking,
    Done(bool),
}

/// Renders pull events: a redrawn block of one line per layer on a terminal,
/// one line per milestone otherwise.
struct Display {
    terminal: bool,
    state: Mutex<DisplayState>,
}

#[derive(Default)]
struct DisplayState {
    order: Vec<Digest>,
    layers: BTreeMap<Digest, LayerState>,
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Display {
    fn new(terminal: bool) -> Self {
        Self {
            // A block taller than the terminal cannot be redrawn in place:
            // such pulls print lines instead (see `event`).
            terminal,
            state: Mutex::default(),
        }
    }

    fn line(digest: &Digest, state: &LayerState) -> String {
        let what = match state {
            LayerState::Waiting => "waiting".to_owned(),
            LayerState::Downloading(done, total) => {
                let percent = if *total == 0 { 100 } else { done * 100 / total };
                let filled = (percent / 5) as usize;
                format!(
                    "[{}{}] {:>3}% {} / {}",
                    "#".repeat(filled),
                    " ".repeat(20 - filled.min(20)),
                    percent,
                    human(*done),
                    human(*total)
                )
            }
            LayerState::Unpacking => "unpacking".to_owned(),
            LayerState::Done(true) => "already present".to_owned(),
            LayerState::Done(false) => "done".to_owned(),
        };
        format!("{}: {what}", short(digest))
    }

    fn redraw(&self, state: &mut DisplayState, force: bool) {
        if state.order.len() > MAX_DRAWN_LAYERS {
            return;
        }
        let now = Instant::now();
        if !force
            && state
                .last_draw
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        state.last_draw = Some(now);
        let mut out = String::new();
        if state.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", state.drawn));
        }
        for digest in &state.order {
            let line = Self::line(digest, &state.layers[digest]);
            out.push_str(&format!("\r\x1b[2K{line}\n"));
        }
        state.drawn = state.order.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.terminal {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.redraw(&mut state, true);
        }
    }
}

impl Progress for Display {
    fn event(&self, event: PullEvent) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let terminal = self.terminal && state.order.len() <= MAX_DRAWN_LAYERS;
        let plain = |line: String| eprintln!("{line}");
        match event {
            PullEvent::Resolving { location } => plain(format!("resolving at {location}")),
            PullEvent::Resolved { manifest, layers } => {
                // Sizes from a manifest: a hostile one must not overflow.
                let total = layers.iter().fold(0u64, |a, (_, s)| a.saturating_add(*s));
                plain(format!(
                    "manifest {manifest}: {} layers, {}",
                    layers.len(),
                    human(total)
                ));
                for (digest, _) in layers {
                    if !state.layers.contains_key(&digest) {
                        state.order.push(digest);
                    }
                    state.layers.insert(digest, LayerState::Waiting);
                }
                if self.terminal && state.order.len() <= MAX_DRAWN_LAYERS {
                    self.redraw(&mut state, true);
                }
            }
            PullEvent::Downloading { blob, done, total } => {
                if let Some(layer) = state.layers.get_mut(&blob) {
                    *layer = if done == total {
                        LayerState::Unpacking
                    } else {
                        LayerState::Downloading(done, total)
                    };
                } else {
                    return;
                }
                if terminal {
                    self.redraw(&mut state, done == total);
                } else if done == total {
                    plain(format!("{}: downloaded {}", short(&blob), human(total)));
                }
            }
            PullEvent::Unpacked { blob, cached } => {
                state.layers.insert(blob, LayerState::Done(cached));
                if !state.order.contains(&blob) {
                    state.order.push(blob);
                }
                if terminal {
                    self.redraw(&mut state, true);
                } else {
                    plain(Self::line(&blob, &LayerState::Done(cached)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn defaults_are_absolute() {
        assert!(Path::new(DEFAULT_IMAGES_ROOT).is_absolute());
        assert!(Path::new(DEFAULT_REGISTRIES).is_absolute());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 << 20), "100.0 MiB");
    }

    #[test]
    fn layer_lines() {
        let d = Digest::of(b"x");
        let line = Display::line(&d, &LayerState::Downloading(50, 100));
        assert!(line.starts_with(&short(&d)), "{line}");
        assert!(line.contains(" 50%"), "{line}");
        assert!(Display::line(&d, &LayerState::Downloading(0, 0)).contains("100%"));
        assert!(Display::line(&d, &LayerState::Done(true)).ends_with("already present"));
    }
}
