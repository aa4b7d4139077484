//! The HTTP intake's policy for one event (`POST /v1/events`): a queue place now or 429 (the
//! client retries), then the result within `event_timeout_ms` or 504 (an event evaluated at
//! once, with no ledger, is answered without a timer: [`Engine::apply_now`]). An event whose caller
//! stopped waiting still completes and is stored, so a retry with its id gets its result.

use std::sync::Arc;

use crate::engine::{Engine, EngineError, EventResult, Origin};
use crate::event::Event;

/// Admits `event`, applies it, and waits for its result up to the event timeout.
pub async fn process(engine: &Arc<Engine>, event: Event, trace: bool) -> Result<EventResult, EngineError> {
    if engine.is_shutting_down() {
        return Err(EngineError::ShuttingDown);
    }
    let ticket = engine.try_admit().ok_or_else(|| engine.queue_full(1))?;
    let event = Arc::new(event);
    let ticket = match engine.apply_now(ticket, &event, trace) {
        Ok(result) => {
            // Answered without awaiting anything: let the other connections' tasks have their
            // turn, as awaiting a spawned event did (without it, p99 doubled under load).
            tokio::task::yield_now().await;
            return Ok(result);
        }
        Err(ticket) => ticket,
    };
    let event_id = event.id.clone();
    let handle = engine.apply(ticket, event, trace, Origin::default());
    let timeout = engine.event_timeout();
    match tokio::time::timeout(timeout, handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if e.is_cancelled() => Err(EngineError::ShuttingDown),
        Ok(Err(e)) => Err(EngineError::Internal(e.to_string())),
        Err(_) => Err(EngineError::Timeout { event_id, timeout_ms: timeout.as_millis() as u64 }),
    }
}
