//! The `Command` class run directly with a detached context, on real processes.

use std::time::Duration;

use flowrun_domain::{
    ClassRegistry, Flow, FlowError, FlowName, FlowRegistry, MAX_OUTPUT_BYTES, RunContext, RunOutput,
};
use serde_json::{Value, json};

use crate::{CommandError, register_builtins};

fn build(settings: Value) -> Box<dyn Flow> {
    let mut registry = ClassRegistry::new();
    register_builtins(&mut registry);
    registry.build("Command", &settings).expect("builds")
}

fn context() -> RunContext {
    RunContext::detached(FlowName::parse("command-test").expect("name"))
}

/// Runs the flow to its end; returns its result and its recorded output.
async fn run(settings: Value) -> (Result<(), FlowError>, String) {
    let mut flow = build(settings);
    let mut context = context();
    let result = flow.run(&mut context).await;
    (result, context.output().text())
}

fn command_error(result: Result<(), FlowError>) -> (CommandError, String) {
    let error = result.expect_err("fails");
    let message = error.to_string();
    let error = error
        .downcast::<CommandError>()
        .unwrap_or_else(|e| panic!("not a CommandError: {e:?}"));
    (error, message)
}

/// The first line of output made of two numbers (the shell's `$$ $!`), waiting for it.
async fn pids_in(output: &RunOutput) -> (i32, i32) {
    for _ in 0..1000 {
        for line in output.text().lines() {
            let numbers: Vec<i32> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
            if let [shell, grandchild] = numbers[..] {
                return (shell, grandchild);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the script never printed its pids: {:?}", output.text());
}

/// Whether a process is still running (a zombie waiting for a parent to reap it does not count).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
    }
}

/// Waits (boundedly) for processes that were sent SIGKILL to be gone; false if one never goes.
async fn all_gone(pids: &[i32]) -> bool {
    for _ in 0..500 {
        if !pids.iter().any(|&pid| alive(pid)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

const SHELL_AND_GRANDCHILD: &str = "sleep 1000 & echo $$ $!; sleep 1000";

#[tokio::test]
async fn a_successful_command_records_stdout_and_stderr_in_order() {
    let (result, output) = run(json!({
        "program": "sh",
        "args": ["-c", "echo out; echo err >&2"],
    }))
    .await;
    result.expect("succeeds");
    assert_eq!(output, "out\nerr\n");
}

#[tokio::test]
async fn stdin_env_and_cwd_reach_the_program() {
    let (result, output) = run(json!({
        "program": "sh",
        "args": ["-c", "read line; echo \"$line $GREETING\"; pwd"],
        "env": {"GREETING": "from env"},
        "cwd": "/",
        "stdin": "hello\n",
    }))
    .await;
    result.expect("succeeds");
    assert_eq!(output, "hello from env\n/\n");
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_code_and_the_stderr_tail() {
    let (result, output) = run(json!({
        "program": "sh",
        "args": ["-c", "echo out; for i in $(seq 1 30); do echo err $i >&2; done; exit 3"],
    }))
    .await;
    let (error, message) = command_error(result);
    let CommandError::Exited {
        program,
        code,
        stderr_tail,
    } = error
    else {
        panic!("{message}");
    };
    assert_eq!((program.as_str(), code), ("sh", 3));
    let expected: Vec<String> = (11..=30).map(|i| format!("err {i}")).collect();
    assert_eq!(stderr_tail, expected, "the last 20 lines of stderr");
    assert!(
        message.starts_with("`sh` exited with code 3; last lines of stderr:\nerr 11\n"),
        "{message}"
    );
    assert!(message.ends_with("\nerr 30"), "{message}");
    assert!(output.starts_with("out\nerr 1\n"), "{output}");
}

#[tokio::test]
async fn a_command_killed_by_a_signal_says_which() {
    let (result, _) = run(json!({"program": "sh", "args": ["-c", "kill -9 $$"]})).await;
    let (error, message) = command_error(result);
    assert!(
        matches!(error, CommandError::Killed { number: 9, .. }),
        "{error:?}"
    );
    assert_eq!(message, "`sh` was killed by signal SIGKILL (9)");
}

#[tokio::test]
async fn a_missing_program_a_non_executable_one_and_a_bad_cwd_are_clear_failures() {
    let (result, _) = run(json!({"program": "flowrun-no-such-program"})).await;
    let (_, message) = command_error(result);
    assert_eq!(message, "program `flowrun-no-such-program` not found");

    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let script = script.to_string_lossy().into_owned();
    let (result, _) = run(json!({"program": script})).await;
    let (error, message) = command_error(result);
    assert_eq!(
        error,
        CommandError::NotExecutable { program: script },
        "{message}"
    );

    let (result, _) = run(json!({"program": "true", "cwd": "/flowrun/no/such/dir"})).await;
    let (_, message) = command_error(result);
    assert_eq!(
        message,
        "working directory `/flowrun/no/such/dir` does not exist or is not a directory"
    );
}

#[tokio::test]
async fn a_runaway_stream_stays_within_the_output_bound() {
    let mut flow = build(json!({
        "program": "sh",
        // 50 MB of short lines, then 10 MB without a single newline.
        "args": ["-c", "echo first; yes | head -c 50000000; head -c 10000000 /dev/zero | tr '\\0' x; echo; echo last"],
    }));
    let mut context = context();
    flow.run(&mut context).await.expect("succeeds");
    let output = context.output();
    assert!(output.written() >= 60_000_000, "{}", output.written());
    let text = output.text();
    assert!(text.len() <= MAX_OUTPUT_BYTES + 128, "{}", text.len());
    assert!(text.starts_with("first\ny\ny\n"), "{}", &text[..20]);
    assert!(text.ends_with("xxxx\nlast\n"), "{}", &text[text.len() - 20..]);
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= crate::command::MAX_LINE_BYTES, "{longest}");
}

#[tokio::test]
async fn cancelling_the_run_stops_the_whole_process_group() {
    let mut flow = build(json!({"program": "sh", "args": ["-c", SHELL_AND_GRANDCHILD]}));
    let mut context = context();
    let (output, cancel) = (context.output(), context.cancellation());
    let (result, (shell, grandchild)) = tokio::join!(flow.run(&mut context), async {
        let pids = pids_in(&output).await;
        cancel.cancel();
        pids
    });
    let (error, message) = command_error(result);
    assert_eq!(
        error,
        CommandError::Stopped {
            program: "sh".into(),
            how: "SIGTERM".into()
        },
        "{message}"
    );
    assert!(all_gone(&[shell, grandchild]).await, "a process outlived its run");
    assert!(output.text().contains("sending SIGTERM to the process group"));
}

#[tokio::test]
async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let mut flow = build(json!({
        "program": "sh",
        "args": ["-c", format!("trap '' TERM; {SHELL_AND_GRANDCHILD}")],
        "kill_grace_secs": 0.2,
    }));
    let mut context = context();
    let (output, cancel) = (context.output(), context.cancellation());
    let (result, (shell, grandchild)) = tokio::join!(flow.run(&mut context), async {
        let pids = pids_in(&output).await;
        cancel.cancel();
        pids
    });
    let (error, message) = command_error(result);
    assert_eq!(
        error,
        CommandError::Stopped {
            program: "sh".into(),
            how: "SIGTERM, then SIGKILL after 0.2 s".into()
        },
        "{message}"
    );
    assert!(all_gone(&[shell, grandchild]).await, "a process outlived its run");
}

#[tokio::test]
async fn dropping_the_running_flow_kills_its_process_group() {
    let mut flow = build(json!({
        "program": "sh",
        "args": ["-c", format!("trap '' TERM; {SHELL_AND_GRANDCHILD}")],
    }));
    let mut context = context();
    let output = context.output();
    let pids = tokio::select! {
        _ = flow.run(&mut context) => panic!("the command cannot finish"),
        pids = pids_in(&output) => pids,
    };
    // The run's future is dropped here, as the executor does when its stop grace runs out.
    assert!(
        all_gone(&[pids.0, pids.1]).await,
        "a process outlived its dropped run"
    );
}

#[tokio::test]
async fn a_program_that_exits_leaves_nothing_of_its_group_behind() {
    let (result, output) = run(json!({
        "program": "sh",
        "args": ["-c", "sleep 1000 & echo $$ $!"],
    }))
    .await;
    result.expect("succeeds");
    let pids: Vec<i32> = output.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(pids.len(), 2, "{output}");
    assert!(all_gone(&pids).await, "the background sleep outlived its run");
}

#[test]
fn bad_settings_are_refused() {
    let mut registry = ClassRegistry::new();
    register_builtins(&mut registry);
    let refused = |settings: Value| {
        registry
            .build("Command", &settings)
            .err()
            .expect("refused")
            .to_string()
    };
    assert_eq!(
        refused(json!({"program": "ls", "argv": ["-l"]})),
        "invalid configuration for flow class `Command`: unknown setting `argv`"
    );
    assert!(refused(json!({"args": ["-l"]})).contains("program"));
    assert!(refused(json!({"program": ""})).contains("must not be empty"));
    assert!(refused(json!({"program": "ls", "kill_grace_secs": -1})).contains("kill_grace_secs"));
    assert!(refused(json!({"program": "ls", "args": ["a\u{0}b"]})).contains("NUL"));
}
