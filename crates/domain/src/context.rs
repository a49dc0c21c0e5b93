//! What a running flow gets from its run: who it is, when to stop, where its output goes, and its state.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::model::{FlowName, RunId, Trigger};

/// The most output a run keeps: the first [`OUTPUT_HEAD_BYTES`] and the last [`OUTPUT_TAIL_BYTES`]
/// written, with a line in between saying how much was left out. A runaway stream never grows memory or the
/// stored row beyond this.
pub const MAX_OUTPUT_BYTES: usize = OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES;

/// The start of a run's output kept when it writes more than [`MAX_OUTPUT_BYTES`].
pub const OUTPUT_HEAD_BYTES: usize = 64 * 1024;

/// The end of a run's output kept when it writes more than [`MAX_OUTPUT_BYTES`]: usually where the reason
/// for a failure is.
pub const OUTPUT_TAIL_BYTES: usize = 192 * 1024;

/// The context [`Flow::run`](crate::Flow::run) gets: the run's identity, a cancellation signal, the run's
/// recorded output and the flow's persisted state.
///
/// A flow that does not need any of it ignores it. A flow that runs long should watch
/// [`RunContext::cancelled`]: timeouts, cancel requests and shutdown signal it first, and only drop the
/// flow if it has not returned within the executor's stop grace.
#[derive(Debug)]
pub struct RunContext {
    run_id: RunId,
    attempt: u32,
    flow_name: FlowName,
    trigger: Trigger,
    cancellation: Cancellation,
    output: RunOutput,
    progress: RunProgress,
    state: Option<Value>,
    new_state: Option<Value>,
}

impl RunContext {
    /// The context of one run. The executor makes one per run; tests and tools that call a flow directly
    /// can make their own (see [`RunContext::detached`]).
    pub fn new(
        run_id: RunId,
        attempt: u32,
        flow_name: FlowName,
        trigger: Trigger,
        state: Option<Value>,
    ) -> Self {
        Self {
            run_id,
            attempt,
            flow_name,
            trigger,
            cancellation: Cancellation::default(),
            output: RunOutput::default(),
            progress: RunProgress::default(),
            state,
            new_state: None,
        }
    }

    /// A context for running a flow outside any stored run (tests, examples): run id 0, attempt 1, a manual
    /// trigger, no state.
    pub fn detached(flow_name: FlowName) -> Self {
        Self::new(RunId(0), 1, flow_name, Trigger::Manual, None)
    }

    /// The run's id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// Which attempt this is: 1 for a first run, 2 and up for retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The data flow's name.
    pub fn flow_name(&self) -> &FlowName {
        &self.flow_name
    }

    /// What started the run.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// Whether the run has been asked to stop (timeout, cancel request, shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Completes when the run is asked to stop. Select on it next to long work, then return (an `Err` or
    /// `Ok`: the run is recorded by why it was stopped either way).
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await;
    }

    /// The run's cancellation signal, to hand to tasks the flow spawns.
    pub fn cancellation(&self) -> Cancellation {
        self.cancellation.clone()
    }

    /// Writes one line into the run's recorded output (a newline is added).
    pub fn log(&self, line: impl AsRef<str>) {
        self.output.line(line.as_ref());
    }

    /// The run's output, to hand to tasks the flow spawns (a process's stdout and stderr readers).
    pub fn output(&self) -> RunOutput {
        self.output.clone()
    }

    /// The state the flow's last successful run saved, if any.
    pub fn state(&self) -> Option<&Value> {
        self.state.as_ref()
    }

    /// Sets the state to save with this run, if it succeeds. It is stored in the same write that records
    /// the success; a failed, cancelled or killed run leaves the stored state as it was.
    pub fn set_state(&mut self, state: Value) {
        self.new_state = Some(state);
    }

    /// The state [`RunContext::set_state`] asked to save, if any.
    pub fn new_state(&self) -> Option<&Value> {
        self.new_state.as_ref()
    }

    pub(crate) fn take_new_state(&mut self) -> Option<Value> {
        self.new_state.take()
    }

    /// Reports how far the run has come: `done` units of work so far (`unit`: `rows`, `files`, …). Whoever
    /// watches the run's [`RunProgress`] sees the latest report; nothing is recorded.
    pub fn report_progress(&self, done: u64, unit: &'static str) {
        self.progress.set(Progress { done, unit });
    }

    /// The run's progress, to hand to tasks the flow spawns or to watch it.
    pub fn progress(&self) -> RunProgress {
        self.progress.clone()
    }

    /// The same context reporting its progress into `progress`, which its caller watches.
    pub fn with_progress(mut self, progress: RunProgress) -> Self {
        self.progress = progress;
        self
    }
}

/// How far a run has come, as its flow last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Units of work done so far.
    pub done: u64,
    /// What is counted: `rows`, `files`, …
    pub unit: &'static str,
}

/// A run's latest [`Progress`]; cloning shares it, so a caller can watch what the flow reports (the CLI's
/// progress line). Empty until the flow reports.
#[derive(Debug, Clone, Default)]
pub struct RunProgress(Arc<Mutex<Option<Progress>>>);

