//! Just enough ELF reading to tell whether a binary is static and for which CPU.
//!
//! A binary is static when it asks for no program interpreter (no `PT_INTERP`) and
//! names no shared library (no `DT_NEEDED`); a static-pie binary has a dynamic
//! section for its own relocations but still needs nothing from the board.

use std::fmt;

/// CPU architecture recorded in the ELF header (`e_machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// EM_X86_64.
    X86_64,
    /// EM_AARCH64.
    Aarch64,
    /// EM_ARM (32-bit).
    Arm,
    /// Anything else, with its number.
    Other(u16),
}

impl Machine {
    fn from_raw(raw: u16) -> Self {
        match raw {
            62 => Self::X86_64,
            183 => Self::Aarch64,
            40 => Self::Arm,
            other => Self::Other(other),
        }
    }
}

/// What the tests need to know of an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// 64-bit (ELFCLASS64) or 32-bit.
    pub is_64bit: bool,
    /// The CPU it is built for.
    pub machine: Machine,
    /// The program interpreter it asks for (`/lib/ld-linux-...`), if any.
    pub interpreter: Option<String>,
    /// How many shared libraries it names (`DT_NEEDED` entries).
    pub needed_libraries: usize,
}

impl ElfInfo {
    /// True when the binary runs with nothing from the system but a kernel.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed_libraries == 0
    }
}

/// Why a file could not be read as ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfError(String);

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a readable ELF file: {}", self.0)
    }
}

impl std::error::Error for ElfError {}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// Reads an executable's header, program headers and dynamic section.
pub fn inspect(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    let r = Reader::new(bytes)?;
    let machine = Machine::from_raw(r.u16(18)?);
    let (phoff, phentsize, phnum) = if r.is_64 {
        (r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (u64::from(r.u32(28)?), r.u16(42)?, r.u16(44)?)
    };
    let mut interpreter = None;
    let mut needed_libraries = 0;
    for i in 0..u64::from(phnum) {
        let ph = phoff
            .checked_add(i * u64::from(phentsize))
            .ok_or_else(|| ElfError("program header offset overflows".into()))?;
        let p_type = r.u32(ph)?;
        let (offset, filesz) = if r.is_64 {
            (r.u64(ph.saturating_add(8))?, r.u64(ph.saturating_add(32))?)
        } else {
            (
                u64::from(r.u32(ph.saturating_add(4))?),
                u64::from(r.u32(ph.saturating_add(16))?),
            )
        };
        match p_type {
            PT_INTERP => {
                let raw = r.slice(offset, filesz)?;
                let path = raw.split(|b| *b == 0).next().unwrap_or_default();
                interpreter = Some(String::from_utf8_lossy(path).into_owned());
            }
            PT_DYNAMIC => needed_libraries += count_needed(&r, offset, filesz)?,
            _ => {}
        }
    }
    Ok(ElfInfo {
        is_64bit: r.is_64,
        machine,
        interpreter,
        needed_libraries,
    })
}

fn count_needed(r: &Reader<'_>, offset: u64, size: u64) -> Result<usize, ElfError> {
    let entry = if r.is_64 { 16 } else { 8 };
    let mut needed = 0;
    let end = offset.saturating_add(size);
    let mut at = offset;
    while at.saturating_add(entry) <= end {
        let tag = if r.is_64 {
            r.u64(at)?
        } else {
            u64::from(r.u32(at)?)
        };
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed += 1,
            _ => {}
        }
        at += entry;
    }
    Ok(needed)
}

/// Bounds-checked little/big-endian reads.
struct Reader<'a> {
    bytes: &'a [u8],
    is_64: bool,
    little: bool,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError("no ELF magic".into()));
        }
        let is_64 = match bytes.get(4) {
            Some(1) => false,
            Some(2) => true,
            _ => return Err(ElfError("unknown ELF class".into())),
        };
        let little = match bytes.get(5) {
            Some(1) => true,
            Some(2) => false,
            _ => return Err(ElfError("unknown byte order".into())),
        };
        Ok(Self {
            bytes,
            is_64,
            little,
        })
    }

    fn slice(&self, offset: u64, len: u64) -> Result<&'a [u8], ElfError> {
        let start = usize::try_from(offset).map_err(|_| ElfError("offset too large".into()))?;
        let len = usize::try_from(len).map_err(|_| ElfError("length too large".into()))?;
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| ElfError(format!("{len} bytes at {start} lie past the end")))
    }

    fn array<const N: usize>(&self, offset: u64) -> Result<[u8; N], ElfError> {
        let s = self.slice(offset, N as u64)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        if !self.little {
            a.reverse();
        }
        Ok(a)
    }

    fn u16(&self, offset: u64) -> Result<u16, ElfError> {
        self.array(offset).map(u16::from_le_bytes)
    }

    fn u32(&self, offset: u64) -> Result<u32, ElfError> {
        self.array(offset).map(u32::from_le_bytes)
    }

    fn u64(&self, offset: u64) -> Result<u64, ElfError> {
        self.array(offset).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself: a dynamic x86_64 (or whatever host) executable.
    fn own_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn a_dynamically_linked_test_binary_is_seen_as_dynamic() {
        let info = inspect(&own_binary()).unwrap();
        // Host test binaries link glibc dynamically; if that ever changes this test
        // must be revisited rather than silently agree.
        assert!(!info.is_static(), "{info:?}");
        assert!(info.needed_libraries > 0, "{info:?}");
        assert!(
            info.interpreter.as_deref().unwrap_or("").contains("ld-"),
            "{info:?}"
        );
    }

    #[test]
    fn garbage_and_truncated_files_are_errors_not_panics() {
        assert!(inspect(b"").is_err());
        assert!(inspect(b"MZ\x90\x00").is_err());
        let bin = own_binary();
        for len in [5, 16, 40, 63, 64, 100, 1000] {
            // Cut short, a file either still parses (the headers fit) or errors.
            let _ = inspect(&bin[..len.min(bin.len())]);
        }
        let mut bogus = bin[..64].to_vec();
        bogus[4] = 9;
        assert!(inspect(&bogus).is_err());
    }
}
