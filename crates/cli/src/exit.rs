//! How a command ends: [`Failure`] carries the contract's exit code and the one line shown for it.

use flowrun_domain::ManagementError;

use crate::output::Style;

/// How a command ended, mapped to the contract's exit codes.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 1: the flow ran and failed; the run is recorded.
    FlowFailed(String),
    /// 2: bad usage or input.
    Usage(String),
    /// 3: database or other infrastructure error.
    Infra(anyhow::Error),
    /// 4: a live run holds the flow.
    AlreadyRunning(String),
    /// 130 (SIGINT) or 143 (SIGTERM): the command was interrupted; its run is recorded as interrupted.
    Interrupted {
        /// What happened to the run.
        message: String,
        /// 128 + the signal's number.
        code: u8,
    },
}

impl Failure {
    /// The exit code: 1 to 4, or 128 + a signal's number.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Self::FlowFailed(_) => 1,
            Self::Usage(_) => 2,
            Self::Infra(_) => 3,
            Self::AlreadyRunning(_) => 4,
            Self::Interrupted { code, .. } => *code,
        }
    }
}

impl From<ManagementError> for Failure {
    fn from(error: ManagementError) -> Self {
        match error {
            ManagementError::NotFound(name) => {
                Self::Usage(format!("no data flow named `{name}` (see `flowrun flow list`)"))
            }
            ManagementError::Repository(e) => e.into(),
            error @ ManagementError::Running { .. } => Self::AlreadyRunning(error.to_string()),
            other => Self::Usage(other.to_string()),
        }
    }
}

impl From<flowrun_domain::RepositoryError> for Failure {
    fn from(error: flowrun_domain::RepositoryError) -> Self {
        Self::Infra(error.into())
    }
}

/// What a command returns.
pub(crate) type Outcome = Result<(), Failure>;

impl Failure {
    /// Prints the failure on stderr as one line (with its causes under `-v` for infrastructure errors).
    /// Error texts come from drivers and stored runs: the database URL's secrets are scrubbed from them,
    /// and control characters shown, never obeyed by the terminal.
    pub(crate) fn report(&self, database_url: &str, verbose: bool) {
        let scrub = |text: String| crate::output::visible(&flowrun_app::scrub(&text, database_url), true);
        let style = Style::stderr();
        match self {
            Self::FlowFailed(message)
            | Self::Usage(message)
            | Self::AlreadyRunning(message)
            | Self::Interrupted { message, .. } => {
                eprintln!("{} {}", style.error("error:"), scrub(message.clone()));
            }
            Self::Infra(error) => {
                eprintln!("{} {}", style.error("error:"), scrub(error.to_string()));
                if verbose {
                    for cause in error.chain().skip(1) {
                        eprintln!("  caused by: {}", scrub(cause.to_string()));
                    }
                }
            }
        }
    }
}
