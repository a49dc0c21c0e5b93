//! The `Command` class: runs a program (no shell), records its output, and makes sure that no process it
//! started outlives its run.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use flowrun_domain::{Flow, FlowClass, FlowError, RunContext};
use schemars::JsonSchema;
use serde::Deserialize;
use thiserror::Error;

/// How many of the last stderr lines a failure message quotes.
pub const STDERR_TAIL_LINES: usize = 20;

/// Output lines longer than this (in bytes) are recorded in pieces of this size, so that a stream without
/// newlines is never held in memory whole.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// The longest stderr line quoted in a failure message; the whole line is in the run's output.
const MAX_QUOTED_LINE_BYTES: usize = 1024;

/// How long the output of a process that has exited is still read, for grandchildren that escaped its
/// process group (`setsid`) and keep its pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The settings of [`Command`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CommandSettings {
    /// The program: a name looked up on `PATH`, or a path. It is run directly, without a shell; for shell
    /// syntax write `"program": "sh", "args": ["-c", "…"]`.
    pub program: String,
    /// Its arguments, each passed as it is (no word splitting, no globbing).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for the program, on top of flowrun's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory to run the program in; flowrun's current directory when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text written to the program's standard input, which is then closed; no standard input when absent.
    #[serde(default)]
    pub stdin: Option<String>,
    /// When the run is asked to stop (timeout, cancel, shutdown): seconds between SIGTERM and SIGKILL to the
    /// program's process group.
    #[serde(default = "default_kill_grace")]
    #[schemars(range(min = 0))]
    pub kill_grace_secs: f64,
}

/// Shorter than the executor's stop grace (5 s), so that the process group is killed and its exit
/// recorded before the executor gives up on the flow.
fn default_kill_grace() -> f64 {
    3.0
}

/// Runs a program in its own process group and records its stdout and stderr in the run's output.
///
/// - Exit code 0 is a success; any other exit code, or death by a signal, is a failure whose message names
///   it and quotes the last [`STDERR_TAIL_LINES`] lines of stderr.
/// - stdout and stderr lines are recorded as they arrive, interleaved and without any prefix (as a terminal
///   would show `2>&1`); a line longer than [`MAX_LINE_BYTES`] is recorded in pieces; bytes that are not
///   UTF-8 show as `�`. The run's output keeps the head and the tail of a runaway stream within its bound.
/// - When the run is asked to stop, the whole process group gets SIGTERM, then SIGKILL after
///   `kill_grace_secs`. When the program exits, whatever is left of its group is killed. If the flow is
///   dropped before it finished (the executor's stop grace ran out, or the process is shutting down), the
///   group is killed then: no process the command started outlives its run (except one that deliberately
///   left the group, with `setsid` for example).
///
/// Unix only: on other platforms the class refuses to build.
#[derive(Debug)]
pub struct Command {
    settings: CommandSettings,
    kill_grace: Duration,
}

impl FlowClass for Command {
    const NAME: &'static str = "Command";
    type Settings = CommandSettings;

    fn build(settings: CommandSettings) -> Result<Self, String> {
        if !cfg!(unix) {
            return Err("the Command class runs only on Unix".to_owned());
        }
        if settings.program.is_empty() {
            return Err("`program` must not be empty".to_owned());
        }
        let texts = std::iter::once(&settings.program)
            .chain(&settings.args)
            .chain(settings.env.keys())
            .chain(settings.env.values())
            .chain(&settings.cwd);
        for text in texts {
            if text.contains('\0') {
                return Err(format!(
                    "`{}` contains a NUL byte, which a process cannot be given",
                    text.escape_debug()
                ));
            }
        }
        if let Some(name) = settings.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(format!("`env`: `{name}` is not a variable name"));
        }
        let grace = settings.kill_grace_secs;
        let kill_grace = Duration::try_from_secs_f64(grace)
            .map_err(|_| format!("`kill_grace_secs` must be a non-negative number, got {grace}"))?;
        Ok(Self { settings, kill_grace })
    }
}

