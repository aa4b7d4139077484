//! The JetStream intake (`--nats`): events published to the stream are applied by the engine's
//! pipeline, as HTTP's are, under the stream's own policy.
//!
//! - A message is acknowledged only after its event's transaction commits, so a node killed at
//!   any moment loses nothing: JetStream delivers what it did not acknowledge to another node, and
//!   applying it again is idempotent by event id.
//! - A node with no queue place free asks for the message again later (`-NAK` with a delay), as
//!   it does when the ledger fails; nothing waits on the node.
//! - What can never succeed is terminated (`+TERM`), counted in
//!   `fluxflow_stream_messages_total{outcome}` and logged with its stream sequence: a message that
//!   is not a valid event, one over the size limit, one whose id was used by another event.
//! - A message without an `id` takes its `Nats-Msg-Id`, else `<stream>:<sequence>`, and its
//!   received time is when JetStream stored it: a redelivery is the same event.
//! - Events of one actor are applied in the order they were published, whichever node takes them
//!   and however often they are delivered: the ledger keeps, per subject, the highest sequence
//!   applied (in the event's own transaction), and before applying a message a node applies the
//!   subject's earlier messages it finds unapplied, read back from the stream by subject (direct
//!   gets). Applying one twice is idempotent, so two nodes catching up at once is harmless; the
//!   messages of one subject that one node takes wait for each other.

mod order;
mod publisher;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, StreamMessage};
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::{self, Message, stream};
use futures_util::StreamExt;

use crate::engine::{Engine, EngineError, Origin, Ticket};
use crate::event::Event;
use crate::ledger::StreamPosition;
use order::{AppliedHere, SubjectOrder};
pub use publisher::{PublishError, StreamPublisher};

/// The stream §10 names.
pub const DEFAULT_STREAM: &str = "FLUXFLOW_EVENTS";
/// Events are published on `<prefix>.<actor_id>`, or `<prefix>._` without an actor.
pub const DEFAULT_SUBJECT_PREFIX: &str = "fluxflow.events";
/// The durable consumer every node shares.
pub const DEFAULT_CONSUMER: &str = "fluxflow";
/// The header that names a published batch event's job and index (`JOB_ID/INDEX`), so the
/// node that applies it marks it in the job.
pub const JOB_HEADER: &str = "Fluxflow-Job";
/// How long the intake waits for a message before looking whether the service is stopping.
const POLL: Duration = Duration::from_millis(200);

/// Where the stream is and how its messages are handled.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The server, `nats://HOST:4222`.
    pub url: String,
    /// The stream's name.
    pub stream: String,
    /// The subjects' prefix: the stream takes `<prefix>.>`.
    pub subject_prefix: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// How long JetStream waits for an acknowledgement before delivering a message again.
    pub ack_wait: Duration,
    /// How long a message asked for again (`-NAK`) waits before it is delivered again.
    pub retry_delay: Duration,
    /// Messages delivered to all nodes and not yet acknowledged, at most (the consumer's
    /// `max_ack_pending`, set when it is created).
    pub max_in_flight: usize,
    /// Largest message accepted, in bytes (as `--max-body-bytes` for HTTP).
    pub max_message_bytes: usize,
}

/// Why the intake could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server did not answer.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The stream or the consumer could not be found or created.
    #[error("cannot set up the JetStream {what}: {reason}")]
    Setup {
        /// `stream FLUXFLOW_EVENTS`, `consumer fluxflow`.
        what: String,
        /// What the server said.
        reason: String,
    },
}

/// What became of a message taken from the stream: the `outcome` label of
/// `fluxflow_stream_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutcome {
    /// Its event was applied (or had been: a redelivery) and the message acknowledged.
    Applied,
    /// Not a valid event: terminated.
    Invalid,
    /// Over the size limit: terminated.
    Oversized,
    /// Its id was used by an event with other content: terminated.
    Conflict,
    /// No queue place free: asked for again later.
    Saturated,
    /// The ledger failed or the service is stopping: asked for again later.
    Retried,
}

impl StreamOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StreamOutcome::Applied => "applied",
            StreamOutcome::Invalid => "invalid",
            StreamOutcome::Oversized => "oversized",
            StreamOutcome::Conflict => "conflict",
            StreamOutcome::Saturated => "saturated",
            StreamOutcome::Retried => "retried",
        }
    }
}

