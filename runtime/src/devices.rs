//! The device allowlist on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup.
//!
//! Cgroup v1 has `devices.allow`/`devices.deny` files, which libcontainer writes
//! itself. Cgroup v2 has no such files: the kernel asks the programs attached to a
//! task's cgroup (and its ancestors) whether a device may be created (`mknod`) or
//! opened for reading or writing. libcontainer only builds that program with its
//! `cgroupsv2_devices` feature, which needs libbpf (and libelf and zlib) that we
//! cannot link statically for ARM, so armlet generates, loads and attaches the
//! program itself: a few dozen hand-assembled instructions and three `bpf(2)`
//! commands, no library.
//!
//! # How rules are evaluated
//!
//! The OCI rules (`linux.resources.devices`) are read in order, like the writes
//! to v1's `devices.allow`/`devices.deny` that they stand for:
//!
//! - a rule of type `a` (or no type) is the kernel's "all": it forgets every
//!   earlier rule and sets the default to its own `allow` (its numbers and access
//!   are ignored, as the v1 kernel ignores them);
//! - any other rule applies to devices of its type (`c` or `b`) whose major and
//!   minor match (absent or `-1`: any), for the access it names (`r`, `w`, `m`);
//! - for each access bit a request asks for, the **last** rule that matches the
//!   device and names that bit decides; bits no rule names get the default (deny
//!   unless an `a` rule allowed everything);
//! - a request is allowed when every bit it asks for is.
//!
//! This is the v1 devices cgroup's whitelist as runc emulates it, decided per
//! access bit: "allow c 1:3 rwm" then "deny c 1:3 w" leaves read and mknod
//! allowed, and a request for read and write is refused because write is. A
//! request without any access bits (the kernel's check for `access(2)` or exec on
//! a device node) asks for nothing and is allowed: it can neither read, write nor
//! create a device.
//!
//! Like libcontainer on v1 (and runc), the rules of the spec are followed by
//! libcontainer's defaults ([`libcontainer_defaults`]): the devices it creates in
//! every container's `/dev`, `/dev/pts`, `/dev/ptmx` and `mknod` of any device.
//!
//! # The program
//!
//! It loads the request (`struct bpf_cgroup_dev_ctx`: the device type in the low
//! 16 bits of `access_type`, the access bits in the high 16 bits, then major and
//! minor) into registers, keeps the access bits not yet decided in a register,
//! and walks the rules from last to first: a matching deny rule naming an
//! undecided bit returns 0 (deny); a matching allow rule marks its bits decided
//! and returns 1 (allow) once none is left. At the end the default decides the
//! remaining bits. Jumps only go forward, so the verifier accepts it at once.

use std::ffi::c_void;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::libc;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec};

/// Errors of building, loading and attaching the device program.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// A rule the program cannot express (a type other than a, b, c; a number
    /// out of range; an access other than r, w, m).
    #[error("device rule {index} ({rule}): {reason}")]
    InvalidRule {
        /// Its position in the list, from 0.
        index: usize,
        /// The rule as v1's `devices.allow` would show it.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bundle's config.json could not be read.
    #[error("reading the container's spec")]
    Spec(#[from] oci_spec::OciSpecError),
    /// The process's cgroup could not be found in `/proc/<pid>/cgroup`.
    #[error("finding the cgroup of process {pid}: {reason}")]
    ProcessCgroup {
        /// The process.
        pid: i32,
        /// Why not.
        reason: String,
    },
    /// The cgroup directory could not be opened.
    #[error("opening cgroup {}", path.display())]
    OpenCgroup {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the program; `log` holds what the verifier said.
    #[error(
        "loading the device program (BPF_PROG_LOAD): {source}{}",
        verifier_log(log)
    )]
    Load {
        /// The error of `bpf(2)`.
        #[source]
        source: io::Error,
        /// The tail of the verifier's log, if it gave one.
        log: String,
    },
    /// Another `bpf(2)` command failed (query, attach, detach).
    #[error("{what} (bpf {command})")]
    Bpf {
        /// What we were doing.
        what: String,
        /// The `bpf(2)` command, by name.
        command: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn verifier_log(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier log:\n{log}")
    }
}

// Access bits and device types of `struct bpf_cgroup_dev_ctx` (uapi linux/bpf.h:
// BPF_DEVCG_ACC_*, BPF_DEVCG_DEV_*).
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

/// A device type a rule can name, as the program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Block,
    Char,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Block => DEV_BLOCK,
            Kind::Char => DEV_CHAR,
        }
    }
}

/// One rule after an `a` rule: which devices, which access, allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    allow: bool,
    kind: Kind,
    /// `None`: any.
    major: Option<u32>,
    /// `None`: any.
    minor: Option<u32>,
    /// ACC_* bits, never 0.
    access: u32,
}

