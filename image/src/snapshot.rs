//! Container root filesystems as overlay mounts: the image's unpacked layer
//! directories, read-only and shared by every container of the image, plus a
//! writable layer of the container's own, removed with it (containerd's overlay
//! snapshotter in one function each way).
//!
//! Layout under the snapshot root: `<root>/<container>/{upper,work,rootfs}`;
//! `rootfs` is the mount point handed to the runtime. Layer directories come
//! from the content store's unpacked layers (whiteouts already in overlay form).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// The kernel copies mount options into one page: longer options fail with
/// EINVAL, which would say nothing about why.
const MAX_OPTIONS: usize = 4000;

/// Why a snapshot could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The container id cannot name a directory.
    #[error("snapshot id {0:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.'")]
    BadId(String),
    /// No layers were given.
    #[error("a snapshot needs at least one image layer")]
    NoLayers,
    /// A layer directory is missing or unusable in an overlay option.
    #[error("layer directory {0}: {1}")]
    BadLayer(PathBuf, &'static str),
    /// Too many layers (or too long paths) for one overlay mount.
    #[error(
        "{layers} layers need {bytes} bytes of overlay options; the kernel takes {MAX_OPTIONS}"
    )]
    TooManyLayers {
        /// How many layers.
        layers: usize,
        /// Option length needed.
        bytes: usize,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// The file in a snapshot's directory listing its layer directories.
const LAYERS_FILE: &str = "layers";

/// Makes and removes container root filesystems under one directory.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
}

impl Snapshotter {
    /// Snapshots live under `root` (on the data partition, next to the layers:
    /// overlayfs needs upper and work on one file system).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory of snapshot `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The root filesystem of snapshot `id` (mounted once [`prepare`](Self::prepare)d).
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.dir(id).join("rootfs")
    }

    /// Mounts `layers` (bottom first, as in the image manifest) read-only under a
    /// fresh writable layer at [`rootfs`](Self::rootfs). Idempotent: a snapshot
    /// already mounted is left as it is (after an agent restart the container may
    /// still be running on it). Needs CAP_SYS_ADMIN.
    pub fn prepare(&self, id: &str, layers: &[PathBuf]) -> Result<PathBuf, SnapshotError> {
        check_id(id)?;
        if layers.is_empty() {
            return Err(SnapshotError::NoLayers);
        }
        for layer in layers {
            let text = layer.to_string_lossy();
            if !layer.is_absolute() {
                return Err(SnapshotError::BadLayer(layer.clone(), "must be absolute"));
            }
            // ':' separates lower directories and ',' options: overlayfs has
            // escapes for neither in every kernel we support.
            if text.contains([':', ',']) {
                return Err(SnapshotError::BadLayer(
                    layer.clone(),
                    "contains ':' or ',', which overlay options cannot carry",
                ));
            }
            if !layer.is_dir() {
                return Err(SnapshotError::BadLayer(layer.clone(), "is not a directory"));
            }
        }
        let dir = self.dir(id);
        if !dir.is_absolute() || dir.to_string_lossy().contains([':', ',']) {
            return Err(SnapshotError::BadLayer(
                dir,
                "the snapshot directory must be absolute, without ':' or ','",
            ));
        }
        let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        if is_mount_point(&rootfs) {
            return Ok(rootfs);
        }
        for d in [&self.root, &dir] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(d)
                .map_err(io_err("creating", d))?;
        }
        for d in [&upper, &work, &rootfs] {
            match fs::DirBuilder::new().mode(0o755).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", d)(e)),
            }
        }
        // Which layers this snapshot stands on, for image garbage collection:
        // written before the mount, so a mounted snapshot always has it.
        let mut listed = String::new();
        for layer in layers {
            listed.push_str(&layer.to_string_lossy());
            listed.push('\n');
        }
        fs::write(dir.join(LAYERS_FILE), listed).map_err(io_err("writing", &dir))?;
        // overlayfs lists lower directories top first.
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| l.to_string_lossy().into_owned())
            .collect();
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        // As containerd: without the index, one lower layer can be used by
        // several overlay mounts with different uppers at the same time.
        if Path::new("/sys/module/overlay/parameters/index").exists() {
            options.push_str(",index=off");
        }
        if options.len() > MAX_OPTIONS {
            return Err(SnapshotError::TooManyLayers {
                layers: layers.len(),
                bytes: options.len(),
            });
        }
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| io_err("mounting the overlay on", &rootfs)(e.into()))?;
        Ok(rootfs)
    }

    /// Unmounts and deletes snapshot `id` with its writable layer. Removing one
    /// that does not exist is not an error (the caller's cleanup may run twice).
    pub fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        check_id(id)?;
        let dir = self.dir(id);
        let rootfs = dir.join("rootfs");
        if is_mount_point(&rootfs) {
            nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH)
                .map_err(|e| io_err("unmounting", &rootfs)(e.into()))?;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &dir)(e)),
        }
    }

    /// The layer directories some snapshot stands on: image garbage
    /// collection must keep them whatever happened to the image's name.
    pub fn layers_in_use(&self) -> Result<std::collections::BTreeSet<PathBuf>, SnapshotError> {
        let mut used = std::collections::BTreeSet::new();
        for id in self.list()? {
            let file = self.dir(&id).join(LAYERS_FILE);
            match fs::read_to_string(&file) {
                Ok(text) => used.extend(text.lines().filter(|l| !l.is_empty()).map(PathBuf::from)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("reading", &file)(e)),
            }
        }
        Ok(used)
    }

    /// Ids of the snapshots present (for garbage collection after a restart).
    pub fn list(&self) -> Result<Vec<String>, SnapshotError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.root)(e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_id(n).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn check_id(id: &str) -> Result<(), SnapshotError> {
    let ok = (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadId(id.to_owned()))
    }
}