impl RunProgress {
    /// Replaces the latest progress.
    pub fn set(&self, progress: Progress) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(progress);
    }

    /// The latest progress, if the flow reported any.
    pub fn get(&self) -> Option<Progress> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A run's cancellation signal; cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(CancellationToken);

impl Cancellation {
    /// Whether the run has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes when the run is asked to stop.
    pub async fn cancelled(&self) {
        self.0.cancelled().await;
    }

    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

/// A run's recorded output: lines in the order they were written, bounded by [`MAX_OUTPUT_BYTES`].
/// Cloning shares it, so several tasks of one flow write into one output.
#[derive(Clone, Default)]
pub struct RunOutput(Arc<Mutex<OutputBuffer>>);

impl RunOutput {
    /// Appends one line (a newline is added).
    pub fn line(&self, line: &str) {
        let mut buffer = self.lock();
        buffer.push(line);
        buffer.push("\n");
    }

    /// Appends text as it is.
    pub fn write(&self, text: &str) {
        self.lock().push(text);
    }

    /// The output so far: all of it, or its head and tail around a line saying how much was left out.
    pub fn text(&self) -> String {
        self.lock().text()
    }

    /// How many bytes have been written in all, including any left out.
    pub fn written(&self) -> u64 {
        self.lock().written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutputBuffer> {
        // A writer never panics while holding the lock; keep the output anyway if one did.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOutput")
            .field("written", &self.written())
            .finish()
    }
}

/// The head, then a tail that keeps only the last [`OUTPUT_TAIL_BYTES`].
#[derive(Default)]
struct OutputBuffer {
    head: String,
    tail: VecDeque<u8>,
    written: u64,
}

impl OutputBuffer {
    fn push(&mut self, text: &str) {
        self.written += text.len() as u64;
        let room = OUTPUT_HEAD_BYTES - self.head.len();
        let (into_head, rest) = if self.tail.is_empty() && room > 0 {
            let cut = floor_char_boundary(text, room);
            text.split_at(cut)
        } else {
            ("", text)
        };
        self.head.push_str(into_head);
        if rest.is_empty() {
            return;
        }
        let rest = rest.as_bytes();
        let keep = &rest[rest.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
        let overflow = (self.tail.len() + keep.len()).saturating_sub(OUTPUT_TAIL_BYTES);
        self.tail.drain(..overflow);
        self.tail.extend(keep);
    }

    fn text(&self) -> String {
        let kept = self.head.len() + self.tail.len();
        let omitted = self.written.saturating_sub(kept as u64);
        let (front, back) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(self.tail.len());
        tail.extend_from_slice(front);
        tail.extend_from_slice(back);
        // The tail may start inside a character cut off by the bound; drop its leftover bytes.
        let tail = String::from_utf8_lossy(&tail);
        let tail = tail.trim_start_matches('\u{FFFD}');
        if omitted == 0 {
            format!("{}{tail}", self.head)
        } else {
            format!("{}\n… {omitted} bytes of output omitted …\n{tail}", self.head)
        }
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reported_by_a_flow_is_seen_by_whoever_watches_the_run() {
        let watched = RunProgress::default();
        let context =
            RunContext::detached(FlowName::parse("copy").expect("a name")).with_progress(watched.clone());
        assert_eq!(watched.get(), None, "nothing before the first report");
        context.report_progress(1000, "rows");
        context.report_progress(2000, "rows");
        assert_eq!(
            watched.get(),
            Some(Progress {
                done: 2000,
                unit: "rows"
            })
        );
        assert_eq!(context.progress().get(), watched.get());
    }

    #[test]
    fn output_keeps_everything_below_the_bound() {
        let output = RunOutput::default();
        output.line("one");
        output.write("two");
        output.line("");
        assert_eq!(output.text(), "one\ntwo\n");
    }

    #[test]
    fn a_runaway_output_keeps_its_head_and_tail_within_the_bound() {
        let output = RunOutput::default();
        output.line("first line");
        for i in 0..100_000 {
            output.line(&format!("line {i} ééé"));
        }
        output.line("last line");
        let text = output.text();
        assert!(text.starts_with("first line\nline 0 ééé\n"), "{}", &text[..40]);
        assert!(text.ends_with("line 99999 ééé\nlast line\n"));
        assert!(text.contains(" bytes of output omitted …\n"));
        assert!(text.len() <= MAX_OUTPUT_BYTES + 64, "{}", text.len());
        assert!(output.written() > 1_000_000);
    }

    #[test]
    fn a_single_huge_write_is_bounded_too() {
        let output = RunOutput::default();
        output.write(&"é".repeat(1_000_000));
        let text = output.text();
        assert!(text.len() <= MAX_OUTPUT_BYTES + 64);
        assert!(text.ends_with('é'));
    }

    #[tokio::test]
    async fn cancellation_is_shared_by_clones() {
        let context = RunContext::detached(FlowName::parse("f").expect("name"));
        let handle = context.cancellation();
        assert!(!context.is_cancelled());
        handle.cancel();
        context.cancelled().await;
        assert!(context.is_cancelled());
    }
}
