//! Intakes: the ways events reach the engine's one apply pipeline ([`crate::engine::Engine::apply`]),
//! each with its own waiting and acknowledgement policy. HTTP (`POST /v1/events`, in
//! [`crate::api`]) waits up to the event timeout and answers 429 when the queue is full; batch
//! jobs (`POST /v1/events/batch`) are stored, then applied in each actor's order; the JetStream
//! consumer ([`nats`]) acknowledges a message only after its event commits.

pub mod nats;