/// The device rules of a container, reduced to what decides a request: the
/// default (set by the last `a` rule) and the typed rules after it, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    default_allow: bool,
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads OCI device rules in order (see the module's documentation).
    /// Fails on a rule the kernel could not check either, rather than ignoring it.
    pub fn from_rules(rules: &[LinuxDeviceCgroup]) -> Result<Policy, DevicesError> {
        let mut policy = Policy {
            default_allow: false,
            rules: Vec::new(),
        };
        for (index, rule) in rules.iter().enumerate() {
            let invalid = |reason: String| DevicesError::InvalidRule {
                index,
                rule: rule.to_string(),
                reason,
            };
            let kind = match rule.typ().unwrap_or_default() {
                // v1's "a" resets, whatever follows it (the kernel reads no further).
                LinuxDeviceType::A => {
                    policy.default_allow = rule.allow();
                    policy.rules.clear();
                    continue;
                }
                LinuxDeviceType::B => Kind::Block,
                LinuxDeviceType::C => Kind::Char,
                other => {
                    return Err(invalid(format!(
                        "type {:?} is not a device cgroup type (a, b or c)",
                        other.as_str()
                    )));
                }
            };
            let access = parse_access(rule.access().as_deref().unwrap_or(""))
                .map_err(|c| invalid(format!("unknown access {c:?} (r, w, m)")))?;
            let major = device_number(rule.major()).map_err(|n| invalid(format!("major {n}")))?;
            let minor = device_number(rule.minor()).map_err(|n| invalid(format!("minor {n}")))?;
            // No access: it decides nothing (v1 would refuse to write it).
            if access == 0 {
                continue;
            }
            policy.rules.push(Rule {
                allow: rule.allow(),
                kind,
                major,
                minor,
                access,
            });
        }
        Ok(policy)
    }

    /// Whether every request is allowed (a privileged container): then no
    /// program is needed at all.
    pub fn allows_everything(&self) -> bool {
        self.default_allow && self.rules.iter().all(|r| r.allow)
    }

    /// The program deciding requests as this policy does.
    pub fn program(&self) -> Program {
        let mut p = Vec::with_capacity(12 + self.rules.len() * 8);
        // R2 = type, R3 = access bits (then: the bits not yet decided),
        // R4 = major, R5 = minor. Loads are 32-bit and zero-extend.
        p.push(Insn::load_u32(R2, R1, 0));
        p.push(Insn::alu32_imm(ALU_AND, R2, 0xffff));
        p.push(Insn::load_u32(R3, R1, 0));
        p.push(Insn::alu32_imm(ALU_RSH, R3, 16));
        p.push(Insn::load_u32(R4, R1, 4));
        p.push(Insn::load_u32(R5, R1, 8));
        // Nothing asked for: nothing to refuse.
        p.push(Insn::jump_imm(JMP_JNE, R3, 0, 2));
        p.extend(Insn::ret(true));
        // Last rule first: the first that decides a bit is the last in the list.
        for rule in self.rules.iter().rev() {
            let mut body = Vec::with_capacity(5);
            if rule.allow {
                // The bits it grants are decided; all decided: allowed.
                body.push(Insn::alu32_imm(ALU_AND, R3, !rule.access as i32));
                body.push(Insn::jump_imm(JMP_JNE, R3, 0, 2));
                body.extend(Insn::ret(true));
            } else {
                // It denies an undecided bit: refused.
                body.push(Insn::mov32_reg(R1, R3));
                body.push(Insn::alu32_imm(ALU_AND, R1, rule.access as i32));
                body.push(Insn::jump_imm(JMP_JEQ, R1, 0, 2));
                body.extend(Insn::ret(false));
            }
            // Tests of the device, each skipping the rest of the block (the
            // other tests and the body) when it does not match. Numbers fit in
            // an i32 (checked by `device_number`): the immediate is sign-extended
            // to 64 bits and compared with a zero-extended register.
            let mut tests = Vec::with_capacity(3);
            tests.push((R2, rule.kind.code()));
            tests.extend(rule.major.map(|m| (R4, m)));
            tests.extend(rule.minor.map(|m| (R5, m)));
            let count = tests.len();
            for (i, (reg, value)) in tests.into_iter().enumerate() {
                let skip = (count - 1 - i) + body.len();
                p.push(Insn::jump_imm(JMP_JNE, reg, value as i32, skip as i16));
            }
            p.extend(body);
        }
        // Bits no rule decided take the default; all others were allowed.
        p.extend(Insn::ret(self.default_allow));
        Program(p)
    }
}

/// The access bits of an OCI access string ("rwm", any order), or the first
/// character that is not one.
fn parse_access(access: &str) -> Result<u32, char> {
    access.chars().try_fold(0, |bits, c| match c {
        'r' => Ok(bits | ACC_READ),
        'w' => Ok(bits | ACC_WRITE),
        'm' => Ok(bits | ACC_MKNOD),
        other => Err(other),
    })
}

/// A major or minor number: absent or -1 is any. Linux's are at most 12 and 20
/// bits; anything past `i32::MAX` could never match, and is refused.
fn device_number(n: Option<i64>) -> Result<Option<u32>, i64> {
    match n {
        None | Some(-1) => Ok(None),
        Some(n) => match i32::try_from(n) {
            Ok(v) if v >= 0 => Ok(Some(v as u32)),
            _ => Err(n),
        },
    }
}