/// Why a [`Command`] run failed. Callers can downcast a run's error to it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// The program is not there (nor on `PATH`).
    #[error("program `{program}` not found")]
    NotFound {
        /// The configured program.
        program: String,
    },
    /// The program exists but may not be executed.
    #[error("program `{program}` is not executable (permission denied)")]
    NotExecutable {
        /// The configured program.
        program: String,
    },
    /// The working directory is missing or not a directory.
    #[error("working directory `{cwd}` does not exist or is not a directory")]
    BadCwd {
        /// The configured directory.
        cwd: String,
    },
    /// Starting the program failed for another reason.
    #[error("could not start `{program}`: {reason}")]
    Spawn {
        /// The configured program.
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Waiting for the program failed.
    #[error("could not wait for `{program}`: {reason}")]
    Wait {
        /// The configured program.
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The program exited with a non-zero code.
    #[error("`{program}` exited with code {code}{}", quote(stderr_tail))]
    Exited {
        /// The configured program.
        program: String,
        /// Its exit code.
        code: i32,
        /// Its last lines of stderr, oldest first.
        stderr_tail: Vec<String>,
    },
    /// The program was killed by a signal it did not get from flowrun.
    #[error("`{program}` was killed by signal {signal} ({number}){}", quote(stderr_tail))]
    Killed {
        /// The configured program.
        program: String,
        /// The signal's name (`SIGKILL`).
        signal: String,
        /// The signal's number.
        number: i32,
        /// Its last lines of stderr, oldest first.
        stderr_tail: Vec<String>,
    },
    /// The run was asked to stop (timeout, cancel, shutdown) and the process group was stopped.
    #[error("`{program}` was stopped: {how}")]
    Stopped {
        /// The configured program.
        program: String,
        /// Which signals it took.
        how: String,
    },
}

fn quote(stderr_tail: &[String]) -> String {
    if stderr_tail.is_empty() {
        return String::new();
    }
    format!("; last lines of stderr:\n{}", stderr_tail.join("\n"))
}

#[cfg(unix)]
#[async_trait]
impl Flow for Command {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        unix::run(&self.settings, self.kill_grace, context)
            .await
            .map_err(FlowError::new)
    }
}

#[cfg(not(unix))]
#[async_trait]
impl Flow for Command {
    async fn run(&mut self, _: &mut RunContext) -> Result<(), FlowError> {
        Err(FlowError::msg("the Command class runs only on Unix"))
    }
}

/// The last lines of stderr, kept for the failure message.
#[derive(Debug, Default)]
struct StderrTail(VecDeque<String>);

impl StderrTail {
    /// Notes complete lines (text ending with a newline) of stderr, keeping only the last ones.
    fn note(&mut self, text: &str) {
        // Only the last lines of this piece can be among the last lines overall.
        let mut newest: Vec<&str> = text.lines().rev().take(STDERR_TAIL_LINES).collect();
        newest.reverse();
        for line in newest {
            let cut = floor_char_boundary(line, MAX_QUOTED_LINE_BYTES);
            let mut quoted = line[..cut].to_owned();
            if cut < line.len() {
                quoted.push('…');
            }
            self.0.push_back(quoted);
            if self.0.len() > STDERR_TAIL_LINES {
                self.0.pop_front();
            }
        }
    }

    fn into_lines(self) -> Vec<String> {
        self.0.into()
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Cuts a stream into the complete lines it has received, holding back at most one partial line (and at
/// most [`MAX_LINE_BYTES`] of it).
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes read from the stream and returns the text that is ready to record: whole lines, each
    /// ending with a newline, or an over-long line's first piece. Empty when nothing is ready.
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut ready = String::new();
        // `pending[..flushed]` is in `ready`; `start` is where the current line starts.
        let (mut flushed, mut start) = (0, 0);
        loop {
            let end = self.pending.len().min(start + MAX_LINE_BYTES);
            let window = &self.pending[start..end];
            if let Some(newline) = window.iter().position(|&b| b == b'\n') {
                start += newline + 1;
                continue;
            }
            if window.len() < MAX_LINE_BYTES {
                break;
            }
            // A line longer than the limit: what came before it, then its first piece as a line.
            let piece_end = start + utf8_cut(window);
            ready.push_str(&String::from_utf8_lossy(&self.pending[flushed..piece_end]));
            ready.push('\n');
            (flushed, start) = (piece_end, piece_end);
        }
        // Complete lines end with a newline, so this never cuts a character.
        ready.push_str(&String::from_utf8_lossy(&self.pending[flushed..start]));
        self.pending.drain(..start);
        ready
    }

    /// The stream ended: whatever partial line is left, with a newline.
    fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let mut rest = String::from_utf8_lossy(&self.pending).into_owned();
        rest.push('\n');
        self.pending.clear();
        rest
    }
}

