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

/// Most input held for a terminal that is not taking it (the rest waits in
/// this process's stdin, where the kernel keeps it).
const MAX_PENDING: usize = 64 * 1024;

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

    // Input waits in `pending` until the terminal takes it: a blocking write
    // while the process's output goes unread would deadlock both once the
    // pty's queues fill (a large paste into a program that echoes).
    set_nonblocking(exec.master()).context("making the terminal non-blocking")?;
    let input_is_terminal = termios::tcgetattr(stdin.as_fd()).is_ok();
    let mut out = stdout.lock();
    let mut buf = [0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    let mut stdin_open = true;
    loop {
        if RESIZED.swap(false, Ordering::SeqCst) {
            copy_window_size(out.as_fd(), exec.master());
        }
        let master = exec.master();
        let mut master_events = PollFlags::POLLIN;
        if !pending.is_empty() {
            master_events |= PollFlags::POLLOUT;
        }
        let mut fds = vec![
            PollFd::new(master, master_events),
            PollFd::new(exec.control(), PollFlags::POLLIN),
        ];
        // Bounded: no more input is read while this much waits.
        if stdin_open && pending.len() < MAX_PENDING {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            other => other.context("waiting for the terminal")?,
        };
        let revents = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        let (master_events, exited, input_ready) =
            (revents(0), !revents(1).is_empty(), !revents(2).is_empty());
        drop(fds);
        if master_events.contains(PollFlags::POLLOUT) {
            match nix::unistd::write(master, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(e).context("writing to the terminal"),
            }
        }
        if master_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
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
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // Piped input has ended: tell the remote side as a terminal
                    // user would, with the EOF character (^D). From a real
                    // terminal in raw mode, ^D arrives as a key press instead.
                    if !input_is_terminal {
                        pending.push(0x04);
                    }
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    }
    drop(out);
    drop(raw);
    Ok(exec.wait()?)
}

/// Sets O_NONBLOCK on the terminal's master (its open file description is ours
/// alone: the supervisor kept no copy).
fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}
