//! `armlet exec -t`: this terminal connected to a process's pseudo-terminal in a
//! container, the way `kubectl exec -it` and `docker exec -it` behave.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use armlet_runtime::client::TtyExec;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{self, SetArg, Termios};

/// Set by SIGWINCH: the local window changed size.
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: i32) {
    RESIZED.store(true, Ordering::SeqCst);
}

/// Puts a terminal into raw mode (keys go to the remote process unprocessed:
/// Ctrl-C reaches it as a byte for its own terminal to turn into SIGINT) and
/// restores it when dropped.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Result<Option<Self>> {
        let Ok(saved) = termios::tcgetattr(fd) else {
            return Ok(None); // not a terminal: nothing to change
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).context("setting the terminal raw")?;
        Ok(Some(Self { fd, saved }))
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the size of `from` (a terminal) onto `to`, if `from` is one.
fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize to the pointer, TIOCSWINSZ reads
    // one; both point at `size`, alive for the calls.
    unsafe {
        if nix::libc::ioctl(from.as_raw_fd(), nix::libc::TIOCGWINSZ, &mut size) == 0 {
            nix::libc::ioctl(to.as_raw_fd(), nix::libc::TIOCSWINSZ, &size);
        }
    }
}

/// Relays this process's stdin and stdout to the exec'd process's terminal
/// until it exits; returns its exit code.
pub fn relay(mut exec: TtyExec) -> Result<i32> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let action = SigAction::new(
        SigHandler::Handler(on_winch),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { sigaction(Signal::SIGWINCH, &action) }.context("installing a SIGWINCH handler")?;
    copy_window_size(stdout.as_fd(), exec.master());
    let raw = RawMode::enter(stdin.as_fd())?;

    let mut out = stdout.lock();
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        if RESIZED.swap(false, Ordering::SeqCst) {
            copy_window_size(out.as_fd(), exec.master());
        }
        let master = exec.master();
        let mut fds = vec![
            PollFd::new(master, PollFlags::POLLIN),
            PollFd::new(exec.control(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            other => other.context("waiting for the terminal")?,
        };
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (master_ready, exited, input_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if master_ready {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => break, // every holder of the terminal is gone
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(e).context("reading the terminal"),
            }
            continue;
        }
        if exited {
            break;
        }
        if input_ready {
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => write_all(master, &buf[..n]).context("writing to the terminal")?,
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
    drop(out);
    drop(raw);
    Ok(exec.wait()?)
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