/// Where to cut `bytes` so as not to split a UTF-8 character at its end (so that a long line cut in pieces
/// keeps its characters); all of it when it does not end inside one.
fn utf8_cut(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Err(error) if error.error_len().is_none() && error.valid_up_to() > 0 => error.valid_up_to(),
        _ => bytes.len(),
    }
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::unix::process::ExitStatusExt as _;
    use std::path::Path;
    use std::process::{ExitStatus, Stdio};
    use std::time::Duration;

    use flowrun_domain::{Cancellation, RunContext, RunOutput};
    use nix::errno::Errno;
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::process::{Child, ChildStderr, ChildStdout};
    use tokio::sync::watch;

    use super::{CommandError, CommandSettings, DRAIN_GRACE, LineSplitter, StderrTail};

    /// Kills the process group with SIGKILL when dropped, unless disarmed: what keeps a dropped flow's
    /// processes from outliving its run.
    struct GroupGuard {
        pgid: Pid,
        armed: bool,
    }

    impl GroupGuard {
        fn signal(&self, signal: Signal) {
            // ESRCH: the group is already gone, which is what we want.
            match killpg(self.pgid, signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(error) => {
                    tracing::warn!(pgid = self.pgid.as_raw(), %signal, %error, "could not signal a command's process group")
                }
            }
        }
    }

    impl Drop for GroupGuard {
        fn drop(&mut self) {
            if self.armed {
                self.signal(Signal::SIGKILL);
            }
        }
    }

    pub(super) async fn run(
        settings: &CommandSettings,
        kill_grace: Duration,
        context: &RunContext,
    ) -> Result<(), CommandError> {
        let program = settings.program.clone();
        let mut command = tokio::process::Command::new(&settings.program);
        command
            .args(&settings.args)
            .envs(&settings.env)
            .stdin(if settings.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that signals reach everything it starts and nothing else.
            .process_group(0);
        if let Some(cwd) = &settings.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|error| spawn_error(settings, &error))?;
        let Some(pid) = child.id() else {
            return Err(CommandError::Spawn {
                program,
                reason: "the process vanished as it started".to_owned(),
            });
        };
        let pid = i32::try_from(pid).map_err(|_| CommandError::Spawn {
            program: program.clone(),
            reason: format!("process id {pid} out of range"),
        })?;
        // The group's id is the child's pid (process_group(0)); no other process can take that id while any
        // member of the group is alive.
        let mut guard = GroupGuard {
            pgid: Pid::from_raw(pid),
            armed: true,
        };
        let (exited_tx, exited_rx) = watch::channel(false);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let supervise = supervise(
            &mut child,
            &guard,
            &program,
            kill_grace,
            context.cancellation(),
            context.output(),
            exited_tx,
        );
        let feed = feed(stdin, settings.stdin.as_deref(), exited_rx.clone());
        let pump = pump(stdout, stderr, context.output(), exited_rx);
        let (waited, (), stderr_tail) = tokio::join!(supervise, feed, pump);
        guard.armed = false;

        let (status, stopped) = waited?;
        if let Some(how) = stopped {
            return Err(CommandError::Stopped { program, how });
        }
        outcome(program, status, stderr_tail)
    }

    fn spawn_error(settings: &CommandSettings, error: &io::Error) -> CommandError {
        let program = settings.program.clone();
        if let Some(cwd) = &settings.cwd
            && !Path::new(cwd).is_dir()
        {
            return CommandError::BadCwd { cwd: cwd.clone() };
        }
        match error.kind() {
            io::ErrorKind::NotFound => CommandError::NotFound { program },
            io::ErrorKind::PermissionDenied => CommandError::NotExecutable { program },
            _ => CommandError::Spawn {
                program,
                reason: error.to_string(),
            },
        }
    }

    /// Waits for the program to exit, or stops its group when the run is asked to stop; then kills what is
    /// left of the group. Returns the exit status and, when it was stopped, how.
    async fn supervise(
        child: &mut Child,
        guard: &GroupGuard,
        program: &str,
        kill_grace: Duration,
        cancellation: Cancellation,
        output: RunOutput,
        exited: watch::Sender<bool>,
    ) -> Result<(ExitStatus, Option<String>), CommandError> {
        let wait_error = |error: io::Error| CommandError::Wait {
            program: program.to_owned(),
            reason: error.to_string(),
        };
        let waited = tokio::select! {
            status = child.wait() => status.map(|status| (status, None)),
            () = cancellation.cancelled() => {
                output.line("flowrun: the run was asked to stop; sending SIGTERM to the process group");
                guard.signal(Signal::SIGTERM);
                match tokio::time::timeout(kill_grace, child.wait()).await {
                    Ok(status) => status.map(|status| (status, Some("SIGTERM".to_owned()))),
                    Err(_) => {
                        output.line(&format!(
                            "flowrun: still running {} s after SIGTERM; sending SIGKILL to the process group",
                            kill_grace.as_secs_f64()
                        ));
                        guard.signal(Signal::SIGKILL);
                        child.wait().await.map(|status| {
                            let grace = kill_grace.as_secs_f64();
                            (status, Some(format!("SIGTERM, then SIGKILL after {grace} s")))
                        })
                    }
                }
            }
        };
        // The program has exited: whatever it left running in its group must not outlive the run (and would
        // keep its output pipes open).
        guard.signal(Signal::SIGKILL);
        // Nobody may be listening any more; that is fine.
        let _ = exited.send(true);
        waited.map_err(wait_error)
    }

    /// Writes the configured stdin, then closes it; gives up when the program has exited.
    async fn feed(
        stdin: Option<tokio::process::ChildStdin>,
        text: Option<&str>,
        mut exited: watch::Receiver<bool>,
    ) {
        let (Some(mut stdin), Some(text)) = (stdin, text) else {
            return;
        };
        tokio::select! {
            // A program that exits without reading all of its input is not an error (EPIPE).
            _ = async {
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.shutdown().await;
            } => {}
            _ = exited.wait_for(|exited| *exited) => {}
        }
    }

    /// Reads stdout and stderr as they come into the run's output, until both end (or shortly after the
    /// program has exited). Returns the last lines of stderr.
    async fn pump(
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
        output: RunOutput,
        mut exited: watch::Receiver<bool>,
    ) -> Vec<String> {
        let mut out = Stream::new(stdout);
        let mut err = Stream::new(stderr);
        let mut tail = StderrTail::default();
        let drained = async {
            let _ = exited.wait_for(|exited| *exited).await;
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        tokio::pin!(drained);
        while !(out.done && err.done) {
            // Biased towards stdout: when both have lines waiting, the stdout ones were usually written
            // first (two pipes keep no order between them; this is the best guess).
            tokio::select! {
                biased;
                text = out.next(), if !out.done => output.write(&text),
                text = err.next(), if !err.done => {
                    tail.note(&text);
                    output.write(&text);
                }
                () = &mut drained => break,
            }
        }
        tail.into_lines()
    }

    /// One output pipe of the program.
    struct Stream<R> {
        reader: Option<R>,
        lines: LineSplitter,
        buffer: Vec<u8>,
        done: bool,
    }

    impl<R: AsyncRead + Unpin> Stream<R> {
        fn new(reader: Option<R>) -> Self {
            Self {
                done: reader.is_none(),
                reader,
                lines: LineSplitter::default(),
                buffer: vec![0; 64 * 1024],
            }
        }

        /// The next text ready to record: complete lines, or the last partial line when the pipe ends.
        async fn next(&mut self) -> String {
            let Some(reader) = self.reader.as_mut() else {
                self.done = true;
                return String::new();
            };
            loop {
                match reader.read(&mut self.buffer).await {
                    Ok(0) | Err(_) => {
                        // A read error on a pipe means it is unusable; treat it as its end.
                        self.done = true;
                        self.reader = None;
                        return self.lines.finish();
                    }
                    Ok(n) => {
                        let ready = self.lines.push(&self.buffer[..n]);
                        if !ready.is_empty() {
                            return ready;
                        }
                    }
                }
            }
        }
    }

    fn outcome(program: String, status: ExitStatus, stderr_tail: Vec<String>) -> Result<(), CommandError> {
        if status.success() {
            return Ok(());
        }
        if let Some(code) = status.code() {
            return Err(CommandError::Exited {
                program,
                code,
                stderr_tail,
            });
        }
        let number = status.signal().unwrap_or_default();
        let signal =
            Signal::try_from(number).map_or_else(|_| "unknown".to_owned(), |s| s.as_str().to_owned());
        Err(CommandError::Killed {
            program,
            signal,
            number,
            stderr_tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_released_whole_and_long_lines_in_pieces() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"one\ntw"), "one\n");
        assert_eq!(lines.push(b"o\nthr"), "two\n");
        assert_eq!(lines.finish(), "thr\n");
        assert_eq!(lines.push(b"\xffbad\n"), "\u{FFFD}bad\n");
        // One byte more than a piece, the last character straddling the cut.
        let long = format!("a{}", "é".repeat(MAX_LINE_BYTES / 2));
        let ready = lines.push(long.as_bytes());
        assert_eq!(ready.matches('\n').count(), 1, "one piece is ready");
        assert!(!ready.contains('\u{FFFD}'), "not cut inside a character");
        assert_eq!(ready.len(), MAX_LINE_BYTES, "cut before the straddling character");
        assert_eq!(lines.finish(), "é\n");
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        assert_eq!(
            lines.push(format!("short\n{long}\nend").as_bytes()),
            format!("short\n{}\nxxxxxxxxxx\n", &long[..MAX_LINE_BYTES]),
            "a long line that is complete is cut too"
        );
        assert_eq!(lines.finish(), "end\n");
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_lines() {
        let mut tail = StderrTail::default();
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        tail.note(&text);
        tail.note("last\n");
        let lines = tail.into_lines();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "line 81");
        assert_eq!(lines[STDERR_TAIL_LINES - 1], "last");
    }
}
