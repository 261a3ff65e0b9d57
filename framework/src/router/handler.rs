use std::future::Future;

use futures_util::future::BoxFuture;

use super::{EventContext, FromEventContext, Rejection};

/// What became of one handler call.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerOutcome {
    /// The handler ran and succeeded.
    Done,
    /// An extractor said the event is not for this handler.
    Skipped,
    /// An extractor found the event malformed for this handler.
    Rejected(String),
    /// The handler ran and returned an error.
    Failed(String),
}

/// What a handler may return: nothing, or a `Result` whose error is displayed in the log.
pub trait IntoHandlerOutcome {
    /// Converts the handler's return value.
    fn into_outcome(self) -> HandlerOutcome;
}

impl IntoHandlerOutcome for () {
    fn into_outcome(self) -> HandlerOutcome {
        HandlerOutcome::Done
    }
}

impl<E: std::fmt::Display> IntoHandlerOutcome for Result<(), E> {
    fn into_outcome(self) -> HandlerOutcome {
        match self {
            Ok(()) => HandlerOutcome::Done,
            Err(e) => HandlerOutcome::Failed(e.to_string()),
        }
    }
}

/// An async function usable as an event handler. Implemented for `async fn`s of up to eight
/// extractor arguments; `T` is the tuple of their types, there only to tell impls apart.
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Extracts the arguments and runs the handler.
    fn call(self, ctx: EventContext, state: S) -> BoxFuture<'static, HandlerOutcome>;
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, R, S, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: FnOnce($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoHandlerOutcome,
            S: Send + Sync + 'static,
            $($ty: FromEventContext<S> + Send + 'static,)*
        {
            fn call(self, ctx: EventContext, state: S) -> BoxFuture<'static, HandlerOutcome> {
                $(
                    let $ty = match $ty::from_event_context(&ctx, &state) {
                        Ok(value) => value,
                        Err(Rejection::Skip) => return Box::pin(async { HandlerOutcome::Skipped }),
                        Err(Rejection::Invalid(reason)) => {
                            return Box::pin(async move { HandlerOutcome::Rejected(reason) })
                        }
                    };
                )*
                Box::pin(async move { self($($ty,)*).await.into_outcome() })
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
