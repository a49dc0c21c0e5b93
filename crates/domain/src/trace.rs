//! The stack trace recorded with a failed run: only the flow's own frames.
//!
//! A trace is taken where a [`FlowError`](crate::flow::FlowError) is created or where a flow panics. The
//! stack there holds three parts: on top the frames that take the trace (the error constructors, the `?`
//! conversion, or the panic machinery and hook), then the flow's own code, then the executor and the async
//! runtime, which are the same for every run. Only the middle part says anything about the failure.
//!
//! The parts are found without knowing who calls: the walk starts below its own frame and stops at
//! [`flow_boundary`], the frame the executor calls every flow through, both recognised by their code
//! address (as std's `__rust_begin_short_backtrace` marks where a short backtrace ends). The caller that
//! takes the trace names itself with an [`Origin`] (its `file!()` and type name), so its frames and the
//! standard library's above the flow are left out.
//!
//! Why the trace is resolved while the stack is walked instead of capturing a whole
//! `std::backtrace::Backtrace` and trimming its text: the walk stops at the first executor frame, so the
//! ~70 runtime frames below it are never unwound, symbolized, demangled or formatted. Measured with
//! callgrind on the `Fail` benchmark, symbolizing and trimming a whole trace cost more instructions than
//! the database work of the run itself.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// The most frames a trace keeps. Deeper stacks (recursion, long chains of calls) are cut there so that
/// the recorded text stays far below ~16 KiB, above which a statement costs PostgreSQL a delayed ACK
/// (~40 ms) over TCP; see `docs/performance.md`.
pub const MAX_TRACE_FRAMES: usize = 40;

/// One function in a [`FlowTrace`]. An inlined function is a frame of its own, as in Rust's backtraces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFrame {
    /// The demangled function name without its hash, `<unknown>` when the symbol could not be resolved.
    pub function: String,
    /// The source file, when debug information is available.
    pub file: Option<String>,
    /// The line in `file`.
    pub line: Option<u32>,
    /// The column in `line`.
    pub column: Option<u32>,
}

/// Where a [`FlowTrace`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceEnd {
    /// The stack ended: the trace was not taken inside the executor (a test, a flow called directly).
    Complete,
    /// The walk stopped at the executor; the executor's and the async runtime's frames are left out.
    Executor,
    /// The walk stopped after [`MAX_TRACE_FRAMES`] frames of the flow.
    Limit,
}

/// The flow's own frames of the stack where a flow failed, innermost first, already symbolized.
///
/// Its `Display` is the text recorded in a failed run's `error_backtrace`, in the layout of Rust's own
/// backtraces (`   0: function` / `             at file:line:column`) plus a last line saying what was
/// left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTrace {
    frames: Vec<TraceFrame>,
    end: TraceEnd,
}

impl FlowTrace {
    /// Takes the trace of the calling code, stopping at the executor's [`flow_boundary`].
    #[inline(never)]
    pub fn capture() -> Self {
        Self::capture_from(Origin::NONE)
    }

    /// Takes the trace of the code that called `origin`'s code, leaving out `origin`'s frames and the
    /// standard library's above the first frame of that code, and stopping at the executor's
    /// [`flow_boundary`].
    ///
    /// The first call in a process loads the binary's debug information (about 0.1 s and a cache of some
    /// 100 MB for a binary built with line tables); later calls take microseconds.
    #[inline(never)]
    pub fn capture_from(origin: Origin) -> Self {
        let walker = Self::capture_from as *const () as usize;
        let plain_capture = Self::capture as *const () as usize;
        let boundary = flow_boundary as *const () as usize;
        let mut trimmer = Trimmer::new(origin);
        let mut frames = Vec::new();
        let mut end = TraceEnd::Complete;
        let mut past_walker = false;
        backtrace::trace(|frame| {
            let address = frame.symbol_address() as usize;
            if !past_walker {
                past_walker = address == walker;
                return true;
            }
            if address == plain_capture {
                return true;
            }
            if address == boundary {
                end = TraceEnd::Executor;
                return false;
            }
            let symbols = resolved(frame);
            let unresolved = [Symbol::default()];
            let symbols = if symbols.is_empty() {
                &unresolved[..]
            } else {
                &symbols[..]
            };
            for symbol in symbols {
                let function = symbol.function.as_deref().unwrap_or(UNKNOWN);
                match trimmer.step(function, symbol.file.as_deref()) {
                    Step::Skip => {}
                    Step::Keep if frames.len() == MAX_TRACE_FRAMES => {
                        end = TraceEnd::Limit;
                        return false;
                    }
                    Step::Keep => frames.push(TraceFrame {
                        function: function.to_owned(),
                        file: symbol.file.as_ref().map(|f| f.display().to_string()),
                        line: symbol.line,
                        column: symbol.column,
                    }),
                }
            }
            true
        });
        Self { frames, end }
    }

