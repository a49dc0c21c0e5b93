//! `embedded`: the `flowrun` command line with this application's classes.

fn main() -> std::process::ExitCode {
    flowrun_cli::run(flowrun_example_embedded::registry())
}