/// The rules libcontainer adds after the spec's on cgroup v1 (its
/// `default_devices` and `default_allow_devices`, which are not public): the
/// devices it creates in every container (`/dev/null`, `zero`, `full`, `tty`,
/// `urandom`, `random`), `mknod` of any device, `/dev/console`, `/dev/pts/*`,
/// `/dev/ptmx` and `/dev/net/tun`. Applying them on v2 too keeps a container's
/// devices the same on both.
pub fn libcontainer_defaults() -> Vec<LinuxDeviceCgroup> {
    let c = Some(LinuxDeviceType::C);
    let b = Some(LinuxDeviceType::B);
    let rule = |typ: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>, access| {
        let mut r = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access(access);
        if let Some(t) = typ {
            r = r.typ(t);
        }
        if let Some(m) = major {
            r = r.major(m);
        }
        if let Some(m) = minor {
            r = r.minor(m);
        }
        // Every field is set or optional: building cannot fail. Should a
        // future oci-spec disagree, the rule is left out rather than panicking
        // (a missing allow rule only denies more).
        r.build().ok()
    };
    let mut rules = Vec::new();
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (5, 0), (1, 9), (1, 8)] {
        rules.extend(rule(c, Some(major), Some(minor), "rwm"));
    }
    rules.extend(rule(c, None, None, "m"));
    rules.extend(rule(b, None, None, "m"));
    rules.extend(rule(c, Some(5), Some(1), "rwm"));
    rules.extend(rule(c, Some(136), None, "rwm"));
    rules.extend(rule(c, Some(5), Some(2), "rwm"));
    rules.extend(rule(c, Some(10), Some(200), "rwm"));
    rules
}

/// Enforces a created container's device rules on cgroup v2: reads them from its
/// spec (`config`, the bundle's config.json), adds [`libcontainer_defaults`], and
/// attaches the program to the v2 cgroup of its init `pid` (which waits for
/// `start`: its command has not run yet) under `cgroup_root`, the v2 mount.
pub fn restrict_container(config: &Path, pid: i32, cgroup_root: &Path) -> Result<(), DevicesError> {
    let spec = Spec::load(config)?;
    let mut rules = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    rules.extend(libcontainer_defaults());
    let policy = Policy::from_rules(&rules)?;
    let cgroup = process_cgroup(pid, cgroup_root)?;
    apply(&cgroup, &policy)
}

/// The directory of a process's v2 cgroup under `cgroup_root`, from the
/// `0::<path>` line of `/proc/<pid>/cgroup` (where the kernel really put it,
/// whatever the spec's `cgroupsPath` said or left to libcontainer).
pub fn process_cgroup(pid: i32, cgroup_root: &Path) -> Result<PathBuf, DevicesError> {
    let fail = |reason: String| DevicesError::ProcessCgroup { pid, reason };
    let text =
        fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| fail(e.to_string()))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| fail("no cgroup v2 entry".into()))?;
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return Err(fail(format!("unexpected cgroup path {path:?}")));
    }
    Ok(cgroup_root.join(relative))
}

/// Makes `policy` the device program of the cgroup directory `cgroup`: the new
/// program is attached first, then every program attached before it is
/// detached, so applying again replaces rather than stacks, and at no moment is
/// the cgroup less restricted than by either program. A policy allowing
/// everything attaches nothing (it only removes earlier programs).
pub fn apply(cgroup: &Path, policy: &Policy) -> Result<(), DevicesError> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(cgroup)
        .map_err(|source| DevicesError::OpenCgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
    let dir = OwnedFd::from(dir);
    let before = attached_programs(dir.as_fd()).map_err(|source| DevicesError::Bpf {
        what: format!("listing the device programs of {}", cgroup.display()),
        command: "BPF_PROG_QUERY",
        source,
    })?;
    if !policy.allows_everything() {
        let program = load(&policy.program())?;
        attach(dir.as_fd(), program.as_fd()).map_err(|source| DevicesError::Bpf {
            what: format!("attaching the device program to {}", cgroup.display()),
            command: "BPF_PROG_ATTACH",
            source,
        })?;
        // The cgroup holds the program now: our descriptor may close.
    }
    for id in before {
        let old = match program_by_id(id) {
            Ok(fd) => fd,
            // Detached and freed meanwhile: nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(DevicesError::Bpf {
                    what: format!("opening device program {id} of {}", cgroup.display()),
                    command: "BPF_PROG_GET_FD_BY_ID",
                    source,
                });
            }
        };
        match detach(dir.as_fd(), old.as_fd()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(DevicesError::Bpf {
                    what: format!("detaching device program {id} from {}", cgroup.display()),
                    command: "BPF_PROG_DETACH",
                    source,
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Instructions.

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

// Opcode parts (uapi linux/bpf_common.h, linux/bpf.h): class, size, mode, op,
// source.
const CLASS_LDX: u8 = 0x01;
const CLASS_ALU: u8 = 0x04; // 32-bit: results are zero-extended to 64 bits
const CLASS_JMP: u8 = 0x05; // 64-bit comparisons
const SIZE_W: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const ALU_AND: u8 = 0x50;
const ALU_RSH: u8 = 0x70;
const ALU_MOV: u8 = 0xb0;
const JMP_JEQ: u8 = 0x10;
const JMP_JNE: u8 = 0x50;
const JMP_EXIT: u8 = 0x90;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`: opcode,
/// destination and source registers (4 bits each), signed offset, signed
/// immediate.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4`, a C bitfield: dst in the low nibble on
    /// little-endian machines, in the high one on big-endian.
    regs: u8,
    off: i16,
    imm: i32,
}

const _: () = assert!(size_of::<Insn>() == 8);

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let regs = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0x0f)
        } else {
            (dst << 4) | (src & 0x0f)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// `dst = *(u32 *)(src + off)`
    fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_LDX | SIZE_W | MODE_MEM, dst, src, off, 0)
    }

    /// `(u32) dst op= imm`
    fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU | op | SRC_K, dst, 0, 0, imm)
    }

    /// `(u32) dst = (u32) src`
    fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(CLASS_ALU | ALU_MOV | SRC_X, dst, src, 0, 0)
    }

    /// `if dst <op> imm: skip the next off instructions`
    fn jump_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP | op | SRC_K, dst, 0, off, imm)
    }

    /// `return allow ? 1 : 0`
    fn ret(allow: bool) -> [Insn; 2] {
        [
            Insn::new(CLASS_ALU | ALU_MOV | SRC_K, R0, 0, 0, i32::from(allow)),
            Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0),
        ]
    }

    /// The opcode.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The destination register.
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    /// The source register.
    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }

    /// The offset (of a load, or of a jump: instructions skipped).
    pub fn off(&self) -> i16 {
        self.off
    }

    /// The immediate operand.
    pub fn imm(&self) -> i32 {
        self.imm
    }
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x} r{} r{} {:+} {:#x}",
            self.code,
            self.dst(),
            self.src(),
            self.off,
            self.imm
        )
    }
}

