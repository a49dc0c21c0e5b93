//! `flowrun-server`: serves the heartbeat endpoint and the read API with the built-in flow classes;
//! optionally ticks the scheduler. An application with classes of its own does the same with its own
//! registry (see the library's documentation).

fn main() -> std::process::ExitCode {
    flowrun_server::main_with(flowrun_app::builtin_registry())
}
