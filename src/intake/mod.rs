//! Intakes: the ways events reach the engine's one apply pipeline ([`crate::engine::Engine::apply`]),
//! each with its own waiting and acknowledgement policy: [`http`] (`POST /v1/events`) waits up to
//! the event timeout and answers 503 when the queue is full; [`jobs`] (`POST /v1/events/batch`)
//! stores a job, then applies its events in each actor's order; [`nats`] (the JetStream
//! consumer) acknowledges a message only after its event commits. [`crate::service`] runs them.

pub mod http;
pub mod jobs;
pub mod nats;