/// Whether `path` is a mount point (listed in this process's mount table).
fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = fs::canonicalize(path) else {
        return false;
    };
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = escape_mountinfo(&canonical.to_string_lossy());
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn escape_mountinfo(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop, after unmounting the test's snapshot
    /// (fields drop in order: the snapshot first).
    struct Scratch {
        path: PathBuf,
        _dir: crate::testutil::TempDir,
    }

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = crate::testutil::TempDir::new(name);
            Self {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = Snapshotter::new(self.path.join("snapshots")).remove("c1");
        }
    }

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "overlay snapshot tests need root (CI runs as root)"
        );
    }

    #[test]
    fn ids_and_layers_are_checked_before_anything_is_made() {
        let s = Snapshotter::new("/nonexistent/snapshots");
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(
                matches!(s.prepare(bad, &[]), Err(SnapshotError::BadId(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(s.prepare("c1", &[]), Err(SnapshotError::NoLayers)));
        assert!(matches!(
            s.prepare("c1", &[PathBuf::from("relative")]),
            Err(SnapshotError::BadLayer(..))
        ));
        assert!(matches!(
            s.prepare("c1", &[PathBuf::from("/tmp/a:b")]),
            Err(SnapshotError::BadLayer(..))
        ));
        assert!(!Path::new("/nonexistent/snapshots").exists());
        assert_eq!(escape_mountinfo("/a b\\c"), "/a\\040b\\134c");
    }

    #[test]
    fn layers_stack_with_whiteouts_and_opaque_directories() {
        require_root();
        let scratch = Scratch::new("stack");
        let base = scratch.path.join("layers/base");
        let top = scratch.path.join("layers/top");
        for d in [base.join("etc"), base.join("data"), top.join("data")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(base.join("etc/os-release"), "base\n").unwrap();
        fs::write(base.join("etc/removed"), "gone\n").unwrap();
        fs::write(base.join("data/old"), "hidden by opaque\n").unwrap();
        fs::write(top.join("data/new"), "top\n").unwrap();
        fs::create_dir_all(top.join("etc")).unwrap();
        fs::write(top.join("etc/os-release"), "top\n").unwrap();
        // The overlay forms the unpacker writes: a 0:0 character device hides a
        // lower file; trusted.overlay.opaque hides a lower directory's contents.
        nix::sys::stat::mknod(
            &top.join("etc/removed"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
        let opaque = std::ffi::CString::new(top.join("data").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: both strings are NUL-terminated and live across the call.
        let rc = unsafe {
            nix::libc::lsetxattr(
                opaque.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "setting the opaque xattr");

        let snapshots = Snapshotter::new(scratch.path.join("snapshots"));
        let rootfs = snapshots
            .prepare("c1", &[base.clone(), top.clone()])
            .unwrap();
        // Twice is fine: the mounted snapshot is kept.
        assert_eq!(
            snapshots
                .prepare("c1", &[base.clone(), top.clone()])
                .unwrap(),
            rootfs
        );
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/os-release")).unwrap(),
            "top\n"
        );
        assert!(!rootfs.join("etc/removed").exists());
        assert!(!rootfs.join("data/old").exists());
        assert_eq!(
            fs::read_to_string(rootfs.join("data/new")).unwrap(),
            "top\n"
        );
        // Writes land in the container's own layer, never in the image's.
        fs::write(rootfs.join("etc/os-release"), "changed\n").unwrap();
        fs::remove_file(rootfs.join("data/new")).unwrap();
        assert_eq!(
            fs::read_to_string(top.join("etc/os-release")).unwrap(),
            "top\n"
        );
        assert!(top.join("data/new").exists());
        assert_eq!(
            fs::read_to_string(snapshots.dir("c1").join("upper/etc/os-release")).unwrap(),
            "changed\n"
        );
        assert_eq!(snapshots.list().unwrap(), ["c1"]);

        snapshots.remove("c1").unwrap();
        assert!(!is_mount_point(&rootfs));
        assert!(!snapshots.dir("c1").exists());
        snapshots.remove("c1").unwrap();
        assert!(snapshots.list().unwrap().is_empty());
        assert!(base.join("etc/removed").exists(), "lower layers untouched");
    }
}