    /// A trace made of the given frames, for tests and for adapters that carry traces from elsewhere.
    pub fn from_frames(frames: Vec<TraceFrame>, end: TraceEnd) -> Self {
        Self { frames, end }
    }

    /// The flow's frames, innermost first.
    pub fn frames(&self) -> &[TraceFrame] {
        &self.frames
    }

    /// Why the trace ends where it does.
    pub fn end(&self) -> TraceEnd {
        self.end
    }
}

impl fmt::Display for FlowTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, frame) in self.frames.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{index:>4}: {}", frame.function)?;
            if let Some(file) = &frame.file {
                write!(f, "\n             at {file}")?;
                if let Some(line) = frame.line {
                    write!(f, ":{line}")?;
                    if let Some(column) = frame.column {
                        write!(f, ":{column}")?;
                    }
                }
            }
        }
        let note = match self.end {
            TraceEnd::Complete if self.frames.is_empty() => {
                "      (no frames: the stack could not be walked, or the binary has no symbols)"
            }
            TraceEnd::Complete => return Ok(()),
            TraceEnd::Executor => "      … frames of the executor and the async runtime omitted",
            TraceEnd::Limit => "      … deeper frames omitted",
        };
        if !self.frames.is_empty() {
            f.write_str("\n")?;
        }
        f.write_str(note)
    }
}

const UNKNOWN: &str = "<unknown>";

/// Who takes a trace: its frames (and the standard library's) on top of the stack are not the flow's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The caller's source file, its `file!()`: functions inlined into the flow's code, and every function
    /// of a crate built with `debug = "line-tables-only"`, are named without their module path
    /// (`from<my_app::Error>`), so for them the file is the only sign of where they belong.
    pub file: &'static str,
    /// How the caller's functions are named, for example `std::any::type_name::<FlowError>()`.
    pub function_prefix: &'static str,
}

impl Origin {
    /// No caller to leave out: only the walk's own frames and the standard library's are skipped.
    pub const NONE: Origin = Origin {
        file: "",
        function_prefix: "",
    };
}

/// How the standard library's functions that may sit between the origin and the flow begin (the `?`
/// conversion, the panic machinery), once a leading `<` is dropped.
const STD_PREFIXES: [&str; 5] = ["core::", "std::", "alloc::", "__rustc::", "rust_begin_unwind"];

/// The standard library's source directories, as its debug information names them.
const STD_DIRS: [&str; 3] = ["/library/core/", "/library/std/", "/library/alloc/"];

/// The frame the executor polls (and builds) every flow through; a trace stops here. Recognised by its
/// address, so it must stay a real, non-generic function and must not be a tail call.
#[inline(never)]
pub fn flow_boundary(inside: &mut dyn FnMut()) {
    inside();
    std::hint::black_box(());
}

/// Whether `file` ends with the path `suffix` at a component boundary: `crates/domain/src/flow.rs`
/// matches the absolute path in the debug information, `my_crates/domain/src/flow.rs` does not. On bytes,
/// because `Path::ends_with` parses every component of both paths (measured: most of the cost of sorting
/// the frames).
fn file_ends_with(file: &Path, suffix: &str) -> bool {
    let file = file.as_os_str().as_encoded_bytes();
    let suffix = suffix.as_bytes();
    file.ends_with(suffix)
        && (file.len() == suffix.len() || matches!(file[file.len() - suffix.len() - 1], b'/' | b'\\'))
}

/// Whether a function is named without its module path, as inlined functions are (`new<my_app::Error>`).
fn is_short(function: &str) -> bool {
    let path = function.split_once('<').map_or(function, |(path, _)| path);
    !path.contains("::")
}

/// One function at an instruction address, as resolved from the debug information.
#[derive(Debug, Default)]
struct Symbol {
    function: Option<String>,
    file: Option<PathBuf>,
    line: Option<u32>,
    column: Option<u32>,
}

/// Resolved frames by instruction address, shared by all threads.
///
/// A flow that fails fails at the same few places, and the frames above and below its code (the walk, the
/// `?` conversion, the executor) are the same for every failure; resolving an address means searching the
/// debug information and demangling. Cached, a repeated failure only unwinds and looks up. Bounded: the
/// cache is emptied when it reaches [`MAX_CACHED_ADDRESSES`].
static RESOLVED: LazyLock<Mutex<HashMap<usize, Arc<[Symbol]>>>> = LazyLock::new(Mutex::default);

