//! `embedded-server`: `flowrun-server` with this application's classes.

fn main() -> std::process::ExitCode {
    flowrun_server::main_with(flowrun_example_embedded::registry())
}
