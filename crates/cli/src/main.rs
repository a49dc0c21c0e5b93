//! `flowrun`: create data flows, run them, read their history, and drive the scheduler — with the built-in
//! flow classes. An application with classes of its own does the same with its own registry.

fn main() -> std::process::ExitCode {
    flowrun_cli::run(flowrun_app::builtin_registry())
}
