//! Flows: the code a data flow runs, the error it returns, and the registry that builds it by class name.

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;
use thiserror::Error;

use crate::context::RunContext;
use crate::trace::{FlowTrace, Origin};

/// A runnable flow, built by a [`FlowRegistry`] from a class name and the flow's whole configuration.
#[async_trait]
pub trait Flow: Send {
    /// Does the flow's work. An `Err` ends the run as `failed`; so does a panic.
    ///
    /// `context` carries the run's id and attempt, its cancellation signal, its recorded output and the
    /// flow's persisted state.
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError>;
}

/// The error a flow returns: any error type, with the flow's stack trace taken where it was converted with
/// `?` (or [`FlowError::new`]) — that is, inside the flow's own code.
///
/// Like `anyhow::Error`, it deliberately does not implement [`std::error::Error`] so that every error type
/// converts into it with `?`. Callers get the original error back with [`FlowError::downcast_ref`] or
/// [`FlowError::downcast`].
pub struct FlowError {
    inner: Box<dyn StdError + Send + Sync + 'static>,
    trace: FlowTrace,
}

impl FlowError {
    /// Wraps an error, capturing the trace here.
    pub fn new<E>(error: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        Self::from_boxed(Box::new(error))
    }

    /// Wraps an already boxed error, capturing the trace here.
    pub fn from_boxed(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Self {
            inner: error,
            trace: FlowTrace::capture_from(Origin {
                file: file!(),
                function_prefix: std::any::type_name::<FlowError>(),
            }),
        }
    }

    /// An error that is only a message (a [`FlowMessage`]), capturing the trace here.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(FlowMessage(message.into()))
    }

    /// The flow's frames of the stack where the error was created.
    pub fn trace(&self) -> &FlowTrace {
        &self.trace
    }

    /// The wrapped error.
    pub fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }

    /// The wrapped error, if it is a `T`.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }

    /// The wrapped error by value if it is a `T`; otherwise `self` unchanged.
    pub fn downcast<T: StdError + 'static>(self) -> Result<T, Self> {
        match self.inner.downcast::<T>() {
            Ok(error) => Ok(*error),
            Err(inner) => Err(Self {
                inner,
                trace: self.trace,
            }),
        }
    }

    /// The wrapped error, boxed, dropping the trace.
    pub fn into_boxed(self) -> Box<dyn StdError + Send + Sync + 'static> {
        self.inner
    }

    /// The error and its sources, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        let first: &(dyn StdError + 'static) = self.inner.as_ref();
        std::iter::successors(Some(first), |e: &&(dyn StdError + 'static)| (*e).source())
    }

    /// The text recorded as a failed run's `error_backtrace`: the cause chain, then the flow's frames.
    pub fn report(&self) -> String {
        use fmt::Write as _;
        let mut out = format!("Error: {}", self.inner);
        for (i, cause) in self.chain().skip(1).enumerate() {
            if i == 0 {
                out.push_str("\n\nCaused by:");
            }
            // Writing into a String cannot fail.
            let _ = write!(out, "\n    {i}: {cause}");
        }
        let _ = write!(out, "\n\nBacktrace:\n{}", self.trace);
        out
    }
}

impl<E> From<E> for FlowError
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl From<FlowError> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: FlowError) -> Self {
        error.inner
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowError")
            .field("error", &self.inner)
            .finish_non_exhaustive()
    }
}

/// An error that is only a message; what [`FlowError::msg`] wraps.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct FlowMessage(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Error)]
    #[error("disk full")]
    struct DiskFull;

    #[derive(Debug, Error)]
    #[error("write failed")]
    struct WriteFailed(#[source] DiskFull);

    // Not inlined, so that the trace names it in every build.
    #[inline(never)]
    fn failing() -> Result<(), FlowError> {
        Err(WriteFailed(DiskFull))?;
        Ok(())
    }

    #[test]
    fn flow_errors_convert_with_question_mark_and_downcast_back() {
        let error = failing().expect_err("fails");
        assert!(error.downcast_ref::<WriteFailed>().is_some());
        assert_eq!(error.to_string(), "write failed");
        let report = error.report();
        assert!(
            report.starts_with("Error: write failed\n\nCaused by:\n    0: disk full"),
            "{report}"
        );
        let first = &error.trace().frames()[0];
        assert!(
            first.function.contains("failing"),
            "the trace starts in the function that failed, not in the conversion: {report}"
        );
        assert!(report.contains("\n\nBacktrace:\n   0: "), "{report}");
        assert!(error.downcast::<WriteFailed>().is_ok());
    }
}
