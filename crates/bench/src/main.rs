//! `flowrun-bench --database-url URL --runs N --concurrency C --class Noop|Fail [--raw] [--history N]`:
//! executes `N` runs, `C` at once, through flowrun's executor (or, with `--raw`, through its SQL alone)
//! and prints one JSON line. `--copy --source URL --sink URL [--rows N]` measures SqlCopy instead
//! ([`flowrun_bench::copy`]). Exits with 1 if any run did not end as expected, 2 on a setup failure.

use std::process::ExitCode;

use clap::Parser;
use flowrun_bench::{Options, run};

#[tokio::main]
async fn main() -> ExitCode {
    // `--copy` has flags of its own (`flowrun-bench --copy --help`).
    if std::env::args().any(|arg| arg == "--copy") {
        return flowrun_bench::copy::main().await;
    }
    let options = Options::parse();
    if options.scheduler_worker {
        return match flowrun_bench::scheduler::worker(&options).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("flowrun-bench worker: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    if options.scheduler {
        return match flowrun_bench::scheduler::run(&options).await {
            Ok(report) => match serde_json::to_string(&report) {
                Ok(line) => {
                    println!("{line}");
                    if report.ok() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("flowrun-bench: not every flow ran exactly once and successfully");
                        ExitCode::from(1)
                    }
                }
                Err(error) => {
                    eprintln!("flowrun-bench: cannot print the report: {error}");
                    ExitCode::from(2)
                }
            },
            Err(error) => {
                eprintln!("flowrun-bench: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(&options).await {
        Ok(report) => match report.to_json_line() {
            Ok(line) => {
                println!("{line}");
                if report.errors == 0 {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("flowrun-bench: {} run(s) failed", report.errors);
                    ExitCode::from(1)
                }
            }
            Err(error) => {
                eprintln!("flowrun-bench: cannot print the report: {error}");
                ExitCode::from(2)
            }
        },
        Err(error) => {
            eprintln!("flowrun-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}