/// How many addresses [`RESOLVED`] holds before it starts over (a few hundred bytes each).
const MAX_CACHED_ADDRESSES: usize = 4096;

fn resolved(frame: &backtrace::Frame) -> Arc<[Symbol]> {
    // A panic never happens while the lock is held; tolerate poisoning anyway rather than lose traces.
    let cache = || RESOLVED.lock().unwrap_or_else(PoisonError::into_inner);
    let address = frame.ip() as usize;
    if let Some(symbols) = cache().get(&address) {
        return Arc::clone(symbols);
    }
    let mut symbols = Vec::new();
    backtrace::resolve_frame(frame, |symbol| {
        symbols.push(Symbol {
            function: symbol.name().map(|name| format!("{name:#}")),
            file: symbol.filename().map(Path::to_path_buf),
            line: symbol.lineno(),
            column: symbol.colno(),
        });
    });
    let symbols: Arc<[Symbol]> = symbols.into();
    let mut cache = cache();
    if cache.len() >= MAX_CACHED_ADDRESSES {
        cache.clear();
    }
    cache.insert(address, Arc::clone(&symbols));
    symbols
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Skip,
    Keep,
}

/// Sorts the symbols between the walk and the executor, innermost first: first the origin's and the
/// standard library's (skipped), then the flow's (kept).
#[derive(Debug)]
struct Trimmer {
    origin: Origin,
    in_flow: bool,
}

impl Trimmer {
    fn new(origin: Origin) -> Self {
        Self {
            origin,
            in_flow: false,
        }
    }

