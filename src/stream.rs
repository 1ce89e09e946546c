//! Running a child with its output streamed live to stderr and a log.
//!
//! The child's stdout and stderr share one pipe so their lines keep their
//! order. Writing to our stderr may fail (a pusher who hung up) or stall (a
//! reader who stopped reading, to hold the deploy lock): a thread of its own
//! writes there, what it cannot take is dropped, and the deploy goes on. The
//! log still gets every byte.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::git::describe;

/// How many recent lines are kept for explaining a failure.
const TAIL: usize = 50;
/// Chunks waiting for stderr before more are dropped (at most 8 KiB each).
const QUEUED: usize = 1024;
/// How long a finished sink waits for stderr to take what is queued.
const DRAIN: Duration = Duration::from_secs(5);

/// Where streamed output goes: our stderr, and the deploy log if there is one.
pub struct Sink {
    /// When what runs through this sink must have finished (a deploy's
    /// time limit), if ever.
    pub deadline: Option<Instant>,
    log: Option<File>,
    terminal: Terminal,
    tail: VecDeque<String>,
    partial: Vec<u8>,
}

impl Sink {
    /// A sink whose runs must end within `limit` from now (a deploy's).
    pub fn within(log: Option<File>, limit: Duration) -> Sink {
        let mut sink = Sink::new(log);
        sink.deadline = Some(Instant::now() + limit);
        sink
    }

    pub fn new(log: Option<File>) -> Sink {
        Sink {
            deadline: None,
            log,
            terminal: Terminal::start(),
            tail: VecDeque::new(),
            partial: Vec::new(),
        }
    }

    /// Writes a chunk of output to stderr and the log.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.terminal.send(chunk);
        if let Some(log) = &mut self.log {
            log.write_all(chunk)
                .context("cannot write the deploy log")?;
        }
        self.remember(chunk);
        Ok(())
    }

    /// A line of Troops' own, streamed like the child's output.
    pub fn note(&mut self, line: &str) -> Result<()> {
        self.write(format!("{line}\n").as_bytes())
    }

    /// The last recent line that contains one of `needles`, trimmed.
    pub fn find_line(&self, needles: &[&str]) -> Option<String> {
        self.tail
            .iter()
            .rev()
            .find(|line| needles.iter().any(|n| line.contains(n)))
            .map(|line| line.trim().to_owned())
    }

    fn remember(&mut self, chunk: &[u8]) {
        self.partial.extend_from_slice(chunk);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.tail
                .push_back(String::from_utf8_lossy(&line).into_owned());
            if self.tail.len() > TAIL {
                self.tail.pop_front();
            }
        }
    }
}

/// Our stderr, written by a thread of its own so that a stalled reader
/// stalls nothing else.
struct Terminal {
    queue: Option<SyncSender<Vec<u8>>>,
    done: Receiver<()>,
    dropping: bool,
}

impl Terminal {
    fn start() -> Terminal {
        let (queue, chunks) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let (finished, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stderr = io::stderr();
            for chunk in chunks {
                let _ = stderr.write_all(&chunk);
            }
            let _ = finished.send(());
        });
        Terminal {
            queue: Some(queue),
            done,
            dropping: false,
        }
    }

    fn send(&mut self, chunk: &[u8]) {
        let Some(queue) = &self.queue else { return };
        if self.dropping {
            // Said once per gap, when the reader takes output again.
            if queue.try_send(CUT.to_vec()).is_err() {
                return;
            }
            self.dropping = false;
        }
        if let Err(TrySendError::Full(_)) = queue.try_send(chunk.to_vec()) {
            self.dropping = true;
        }
    }
}

/// What stands where stderr output was dropped.
const CUT: &[u8] =
    b"\ntroops: output cut here (this terminal stopped reading); the deploy log has all of it\n";

impl Drop for Terminal {
    /// Lets stderr take what is queued, so that later messages come after
    /// it, but never waits long on a reader that stopped.
    fn drop(&mut self) {
        self.queue = None;
        let _ = self.done.recv_timeout(DRAIN);
    }
}

