//! Running child processes: echoed or captured, with errors that say what failed.

use std::process::{Command, Output, Stdio};

use crate::{Result, fail};

/// Describes a command the way a user would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command with its output going to the terminal; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| fail!("cannot start `{what}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail!("`{what}` failed ({status})"))
    }
}

/// Runs a command quietly and returns its output; on failure the error carries
/// the tail of what it printed, so a quiet step is still diagnosable.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail!("cannot start `{what}`: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(fail!(
            "`{what}` failed ({}):\n{}{}",
            out.status,
            tail(&out.stdout, 40),
            tail(&out.stderr, 40)
        ))
    }
}

/// Runs a command quietly and returns its standard output as text.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of some output, for error messages.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut s = all[start..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail(b"a\nb", 5), "a\nb\n");
        assert_eq!(tail(b"", 3), "");
    }

    #[test]
    fn capture_reports_the_failing_command_and_its_output() {
        let err = capture(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn stdout_returns_what_the_command_printed() {
        assert_eq!(stdout(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }
}