/// A node's consumer of the event stream.
pub struct NatsIntake {
    settings: NatsSettings,
    context: jetstream::Context,
    /// The stream, for reading a subject's earlier messages back.
    stream: stream::Stream,
    consumer: PullConsumer,
    applied_here: AppliedHere,
}

impl NatsIntake {
    /// Connects, and creates the stream and the durable consumer when they are missing.
    pub async fn connect(settings: NatsSettings) -> Result<NatsIntake, NatsError> {
        let client = async_nats::connect(&settings.url)
            .await
            .map_err(|e| NatsError::Connect { url: settings.url.clone(), reason: e.to_string() })?;
        let context = jetstream::new(client);
        let setup = |what: &str, reason: String| NatsError::Setup { what: what.to_owned(), reason };
        let stream_name = format!("stream {}", settings.stream);
        let stream = context
            .get_or_create_stream(stream::Config {
                name: settings.stream.clone(),
                subjects: vec![format!("{}.>", settings.subject_prefix)],
                // Catching an actor up reads its messages by subject (direct gets).
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| setup(&stream_name, e.to_string()))?;
        let max_in_flight = i64::try_from(settings.max_in_flight).unwrap_or(i64::MAX);
        let consumer = stream
            .get_or_create_consumer(
                &settings.consumer,
                pull::Config {
                    durable_name: Some(settings.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: settings.ack_wait,
                    max_ack_pending: max_in_flight,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| setup(&format!("consumer {}", settings.consumer), e.to_string()))?;
        Ok(NatsIntake { settings, context, stream, consumer, applied_here: AppliedHere::default() })
    }

    /// What publishes batches to the stream this intake consumes.
    pub fn publisher(&self) -> StreamPublisher {
        StreamPublisher { context: self.context.clone(), subject_prefix: self.settings.subject_prefix.clone() }
    }

    /// Takes messages until the engine begins to shut down; each one's event is applied as a task
    /// of its own, which the engine's drain waits for.
    pub fn run(self, engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.consume(engine).await })
    }

    async fn consume(self, engine: Arc<Engine>) {
        let this = Arc::new(self);
        let order = Arc::new(SubjectOrder::default());
        while !engine.is_shutting_down() {
            let mut messages = match this.consumer.messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull from the event stream; trying again");
                    tokio::time::sleep(this.settings.retry_delay).await;
                    continue;
                }
            };
            while !engine.is_shutting_down() {
                match tokio::time::timeout(POLL, messages.next()).await {
                    Err(_) => continue,
                    Ok(Some(Ok(message))) => Arc::clone(&this).take(&engine, &order, message).await,
                    Ok(Some(Err(e))) => {
                        tracing::warn!(error = %e, "the event stream failed; pulling again");
                        break;
                    }
                    Ok(None) => break,
                }
            }
        }
    }

    /// Decides what to do with one message: terminate it, ask for it again, or apply its event
    /// after its subject's earlier messages.
    async fn take(self: Arc<Self>, engine: &Arc<Engine>, order: &Arc<SubjectOrder>, message: Message) {
        let decoded = Stored::delivered(&message).and_then(|stored| self.decode(&stored, engine));
        let Decoded { event, job, position } = match decoded {
            Ok(decoded) => decoded,
            Err((outcome, problem)) => {
                let sequence = message.info().map(|info| info.stream_sequence).unwrap_or_default();
                tracing::warn!(sequence, outcome = outcome.label(), problem = %problem, "stream message terminated");
                self.settle(engine, &message, outcome, AckKind::Term).await;
                return;
            }
        };
        let Some(ticket) = engine.try_admit() else {
            let delay = AckKind::Nak(Some(self.settings.retry_delay));
            self.settle(engine, &message, StreamOutcome::Saturated, delay).await;
            return;
        };
        // Only an actor's events have an order to keep; the others go straight through.
        let turn = event.actor_id.is_some().then(|| order.join(&position.subject));
        let engine = Arc::clone(engine);
        let order = Arc::clone(order);
        tokio::spawn(async move {
            let work = async {
                let caught_up = match &turn {
                    Some(turn) => {
                        turn.wait().await;
                        self.catch_up(&engine, &position).await
                    }
                    None => Ok(()),
                };
                match caught_up {
                    Ok(()) => self.apply(&engine, ticket, event, Origin { job, position: Some(position) }).await,
                    Err(problem) => {
                        let (subject, sequence) = (&position.subject, position.sequence);
                        tracing::warn!(%subject, sequence, problem = %problem, "cannot apply a subject's earlier messages first; this one will come again");
                        StreamOutcome::Retried
                    }
                }
            };
            let outcome = self.keeping_alive(&message, work).await;
            let kind = match outcome {
                StreamOutcome::Applied => AckKind::Ack,
                StreamOutcome::Retried => AckKind::Nak(Some(self.settings.retry_delay)),
                _ => AckKind::Term,
            };
            self.settle(&engine, &message, outcome, kind).await;
            if let Some(turn) = turn {
                order.leave(turn);
            }
        });
    }

    /// Runs `work`, telling JetStream the message is still being worked on (`+WPI`) every half
    /// ack wait, so a message waiting behind its subject's earlier ones is not delivered again.
    async fn keeping_alive(&self, message: &Message, work: impl Future<Output = StreamOutcome>) -> StreamOutcome {
        let mut beat = tokio::time::interval(self.settings.ack_wait / 2);
        beat.tick().await;
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = beat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "cannot extend a stream message's ack wait");
                    }
                }
            }
        }
    }

    /// The event of a stored message, with the identity and time every delivery of it keeps, and
    /// its place in the stream.
    fn decode(&self, stored: &Stored<'_>, engine: &Engine) -> Result<Decoded, (StreamOutcome, String)> {
        let size = stored.payload.len();
        if size > self.settings.max_message_bytes {
            let limit = self.settings.max_message_bytes;
            return Err((StreamOutcome::Oversized, format!("{size} bytes is over the limit of {limit}")));
        }
        let mut event = Event::from_slice(stored.payload).map_err(|e| (StreamOutcome::Invalid, e.to_string()))?;
        let stored_at = jiff::Timestamp::from_nanosecond(stored.stored_at);
        event.received_at = stored_at.map_err(|e| (StreamOutcome::Invalid, format!("stored time: {e}")))?;
        if event.generated_id {
            let header = stored.headers.and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID));
            event.id = match header {
                Some(id) if !id.as_str().is_empty() => id.as_str().to_owned(),
                _ => format!("{}:{}", self.settings.stream, stored.sequence),
            };
            event.generated_id = false;
        }
        event.check_time(engine.max_event_age_days()).map_err(|e| (StreamOutcome::Invalid, e.to_string()))?;
        let job = stored.headers.and_then(|h| h.get(JOB_HEADER)).and_then(|job| parse_job(job.as_str()));
        let position = StreamPosition { subject: stored.subject.to_owned(), sequence: stored.sequence };
        Ok(Decoded { event, job, position })
    }

    /// Applies the subject's messages before `position` that the ledger has not applied yet, in
    /// stream order, each to its commit. Bad ones are skipped (they are terminated when
    /// delivered). Without a ledger there is no order to keep across deliveries.
    ///
    /// The search starts after what this node saw committed on the subject, when it remembers
    /// that; the ledger (which another node may have moved further) is read only when the stream
    /// shows an earlier message, so the usual case costs one direct get and no ledger read.
    async fn catch_up(&self, engine: &Arc<Engine>, position: &StreamPosition) -> Result<(), String> {
        let Some(ledger) = engine.ledger() else { return Ok(()) };
        let subject = position.subject.as_str();
        let applied_in_ledger = async || ledger.stream_position(subject).await.map_err(|e| e.to_string());
        let (mut next, mut ledger_read) = match self.applied_here.get(subject) {
            Some(applied) => (applied + 1, false),
            None => (applied_in_ledger().await? + 1, true),
        };
        while next < position.sequence {
            let earlier = match self.stream.direct_get_next_for_subject(subject, Some(next)).await {
                Ok(earlier) if earlier.sequence < position.sequence => earlier,
                Ok(_) => break,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(format!("reading sequence {next} of {subject}: {e}")),
            };
            if !ledger_read {
                ledger_read = true;
                let applied = applied_in_ledger().await?;
                if applied >= earlier.sequence {
                    next = applied + 1;
                    continue;
                }
            }
            next = earlier.sequence + 1;
            let Ok(Decoded { event, job, position: earlier_position }) = self.decode(&Stored::read(&earlier), engine)
            else {
                continue;
            };
            let ticket = engine.try_admit().ok_or("no queue place to apply an earlier message")?;
            tracing::debug!(subject, sequence = earlier.sequence, "applying an earlier message of the subject first");
            match engine.apply(ticket, Arc::new(event), false, Origin { job, position: Some(earlier_position) }).await {
                Ok(Ok(_)) => self.applied_here.record(subject, earlier.sequence),
                Ok(Err(EngineError::Conflict { .. })) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Applies the event and says what became of it.
    async fn apply(&self, engine: &Arc<Engine>, ticket: Ticket, event: Event, origin: Origin) -> StreamOutcome {
        let event_id = event.id.clone();
        let origin_position = origin.position.clone();
        let sequence = origin_position.as_ref().map(|p| p.sequence).unwrap_or_default();
        match engine.apply(ticket, Arc::new(event), false, origin).await {
            Ok(Ok(_)) => {
                if let Some(position) = &origin_position {
                    self.applied_here.record(&position.subject, position.sequence);
                }
                StreamOutcome::Applied
            }
            Ok(Err(EngineError::Conflict { .. })) => {
                tracing::warn!(sequence, %event_id, "stream message terminated: its id was used by another event");
                StreamOutcome::Conflict
            }
            Ok(Err(e)) => {
                tracing::warn!(sequence, %event_id, error = %e, "stream event not applied; it will be delivered again");
                StreamOutcome::Retried
            }
            Err(e) => {
                tracing::error!(sequence, %event_id, error = %e, "stream event task failed; it will be delivered again");
                StreamOutcome::Retried
            }
        }
    }

    /// Acknowledges, asks again or terminates, and counts it. A lost acknowledgement only means
    /// a redelivery, which is idempotent.
    async fn settle(&self, engine: &Engine, message: &Message, outcome: StreamOutcome, kind: AckKind) {
        engine.metrics.stream_messages.get_or_create(&outcome_label(outcome)).inc();
        if let Err(e) = message.ack_with(kind).await {
            tracing::warn!(error = %e, outcome = outcome.label(), "cannot acknowledge a stream message; it will come again");
        }
    }
}

/// `JOB_ID/INDEX` of [`JOB_HEADER`].
fn parse_job(header: &str) -> Option<(String, usize)> {
    let (job_id, index) = header.rsplit_once('/')?;
    Some((job_id.to_owned(), index.parse().ok()?))
}

fn outcome_label(outcome: StreamOutcome) -> crate::engine::metrics::OutcomeLabel {
    crate::engine::metrics::OutcomeLabel { outcome: outcome.label() }
}

/// A stored message's event, the batch job it belongs to and its place in the stream.
struct Decoded {
    event: Event,
    job: Option<(String, usize)>,
    position: StreamPosition,
}

/// A message as the stream stored it, delivered or read back: what its event is decoded from.
struct Stored<'m> {
    subject: &'m str,
    sequence: u64,
    payload: &'m [u8],
    headers: Option<&'m async_nats::HeaderMap>,
    /// When JetStream stored it, in nanoseconds since the epoch.
    stored_at: i128,
}

impl<'m> Stored<'m> {
    fn delivered(message: &'m Message) -> Result<Stored<'m>, (StreamOutcome, String)> {
        let info = message.info().map_err(|e| (StreamOutcome::Invalid, format!("no delivery information: {e}")))?;
        Ok(Stored {
            subject: message.subject.as_str(),
            sequence: info.stream_sequence,
            payload: &message.payload,
            headers: message.headers.as_ref(),
            stored_at: info.published.unix_timestamp_nanos(),
        })
    }

    fn read(message: &'m StreamMessage) -> Stored<'m> {
        Stored {
            subject: message.subject.as_str(),
            sequence: message.sequence,
            payload: &message.payload,
            headers: Some(&message.headers),
            stored_at: message.time.unix_timestamp_nanos(),
        }
    }
}