/// A device program: instructions ready for `BPF_PROG_LOAD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program(Vec<Insn>);

impl Program {
    /// Its instructions.
    pub fn instructions(&self) -> &[Insn] {
        &self.0
    }
}

// ---------------------------------------------------------------------------
// bpf(2).
//
// Each command takes a pointer to `union bpf_attr` and its size; the kernel
// reads the fields it knows and insists that any bytes past them be zero. So
// each command gets its own #[repr(C)] struct, the leading part of the union's
// member for that command, without implicit padding (every byte is a named,
// initialised field) and with 64-bit fields at 8-byte offsets: on armv7 too,
// pointers go into u64 fields (`ptr as usize as u64`).

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// `bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C, align(8))]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `bpf_attr` for BPF_PROG_QUERY, up to `prog_cnt` (and the padding after it).
#[repr(C, align(8))]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

/// `bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

// The layouts the kernel expects, on every target.
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(ProgLoadAttr, insns) == 8);
    assert!(offset_of!(ProgLoadAttr, license) == 16);
    assert!(offset_of!(ProgLoadAttr, log_level) == 24);
    assert!(offset_of!(ProgLoadAttr, log_buf) == 32);
    assert!(offset_of!(ProgLoadAttr, kern_version) == 40);
    assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(offset_of!(ProgLoadAttr, expected_attach_type) == 68);
    assert!(size_of::<ProgLoadAttr>() == 72);
    assert!(size_of::<AttachAttr>() == 20);
    assert!(offset_of!(QueryAttr, prog_ids) == 16);
    assert!(offset_of!(QueryAttr, prog_cnt) == 24);
    assert!(size_of::<QueryAttr>() == 32);
    assert!(size_of::<GetIdAttr>() == 12);
};

/// Calls `bpf(cmd, attr, sizeof *attr)`.
///
/// # Safety
///
/// `T` must be one of the attr structs above, and every pointer in it must be
/// valid for what `cmd` does with it (reading the instructions and license,
/// writing the log buffer or id array of the given sizes).
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] struct of the size
    // passed; the caller vouches for the pointers inside it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A descriptor returned by `bpf(2)`.
fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The size of the verifier's log buffer when a load fails.
const LOG_SIZE: usize = 64 * 1024;

/// Loads a device program. On failure, loads it once more with the verifier's
/// log on, so that the error says what it rejected.
fn load(program: &Program) -> Result<OwnedFd, DevicesError> {
    // No helper is called, so no GPL-only one: any license string is accepted
    // (the kernel needs a readable string, not a particular one).
    let license = c"Apache-2.0";
    let insns = program.instructions();
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"armlet_devices");
    let attr = |log: &mut Vec<u8>| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as usize as u64,
        license: license.as_ptr() as usize as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as usize as u64
        },
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let mut no_log = Vec::new();
    // SAFETY: the instructions and license outlive the call; no log buffer.
    let first = unsafe { bpf(BPF_PROG_LOAD, &mut attr(&mut no_log)) };
    let source = match first.and_then(owned_fd) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    // SAFETY: as above, and the log buffer of `log_size` bytes outlives the call.
    if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, &mut attr(&mut log)) }.and_then(owned_fd) {
        // Refused once, accepted on the retry (a transient failure): use it.
        return Ok(fd);
    }
    let text = String::from_utf8_lossy(&log);
    let text = text.trim_end_matches('\0').trim_end();
    // The end of the log says why; keep the error readable.
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    let hint = if source.raw_os_error() == Some(libc::EPERM) {
        " (needs CAP_SYS_ADMIN or CAP_BPF; before Linux 5.11, also RLIMIT_MEMLOCK room)"
    } else {
        ""
    };
    Err(DevicesError::Load {
        source: io::Error::new(source.kind(), format!("{source}{hint}")),
        log: tail,
    })
}

/// Attaches `program` to the cgroup `dir`, beside any already there.
fn attach(dir: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        // Several programs per cgroup: each must allow. (Without it, a cgroup
        // holds one program, and attaching another replaces it; with it, we
        // detach the old ones ourselves after the new one is in place.)
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// Detaches `program` from the cgroup `dir`.
fn detach(dir: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..AttachAttr::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// A descriptor for the loaded program `id`.
fn program_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        prog_id: id,
        ..GetIdAttr::default()
    };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.and_then(owned_fd)
}