    fn step(&mut self, function: &str, file: Option<&Path>) -> Step {
        if self.in_flow {
            return Step::Keep;
        }
        let bare = function.strip_prefix('<').unwrap_or(function);
        let origin = &self.origin;
        let above_flow = function == UNKNOWN
            || STD_PREFIXES.iter().any(|prefix| bare.starts_with(prefix))
            || (!origin.function_prefix.is_empty() && bare.starts_with(origin.function_prefix))
            || file.is_some_and(|file| {
                let path = file.as_os_str().as_encoded_bytes();
                STD_DIRS.iter().any(|dir| contains(path, dir.as_bytes()))
                    || (is_short(function) && !origin.file.is_empty() && file_ends_with(file, origin.file))
            });
        if above_flow {
            Step::Skip
        } else {
            self.in_flow = true;
            Step::Keep
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW_ERROR: Origin = Origin {
        file: "crates/domain/src/flow.rs",
        function_prefix: "flowrun_domain::flow::FlowError",
    };

    fn steps(origin: Origin, symbols: &[(&str, Option<&str>)]) -> Vec<Step> {
        let mut trimmer = Trimmer::new(origin);
        symbols
            .iter()
            .map(|(function, file)| trimmer.step(function, file.map(Path::new)))
            .collect()
    }

    #[test]
    fn an_error_trace_starts_below_the_question_mark() {
        let symbols = [
            (
                "flowrun_domain::flow::FlowError::from_boxed",
                Some("/work/app/crates/domain/src/flow.rs"),
            ),
            // Inlined: no module path, only the file tells.
            (
                "from<my_app::CopyError>",
                Some("/work/app/crates/domain/src/flow.rs"),
            ),
            (
                "from_residual<(), my_app::CopyError, flowrun_domain::flow::FlowError>",
                Some("/rustc/0123abcd/library/core/src/result.rs"),
            ),
            ("my_app::copy_batch", Some("src/copy.rs")),
            // Below the flow's first frame everything is the flow's, even the standard library.
            (
                "core::result::Result<T,E>::map",
                Some("/rustc/0123abcd/library/core/src/result.rs"),
            ),
            (
                "<my_app::Copy as flowrun_domain::flow::Flow>::run::{{closure}}",
                Some("src/copy.rs"),
            ),
        ];
        let expected = [
            Step::Skip,
            Step::Skip,
            Step::Skip,
            Step::Keep,
            Step::Keep,
            Step::Keep,
        ];
        assert_eq!(steps(FLOW_ERROR, &symbols), expected);
    }

    #[test]
    fn with_line_tables_only_the_origin_is_told_apart_by_its_file() {
        let symbols = [
            ("from_boxed", Some("/build/flowrun/crates/domain/src/flow.rs")),
            (
                "from<my_app::CopyError>",
                Some("/build/flowrun/crates/domain/src/flow.rs"),
            ),
            (
                "from_residual<…>",
                Some("/rustc/0123abcd/library/core/src/result.rs"),
            ),
            ("copy_batch", Some("/build/my_app/src/copy.rs")),
            // The flow's own short-named function in a file called flow.rs elsewhere is the flow's.
            ("step", Some("/build/my_app/src/flow.rs")),
        ];
        let expected = [Step::Skip, Step::Skip, Step::Skip, Step::Keep, Step::Keep];
        assert_eq!(steps(FLOW_ERROR, &symbols), expected);
    }

    #[test]
    fn a_panic_trace_starts_at_the_panic_site() {
        let origin = Origin {
            file: "crates/domain/src/panic.rs",
            function_prefix: "flowrun_domain::panic::install_hook",
        };
        let symbols = [
            ("flowrun_domain::panic::install_hook::{{closure}}", None),
            ("std::panicking::panic_with_hook", None),
            ("core::panicking::panic_fmt", None),
            ("core::option::unwrap_failed", None),
            ("my_app::parse", None),
            ("core::result::Result<T,E>::map", None),
        ];
        let expected = [
            Step::Skip,
            Step::Skip,
            Step::Skip,
            Step::Skip,
            Step::Keep,
            Step::Keep,
        ];
        assert_eq!(steps(origin, &symbols), expected);
    }

    #[test]
    fn a_trace_taken_inside_the_boundary_stops_there() {
        let mut inside = None;
        flow_boundary(&mut || inside = Some(recurse(2)));
        let trace = inside.expect("captured");
        assert_eq!(trace.end(), TraceEnd::Executor, "{trace}");
        assert!(trace.frames()[0].function.contains("recurse"), "{trace}");
        assert!(
            trace.frames().iter().all(|f| {
                let name = f.function.rsplit("::").next().unwrap_or_default();
                name != "flow_boundary" && !f.function.contains("run_test")
            }),
            "nothing at or below the boundary: {trace}"
        );
    }

    #[test]
    fn files_match_at_path_component_boundaries_only() {
        let ours = "crates/domain/src/flow.rs";
        assert!(file_ends_with(
            Path::new("/work/app/crates/domain/src/flow.rs"),
            ours
        ));
        assert!(file_ends_with(Path::new("crates/domain/src/flow.rs"), ours));
        assert!(!file_ends_with(
            Path::new("/work/my_crates/domain/src/flow.rs"),
            ours
        ));
        assert!(!file_ends_with(Path::new("src/flow.rs"), ours));
    }

    #[test]
    fn the_text_has_rusts_backtrace_layout_and_says_what_was_left_out() {
        let frame = |function: &str, file: Option<&str>| TraceFrame {
            function: function.to_owned(),
            file: file.map(str::to_owned),
            line: file.map(|_| 10),
            column: file.map(|_| 5),
        };
        let trace = FlowTrace::from_frames(
            vec![
                frame("my_app::copy_batch", Some("src/copy.rs")),
                frame("my_app::run", None),
            ],
            TraceEnd::Executor,
        );
        assert_eq!(
            trace.to_string(),
            "   0: my_app::copy_batch\n             at src/copy.rs:10:5\n   1: my_app::run\n      … frames of the executor and the async runtime omitted"
        );
        let deep = FlowTrace::from_frames(vec![frame("my_app::recurse", None)], TraceEnd::Limit);
        assert!(deep.to_string().ends_with("\n      … deeper frames omitted"));
        let whole = FlowTrace::from_frames(vec![frame("main", None)], TraceEnd::Complete);
        assert_eq!(whole.to_string(), "   0: main");
    }

    #[inline(never)]
    fn recurse(depth: usize) -> FlowTrace {
        if depth == 0 {
            FlowTrace::capture()
        } else {
            let trace = recurse(depth - 1);
            std::hint::black_box(trace)
        }
    }

    #[test]
    fn a_captured_trace_starts_in_the_calling_code_and_is_cut_when_deep() {
        let trace = recurse(0);
        let first = &trace.frames()[0];
        assert!(first.function.contains("recurse"), "{trace}");
        assert!(
            first
                .file
                .as_deref()
                .is_some_and(|file| file.ends_with("trace.rs")),
            "{trace}"
        );
        assert_eq!(trace.end(), TraceEnd::Complete, "not inside an executor");

        let again: Vec<FlowTrace> = (0..2).map(|_| recurse(3)).collect();
        assert_eq!(
            again[0], again[1],
            "a repeated failure, resolved from the cache, reads the same"
        );
        assert_eq!(
            again[0].frames()[..4]
                .iter()
                .filter(|f| f.function.contains("recurse"))
                .count(),
            4
        );

        let deep = recurse(2 * MAX_TRACE_FRAMES);
        assert_eq!(deep.frames().len(), MAX_TRACE_FRAMES, "{deep}");
        assert_eq!(deep.end(), TraceEnd::Limit);
    }
}
