//! The `flowrun` command line as a library, so that an application with flow classes of its own gets
//! every command, environment variable and exit code of the stock `flowrun` binary by handing its
//! registry to [`run`]. The stock binary is exactly that with the built-in classes.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     let registry = flowrun_app::builtin_registry();
//!     // registry.register(…) your own classes here.
//!     flowrun_cli::run(registry)
//! }
//! ```
//!
//! Exit codes: 0 ok; 1 the flow run failed (and was recorded); 2 bad usage or input; 3 database or other
//! infrastructure error; 4 the flow is already running; 130/143 interrupted by Ctrl-C/SIGTERM.

/// `println!` that never panics: std's panics when stdout is closed (`flowrun runs | head -1`). Defined
/// before the modules so that it replaces `println!` everywhere in this crate; see
/// [`output::write_stdout`].
macro_rules! println {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod cli;
mod commands;
mod database;
mod exit;
mod output;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use flowrun_domain::ClassRegistry;

use crate::cli::Cli;

/// Runs the command line of this process (`std::env::args_os`) with the flow classes of `registry`, and
/// returns the exit code to end the process with.
///
/// It builds its own tokio runtime (so call it from a plain `fn main`, not from inside a runtime), sets up
/// logging (`-v`, `RUST_LOG`), and for `run` handles Ctrl-C and SIGTERM by recording the run as
/// interrupted. `--help`, `--version` and usage errors are printed here too and give their usual exit codes.
pub fn run(registry: ClassRegistry) -> ExitCode {
    run_from(registry, std::env::args_os())
}

/// [`run`] with the given arguments instead of the process's; the first one is the program's name.
///
/// ```no_run
/// let code = flowrun_cli::run_from(
///     flowrun_app::builtin_registry(),
///     ["flowrun", "--database-url", "sqlite://demo.db", "flow", "list"],
/// );
/// # let _ = code;
/// ```
pub fn run_from<I, T>(registry: ClassRegistry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // `--help` and `--version` end here too, on stdout with 0; usage errors on stderr with 2.
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    let verbose = cli.verbose;
    let url = cli.database_url.clone();
    match runtime.block_on(commands::dispatch(cli, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report(&url, verbose);
            ExitCode::from(failure.code())
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "info" } else { "off" };
    let filter = quiet_notices(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes only where a terminal reads them: not in files, pipes or with NO_COLOR.
        .with_ansi(output::Style::stderr().coloured())
        .with_target(false)
        .try_init();
}

/// `filter` without PostgreSQL's expected notices, unless it asks for sqlx's output itself.
fn quiet_notices(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    if filter.to_string().contains("sqlx") {
        return filter;
    }
    match flowrun_app::QUIET_NOTICES.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}