/// The ids of the device programs attached to the cgroup `dir` itself (not
/// those inherited from its ancestors).
fn attached_programs(dir: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: dir.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as usize as u64,
            prog_cnt: ids.len() as u32,
            ..QueryAttr::default()
        };
        // SAFETY: `ids` has room for `prog_cnt` ids and outlives the call.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // More than we made room for: the kernel says how many.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() =>
            {
                ids = vec![0u32; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- A reference evaluation and an interpreter, to check programs against.

    /// A request: (type, major, minor, access bits).
    type Request = (u32, u32, u32, u32);

    /// The rules' meaning, read literally from the OCI rules: per access bit,
    /// the last rule naming it (an `a` rule names every bit of every device)
    /// decides; a request is allowed when all its bits are.
    fn reference(rules: &[LinuxDeviceCgroup], (kind, major, minor, access): Request) -> bool {
        [ACC_MKNOD, ACC_READ, ACC_WRITE]
            .into_iter()
            .filter(|bit| access & bit != 0)
            .all(|bit| {
                let mut allowed = false;
                for r in rules {
                    let typ = r.typ().unwrap_or_default();
                    if typ == LinuxDeviceType::A {
                        allowed = r.allow();
                        continue;
                    }
                    let type_ok = match typ {
                        LinuxDeviceType::C => kind == DEV_CHAR,
                        LinuxDeviceType::B => kind == DEV_BLOCK,
                        _ => unreachable!("test rules are a, b or c"),
                    };
                    let num_ok =
                        |n: Option<i64>, v: u32| n.is_none_or(|n| n == -1 || n == i64::from(v));
                    let names_bit = r.access().as_deref().unwrap_or("").chars().any(|c| {
                        matches!(
                            (c, bit),
                            ('r', ACC_READ) | ('w', ACC_WRITE) | ('m', ACC_MKNOD)
                        )
                    });
                    if type_ok && num_ok(r.major(), major) && num_ok(r.minor(), minor) && names_bit
                    {
                        allowed = r.allow();
                    }
                }
                allowed
            })
    }

    /// Runs a program on a request, as the kernel would (for the instructions
    /// we emit; anything else fails the test). Also checks what the verifier
    /// would: registers read only once written, jumps forward and in range, R0
    /// set on exit.
    fn run(program: &Program, (kind, major, minor, access): Request) -> bool {
        let insns = program.instructions();
        let ctx = [(access << 16) | kind, major, minor];
        let mut regs: [Option<u64>; 11] = [None; 11];
        regs[1] = Some(0xc0ffee); // the context pointer
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= insns.len(), "no progress at {pc}");
            let insn = insns
                .get(pc)
                .unwrap_or_else(|| panic!("fell off the end at {pc}"));
            let (dst, src) = (insn.dst() as usize, insn.src() as usize);
            let read =
                |r: usize| regs[r].unwrap_or_else(|| panic!("r{r} read before written at {pc}"));
            let imm32 = insn.imm() as u32;
            let imm64 = insn.imm() as i64 as u64;
            let mut next = pc + 1;
            match insn.code() {
                0x61 => {
                    assert_eq!(src, 1, "loads only from the context");
                    assert_eq!(read(1), 0xc0ffee, "r1 is still the context");
                    let off = insn.off();
                    assert!(off >= 0 && off % 4 == 0 && off < 12, "context offset {off}");
                    regs[dst] = Some(u64::from(ctx[off as usize / 4]));
                }
                0x54 => regs[dst] = Some(u64::from(read(dst) as u32 & imm32)),
                0x74 => regs[dst] = Some(u64::from((read(dst) as u32) >> (imm32 & 31))),
                0xbc => regs[dst] = Some(u64::from(read(src) as u32)),
                0xb4 => regs[dst] = Some(u64::from(imm32)),
                0x15 | 0x55 => {
                    let off = insn.off();
                    assert!(off >= 0, "backward jump at {pc}");
                    let target = pc + 1 + off as usize;
                    assert!(target < insns.len(), "jump out of range at {pc}");
                    let equal = read(dst) == imm64;
                    if equal == (insn.code() == 0x15) {
                        next = target;
                    }
                }
                0x95 => {
                    let r0 = read(0);
                    assert!(r0 <= 1, "returns {r0}");
                    return r0 == 1;
                }
                other => panic!("unexpected opcode {other:#x} at {pc}"),
            }
            pc = next;
        }
    }

    fn rule(allow: bool, typ: char, major: i64, minor: i64, access: &str) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroupBuilder::default().allow(allow);
        r = r.typ(match typ {
            'a' => LinuxDeviceType::A,
            'b' => LinuxDeviceType::B,
            'c' => LinuxDeviceType::C,
            'u' => LinuxDeviceType::U,
            _ => LinuxDeviceType::P,
        });
        // -1 leaves the number out (the same as -1: any).
        if major != -1 {
            r = r.major(major);
        }
        if minor != -1 {
            r = r.minor(minor);
        }
        if !access.is_empty() {
            r = r.access(access);
        }
        r.build().unwrap()
    }

    /// containerd's defaults for a Kubernetes container (and armlet's spec).
    fn containerd() -> Vec<LinuxDeviceCgroup> {
        let mut rules = vec![
            rule(false, 'a', -1, -1, "rwm"),
            rule(true, 'c', -1, -1, "m"),
            rule(true, 'b', -1, -1, "m"),
        ];
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            rules.push(rule(true, 'c', major, minor, "rwm"));
        }
        rules.push(rule(true, 'c', 136, -1, "rwm"));
        rules.push(rule(true, 'c', 10, 200, "rwm"));
        rules
    }

    /// Every combination of the given numbers, both types and all accesses.
    fn requests(numbers: &[u32]) -> Vec<Request> {
        let mut all = Vec::new();
        for kind in [DEV_BLOCK, DEV_CHAR] {
            for &major in numbers {
                for &minor in numbers {
                    for access in 0..8 {
                        all.push((kind, major, minor, access));
                    }
                }
            }
        }
        all
    }

    /// The numbers the rules mention, their neighbours, and some others.
    fn numbers_of(rules: &[LinuxDeviceCgroup]) -> Vec<u32> {
        let mut n = vec![0, 1, 2, 3, 4, 5, 11, 179, 4095, 1 << 20, u32::MAX];
        for r in rules {
            for v in [r.major(), r.minor()].into_iter().flatten() {
                if let Ok(v) = u32::try_from(v) {
                    n.extend([v, v.wrapping_add(1), v.saturating_sub(1)]);
                }
            }
        }
        n.sort_unstable();
        n.dedup();
        n
    }

    /// Checks the program of `rules` against the reference on many requests.
    fn assert_matches_reference(rules: &[LinuxDeviceCgroup]) {
        let program = Policy::from_rules(rules).unwrap().program();
        for request in requests(&numbers_of(rules)) {
            let want = request.3 == 0 || reference(rules, request);
            assert_eq!(
                run(&program, request),
                want,
                "request {request:?} under {:?}\nprogram: {:#?}",
                rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
                program.instructions()
            );
        }
    }

    const MKNOD: u32 = ACC_MKNOD;
    const READ: u32 = ACC_READ;
    const WRITE: u32 = ACC_WRITE;
    const RW: u32 = ACC_READ | ACC_WRITE;

    #[test]
    fn containerd_defaults_allow_the_standard_devices_only() {
        let mut rules = containerd();
        rules.extend(libcontainer_defaults());
        let program = Policy::from_rules(&rules).unwrap().program();
        let allowed = |kind, major, minor, access| run(&program, (kind, major, minor, access));
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 0),
            (136, 7),
        ] {
            assert!(allowed(DEV_CHAR, major, minor, RW), "c {major}:{minor}");
        }
        // mknod of anything, opening only the listed ones.
        assert!(allowed(DEV_CHAR, 1, 11, MKNOD));
        assert!(allowed(DEV_BLOCK, 179, 0, MKNOD));
        assert!(!allowed(DEV_CHAR, 1, 11, WRITE), "/dev/kmsg");
        assert!(!allowed(DEV_CHAR, 1, 1, READ), "/dev/mem");
        assert!(!allowed(DEV_BLOCK, 179, 0, READ), "the SD card");
        assert!(!allowed(DEV_BLOCK, 1, 3, READ), "b 1:3 is not /dev/null");
        assert!(!allowed(DEV_CHAR, 1, 3, RW | 8), "an unknown access bit");
        assert_matches_reference(&rules);
    }

    #[test]
    fn representative_rule_lists_match_the_reference() {
        let lists: Vec<Vec<LinuxDeviceCgroup>> = vec![
            vec![],
            containerd(),
            // Privileged: allow all, then whatever.
            vec![rule(true, 'a', -1, -1, "rwm")],
            vec![rule(true, 'a', -1, -1, "rwm"), rule(true, 'c', 1, 3, "rwm")],
            // Blacklist: allow all but writing one device, and block devices.
            vec![
                rule(true, 'a', -1, -1, "rwm"),
                rule(false, 'c', 1, 11, "w"),
                rule(false, 'b', -1, -1, "rw"),
            ],
            // A later deny takes one bit back; a later allow gives it again.
            vec![
                rule(false, 'a', -1, -1, ""),
                rule(true, 'c', 1, 3, "rwm"),
                rule(false, 'c', 1, 3, "w"),
            ],
            vec![
                rule(false, 'a', -1, -1, ""),
                rule(true, 'c', -1, -1, "rwm"),
                rule(false, 'c', 1, -1, "rw"),
                rule(true, 'c', 1, 5, "r"),
            ],
            // Split grants add up per bit.
            vec![rule(true, 'c', 4, 1, "r"), rule(true, 'c', 4, 1, "w")],
            // Rules before an `a` rule are forgotten.
            vec![
                rule(true, 'c', 1, 3, "rwm"),
                rule(false, 'a', 1, 3, "r"),
                rule(true, 'b', 7, -1, "rm"),
                rule(false, 'b', 7, 2, "m"),
            ],
            // Minor wildcard with a major, major wildcard with a minor.
            vec![rule(true, 'c', -1, 3, "rw"), rule(true, 'b', 8, -1, "m")],
            // Rules without access decide nothing.
            vec![rule(true, 'c', 1, 3, ""), rule(true, 'c', 1, 5, "mrw")],
            // Large (but valid) numbers.
            vec![
                rule(true, 'c', 4095, (1 << 20) - 1, "rwm"),
                rule(true, 'c', i32::MAX as i64, 0, "r"),
            ],
        ];
        for rules in &lists {
            assert_matches_reference(rules);
        }
    }

    #[test]
    fn random_rule_lists_match_the_reference() {
        // A small deterministic generator: no dependency, the same lists each run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let accesses = ["", "r", "w", "m", "rw", "rm", "wm", "rwm", "mwr"];
        for _ in 0..300 {
            let len = next(8) as usize;
            let rules: Vec<_> = (0..len)
                .map(|_| {
                    let typ = ['a', 'b', 'c', 'c'][next(4) as usize];
                    let num = |next: &mut dyn FnMut(u64) -> u64| match next(4) {
                        0 => -1,
                        v => v as i64,
                    };
                    let major = num(&mut next);
                    let minor = num(&mut next);
                    let access = accesses[next(accesses.len() as u64) as usize];
                    rule(next(2) == 0, typ, major, minor, access)
                })
                .collect();
            assert_matches_reference(&rules);
        }
    }

    #[test]
    fn privileged_needs_no_program() {
        let mut rules = vec![rule(true, 'a', -1, -1, "rwm")];
        rules.extend(libcontainer_defaults());
        assert!(Policy::from_rules(&rules).unwrap().allows_everything());
        let mut rules = containerd();
        rules.extend(libcontainer_defaults());
        assert!(!Policy::from_rules(&rules).unwrap().allows_everything());
        assert!(!Policy::from_rules(&[]).unwrap().allows_everything());
        let blacklist = [rule(true, 'a', -1, -1, "rwm"), rule(false, 'c', 1, 11, "w")];
        assert!(!Policy::from_rules(&blacklist).unwrap().allows_everything());
    }

    #[test]
    fn the_program_has_the_documented_shape() {
        let rules = [rule(false, 'a', -1, -1, "rwm"), rule(true, 'c', 1, 3, "rw")];
        let insns = Policy::from_rules(&rules).unwrap().program().0;
        let code: Vec<(u8, u8, u8, i16, i32)> = insns
            .iter()
            .map(|i| (i.code(), i.dst(), i.src(), i.off(), i.imm()))
            .collect();
        assert_eq!(
            code,
            vec![
                (0x61, 2, 1, 0, 0),      // r2 = ctx->access_type
                (0x54, 2, 0, 0, 0xffff), // w2 &= 0xffff: the type
                (0x61, 3, 1, 0, 0),      // r3 = ctx->access_type
                (0x74, 3, 0, 0, 16),     // w3 >>= 16: the access
                (0x61, 4, 1, 4, 0),      // r4 = ctx->major
                (0x61, 5, 1, 8, 0),      // r5 = ctx->minor
                (0x55, 3, 0, 2, 0),      // if r3 != 0 goto +2
                (0xb4, 0, 0, 0, 1),      // return 1
                (0x95, 0, 0, 0, 0),
                (0x55, 2, 0, 6, 2),  // if type != c goto next rule
                (0x55, 4, 0, 5, 1),  // if major != 1 goto next rule
                (0x55, 5, 0, 4, 3),  // if minor != 3 goto next rule
                (0x54, 3, 0, 0, !6), // w3 &= ~(r|w)
                (0x55, 3, 0, 2, 0),  // if r3 != 0 goto +2
                (0xb4, 0, 0, 0, 1),  // return 1
                (0x95, 0, 0, 0, 0),
                (0xb4, 0, 0, 0, 0), // return 0: the default
                (0x95, 0, 0, 0, 0),
            ]
        );
        // The bytes the kernel reads: opcode, registers (dst low), offset, imm.
        // SAFETY: Insn is a #[repr(C)] struct of plain integers, 8 bytes.
        let bytes: [u8; 8] = unsafe { std::mem::transmute(insns[1]) };
        if cfg!(target_endian = "little") {
            assert_eq!(bytes, [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0]);
        }
        // SAFETY: as above.
        let bytes: [u8; 8] = unsafe { std::mem::transmute(insns[0]) };
        if cfg!(target_endian = "little") {
            assert_eq!(bytes, [0x61, 0x12, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn bad_rules_are_refused_not_ignored() {
        let bad = [
            rule(true, 'u', 1, 3, "rwm"),
            rule(true, 'p', -1, -1, "r"),
            rule(true, 'c', 1, 3, "rwx"),
            rule(true, 'c', -2, 3, "r"),
            rule(true, 'c', 1, i64::from(u32::MAX), "r"),
            rule(false, 'b', 1 << 40, 0, "r"),
        ];
        for r in bad {
            let e = Policy::from_rules(&[rule(false, 'a', -1, -1, ""), r.clone()]).unwrap_err();
            assert!(
                matches!(e, DevicesError::InvalidRule { index: 1, .. }),
                "{r}: {e}"
            );
        }
        // After an `a` rule's type, nothing else is read (as the kernel does).
        let a = rule(true, 'a', -5, 1 << 40, "xyz");
        assert!(Policy::from_rules(&[a]).unwrap().allows_everything());
    }

    #[test]
    fn process_cgroup_reads_the_v2_line() {
        let dir = process_cgroup(std::process::id() as i32, Path::new("/x")).unwrap();
        assert!(dir.starts_with("/x"), "{}", dir.display());
        assert!(process_cgroup(-1, Path::new("/x")).is_err());
    }

    // -- On the real kernel.

    /// Where this host's v2 hierarchy is: `/sys/fs/cgroup` on a pure v2 host,
    /// `/sys/fs/cgroup/unified` on a hybrid one (this development VM).
    fn v2_root() -> PathBuf {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the device program tests need root (they load eBPF and make cgroups)"
        );
        [crate::stats::CGROUP_ROOT, "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.threads").exists())
            .expect("these tests need a cgroup v2 hierarchy (pure, or hybrid's unified)")
    }

    /// A v2 cgroup of our own, removed on drop.
    struct TestCgroup(PathBuf);

    impl TestCgroup {
        fn new(name: &str) -> TestCgroup {
            let path = v2_root().join(format!("armlet-devices-test-{}-{name}", std::process::id()));
            let _ = fs::remove_dir(&path);
            fs::create_dir(&path).unwrap();
            TestCgroup(path)
        }

        /// Runs `script` with sh inside this cgroup: returns (exit code, output).
        fn sh(&self, script: &str) -> (i32, String) {
            let procs = self.0.join("cgroup.procs");
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("echo $$ > {} && {script}", procs.display()))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code().unwrap_or(-1), text)
        }

        fn programs(&self) -> Vec<u32> {
            let dir = File::open(&self.0).unwrap();
            attached_programs(dir.as_fd()).unwrap()
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }

    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "qemu-user does not emulate bpf(2); the QEMU boot tests load the program on ARM kernels"
    )]
    fn the_kernel_enforces_the_program() {
        let cgroup = TestCgroup::new("enforce");
        let scratch =
            std::env::temp_dir().join(format!("armlet-devices-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir(&scratch).unwrap();
        // /dev/kmsg's numbers, only opened for reading (and closed unread).
        let kmsg = scratch.join("kmsg");
        let probe = format!(
            "mknod {k} c 1 11 && true < {k} && echo kmsg-opened; rm -f {k}; \
             [ \"$(head -c 4 /dev/zero | wc -c)\" = 4 ] && echo zero-read; \
             echo x > /dev/null && echo null-written; \
             [ \"$(head -c 4 /dev/urandom | wc -c)\" = 4 ] && echo urandom-read",
            k = kmsg.display()
        );
        // Without a program the probe opens it: what follows is the program's doing.
        let (_, before) = cgroup.sh(&probe);
        assert!(before.contains("kmsg-opened"), "{before}");

        let mut rules = containerd();
        rules.extend(libcontainer_defaults());
        let policy = Policy::from_rules(&rules).unwrap();
        apply(&cgroup.0, &policy).unwrap();
        assert_eq!(cgroup.programs().len(), 1);
        let (_, after) = cgroup.sh(&probe);
        assert!(!after.contains("kmsg-opened"), "{after}");
        assert!(after.contains("Operation not permitted"), "{after}");
        for works in ["zero-read", "null-written", "urandom-read"] {
            assert!(after.contains(works), "{after}");
        }

        // Applying again replaces it: still one program, still enforced.
        apply(&cgroup.0, &policy).unwrap();
        let programs = cgroup.programs();
        assert_eq!(programs.len(), 1, "{programs:?}");
        let (_, again) = cgroup.sh(&probe);
        assert!(!again.contains("kmsg-opened"), "{again}");

        // Privileged: no program left.
        let everything = Policy::from_rules(&[rule(true, 'a', -1, -1, "rwm")]).unwrap();
        apply(&cgroup.0, &everything).unwrap();
        assert!(cgroup.programs().is_empty());
        let (_, privileged) = cgroup.sh(&probe);
        assert!(privileged.contains("kmsg-opened"), "{privileged}");
        let _ = fs::remove_dir_all(&scratch);
    }

    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "qemu-user does not emulate bpf(2); the QEMU boot tests load the program on ARM kernels"
    )]
    fn restrict_container_finds_the_process_cgroup() {
        let cgroup = TestCgroup::new("restrict");
        let root = v2_root();
        let dir = std::env::temp_dir().join(format!("armlet-devices-spec-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
            .devices(containerd())
            .build()
            .unwrap();
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        spec.save(dir.join("config.json")).unwrap();
        // A process waiting in the cgroup, as a created container's init does.
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec sleep 30",
                cgroup.0.display()
            ))
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut found = None;
        for _ in 0..100 {
            if let Ok(p) = process_cgroup(pid, &root) {
                if p == cgroup.0 {
                    found = Some(p);
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(found.as_ref(), Some(&cgroup.0));
        let result = restrict_container(&dir.join("config.json"), pid, &root);
        let programs = cgroup.programs();
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir_all(&dir);
        result.unwrap();
        assert_eq!(programs.len(), 1);
    }

    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "qemu-user does not emulate bpf(2); the QEMU boot tests load the program on ARM kernels"
    )]
    fn verifier_rejections_are_explained() {
        v2_root();
        // Reads R6 before writing it.
        let program = Program(vec![
            Insn::mov32_reg(R0, 6),
            Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0),
        ]);
        let e = load(&program).unwrap_err().to_string();
        assert!(e.contains("verifier log") && e.contains("R6"), "{e}");
    }
}
