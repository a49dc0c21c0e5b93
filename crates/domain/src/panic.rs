//! Catching a flow's panic with its message, location and a backtrace taken at the panic site.
//!
//! `catch_unwind` alone gives only the payload; the location and backtrace exist only inside the panic hook.
//! A process-wide hook is installed once; it captures a report when the panicking thread is inside a flow
//! (a thread-local flag set around each poll) and defers to the previous hook otherwise, so panics outside
//! flows are printed as before.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use crate::executor::FlowPanic;
use crate::trace::{FlowTrace, Origin, flow_boundary};

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<FlowPanic>> = const { RefCell::new(None) };
}

static INSTALL_HOOK: Once = Once::new();

fn install_hook() {
    INSTALL_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let report = FlowPanic {
                    message: payload_message(info.payload()),
                    location: info
                        .location()
                        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
                    backtrace: Some(FlowTrace::capture_from(Origin {
                        file: file!(),
                        function_prefix: std::any::type_name_of_val(&install_hook),
                    })),
                };
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(report));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into a [`FlowPanic`].
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, FlowPanic> {
    install_hook();
    let was_capturing = CAPTURING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(was_capturing));
    result.map_err(|payload| {
        LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| FlowPanic {
                message: payload_message(payload.as_ref()),
                location: None,
                backtrace: None,
            })
    })
}

/// A future that completes with `Err(FlowPanic)` when the wrapped future panics.
pub(crate) struct CatchPanic<'a, T> {
    inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
}

impl<'a, T> CatchPanic<'a, T> {
    pub(crate) fn new(inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>) -> Self {
        Self { inner }
    }
}

impl<T> Future for CatchPanic<'_, T> {
    type Output = Result<T, FlowPanic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        let polled = catch(|| {
            let mut polled = Poll::Pending;
            flow_boundary(&mut || polled = inner.as_mut().poll(cx));
            polled
        });
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(report) => Poll::Ready(Err(report)),
        }
    }
}