/// Runs `cmd` with stdin closed and its output streamed into `sink`.
///
/// The child gets a process group of its own, and the run ends when the
/// child exits, not when its output closes: a background process it left
/// holding the output (a daemon it forgot to detach) is stopped with the
/// rest of the group instead of holding the deploy. Past the sink's
/// deadline the whole group is stopped and the run fails as timed out.
pub fn run_status(cmd: &mut Command, sink: &mut Sink) -> Result<ExitStatus> {
    use std::os::unix::process::CommandExt;
    let (mut reader, writer) = io::pipe().context("cannot create a pipe")?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    die_with_parent(cmd);
    if std::env::var_os("TROOPS_DEBUG").is_some() {
        eprintln!("troops: running {}", describe(cmd));
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    // Our copies of the write end must be gone, or the read never ends.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (chunks, output) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if chunks.send(buf[..n].to_vec()).is_ok() => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
    });
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    // Stops the group if troops itself dies (even by SIGKILL) before it does.
    let mut guard = Guard::start(group);
    let status = loop {
        match output.recv_timeout(POLL) {
            Ok(chunk) => sink.write(&chunk)?,
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().context("cannot wait for the child")? {
            break status;
        }
        if sink.deadline.is_some_and(|d| Instant::now() >= d) {
            stop_group(group);
            guard.disarm();
            let _ = child.wait();
            drain(&output, sink)?;
            return Err(crate::error::UserError::new(
                "timed out: the deploy ran past its time limit and was stopped",
            )
            .hint("make the deployment faster, or raise `deploy_timeout` in /etc/troops/troops.toml (or --deploy-timeout)")
            .into());
        }
    };
    // What the child left running goes with it; its last output is kept.
    drain_for(&output, sink, LINGER)?;
    stop_group(group);
    guard.disarm();
    drain(&output, sink)?;
    Ok(status)
}

/// `troops guard` watching a child's process group: it holds the read end of
/// a pipe whose write end only this process has. When that closes without a
/// word (this process was killed, or the run failed before stopping the
/// group), the guard stops the group. Once the run has stopped the group
/// itself, `disarm` tells the guard so: it leaves, and never signals a group
/// id that the kernel may have handed to another process since.
struct Guard {
    pipe: Option<io::PipeWriter>,
}

impl Guard {
    fn start(group: nix::unistd::Pid) -> Guard {
        let spawned = (|| -> Result<io::PipeWriter> {
            let (reader, writer) = io::pipe()?;
            Command::new(std::env::current_exe()?)
                .args(["guard", "--group", &group.as_raw().to_string()])
                .stdin(reader)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            Ok(writer)
        })();
        match spawned {
            Ok(writer) => Guard { pipe: Some(writer) },
            // Without it a killed troops leaves deploy.py's children
            // running; deploy.py itself still dies with us (PDEATHSIG).
            Err(e) => {
                eprintln!("troops: warning: cannot start the process group's guard: {e:#}");
                Guard { pipe: None }
            }
        }
    }

    /// The run stopped the group itself: the guard may leave.
    fn disarm(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"done");
        }
    }
}

/// Internal: stop a deploy's process group once troops is gone
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// The process group to stop
    #[arg(long)]
    group: i32,
}

/// `troops guard`: waits on stdin; stops the group if it closes without a
/// word (troops died), leaves if troops says the run is over.
pub fn guard(args: GuardArgs) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match io::stdin().read(&mut byte) {
            Ok(0) => break,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if args.group > 1 {
        stop_group(nix::unistd::Pid::from_raw(args.group));
    }
    Ok(())
}

/// How often a running child is checked on.
const POLL: Duration = Duration::from_millis(20);
/// How long output is still read after the child exited, before whatever
/// it left running is stopped.
const LINGER: Duration = Duration::from_millis(200);
/// How long a stopped group gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// SIGTERM to every process of `group`, then SIGKILL to what is left.
fn stop_group(group: nix::unistd::Pid) {
    use nix::sys::signal::{Signal, killpg};
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let started = Instant::now();
    while started.elapsed() < GRACE {
        // Signal 0: does any process of the group remain?
        if killpg(group, None).is_err() {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = killpg(group, Signal::SIGKILL);
}

/// Output already read, and whatever arrives until the writers are gone.
fn drain(output: &Receiver<Vec<u8>>, sink: &mut Sink) -> Result<()> {
    drain_for(output, sink, GRACE)
}

/// Output arriving within `limit` from now (a process that escaped the
/// group may keep writing: this never waits longer).
fn drain_for(output: &Receiver<Vec<u8>>, sink: &mut Sink, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    while let Ok(chunk) = output.recv_timeout(end.saturating_duration_since(Instant::now())) {
        sink.write(&chunk)?;
    }
    Ok(())
}

/// A deploy.py outliving a killed troops would run beside the next deploy,
/// which no longer waits for it: have the kernel stop it (prctl(2)).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(io::Error::other("troops exited before the child started"));
            }
            Ok(())
        });
    }
}

/// Like `run_status`, but a failure is an error naming the command.
pub fn run(cmd: &mut Command, sink: &mut Sink) -> Result<()> {
    let status = run_status(cmd, sink)?;
    if !status.success() {
        bail!("`{}` {}", describe(cmd), explain(status));
    }
    Ok(())
}

/// "exited with status 3" or "was killed by signal 9 (SIGKILL)".
pub fn explain(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let signal = status.signal().unwrap_or(0);
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(sig) => format!("was killed by signal {signal} ({sig})"),
        Err(_) => format!("was killed by signal {signal}"),
    }
}
