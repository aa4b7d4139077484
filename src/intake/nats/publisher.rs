//! Publishing batches to the event stream (`POST /v1/events/batch` with `--nats`).

use std::sync::Arc;

use async_nats::jetstream;

use super::JOB_HEADER;
use crate::event::Event;

/// Publishes batches to the event stream (`POST /v1/events/batch` with `--nats`).
pub struct StreamPublisher {
    pub(super) context: jetstream::Context,
    pub(super) subject_prefix: String,
}

/// Why a batch could not be handed to the stream.
#[derive(Debug, thiserror::Error)]
#[error("the event stream did not take event {index} of the batch: {reason}")]
pub struct PublishError {
    /// The first event not taken.
    pub index: usize,
    /// What JetStream said.
    pub reason: String,
}

impl StreamPublisher {
    /// Publishes a batch job's events, each on its actor's subject with `Nats-Msg-Id` = its id
    /// and the job's header, and waits until JetStream has stored every one.
    pub async fn publish_batch(&self, job_id: &str, events: &[Arc<Event>]) -> Result<(), PublishError> {
        let mut acks = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let failed = |reason: String| PublishError { index, reason };
            let subject = format!("{}.{}", self.subject_prefix, event.actor_id.as_deref().unwrap_or("_"));
            let body = serde_json::to_vec(event.as_ref()).map_err(|e| failed(e.to_string()))?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
            headers.insert(JOB_HEADER, format!("{job_id}/{index}").as_str());
            let ack = self.context.publish_with_headers(subject, headers, body.into()).await;
            acks.push(ack.map_err(|e| failed(e.to_string()))?);
        }
        for (index, ack) in acks.into_iter().enumerate() {
            ack.await.map_err(|e| PublishError { index, reason: e.to_string() })?;
        }
        Ok(())
    }
}
