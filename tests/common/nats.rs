//! A NATS JetStream stream of a test's own on the machine's nats-server (127.0.0.1:4222;
//! `FLUXFLOW_TEST_NATS` names another), deleted at the end. Without a server a test says it
//! skipped — unless `CI=true`, where that is a failure.

use async_nats::jetstream;
use async_nats::jetstream::consumer::pull;

/// A stream of the test's own on the NATS server.
pub struct TestStream {
    pub url: String,
    pub name: String,
    pub prefix: String,
    runtime: tokio::runtime::Runtime,
    context: jetstream::Context,
}

impl TestStream {
    /// A fresh stream name and subject prefix, or `None` (with a note) without a server.
    pub fn new() -> Option<TestStream> {
        let url = std::env::var("FLUXFLOW_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = match runtime.block_on(async_nats::connect(&url)) {
            Ok(client) => client,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("NATS is required when CI=true, but {url} cannot be used: {e}")
            }
            Err(e) => {
                let test = std::thread::current().name().unwrap_or("?").to_owned();
                let note = format!("SKIPPED {test}: NATS test, {url} cannot be used ({e}); with CI=true this fails\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
                return None;
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        // The context spawns its acknowledgement task: it is made inside the runtime.
        let context = runtime.block_on(async { jetstream::new(client) });
        Some(TestStream { url, name: format!("FF_TEST_{id}"), prefix: format!("fftest.{id}"), runtime, context })
    }

    /// The flags that make a node consume this stream (short waits, so tests stay short).
    pub fn flags(&self) -> Vec<String> {
        ["--nats", &self.url, "--nats-stream", &self.name, "--nats-subjects", &self.prefix]
            .into_iter()
            .map(str::to_owned)
            .chain(["--nats-ack-wait-ms", "2000", "--nats-retry-ms", "50"].map(str::to_owned))
            .collect()
    }

    /// Publishes `body` on the actor's subject, with a `Nats-Msg-Id` when given, and waits for
    /// JetStream to store it.
    pub fn publish(&self, actor: Option<&str>, body: &[u8], message_id: Option<&str>) {
        let subject = format!("{}.{}", self.prefix, actor.unwrap_or("_"));
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = message_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        self.runtime.block_on(async {
            let ack = self.context.publish_with_headers(subject, headers, body.to_vec().into()).await.unwrap();
            ack.await.unwrap();
        });
    }

    /// Creates the stream as a node would, so messages can be published before any node runs.
    pub fn create(&self) {
        let config = jetstream::stream::Config {
            name: self.name.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            allow_direct: true,
            ..Default::default()
        };
        // The server can fail a creation that races another test's deletion of the account's
        // last stream (it removes the streams directory the creation is about to use: "could
        // not create storage directory"); a moment later the same creation succeeds.
        let mut last = None;
        for _ in 0..5 {
            match self.runtime.block_on(self.context.get_or_create_stream(config.clone())) {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("cannot create the test stream {}: {last:?}", self.name);
    }

    /// The shared consumer's messages not yet delivered and delivered but not acknowledged.
    pub fn pending(&self) -> (u64, usize) {
        self.runtime.block_on(async {
            let stream = self.context.get_stream(&self.name).await.unwrap();
            let mut consumer = stream.get_consumer::<pull::Config>("fluxflow").await.unwrap();
            let info = consumer.info().await.unwrap();
            (info.num_pending, info.num_ack_pending)
        })
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.context.delete_stream(&self.name));
    }
}

impl TestStream {
    /// Publishes many messages (actor, body, message id) at once, waiting for JetStream to have
    /// stored them all; from any thread (a connection of its own).
    pub fn publish_all(url: &str, prefix: &str, messages: &[(String, Vec<u8>, String)]) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let context = jetstream::new(async_nats::connect(url).await.unwrap());
            for chunk in messages.chunks(500) {
                let mut acks = Vec::new();
                for (actor, body, id) in chunk {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                    let subject = format!("{prefix}.{actor}");
                    acks.push(context.publish_with_headers(subject, headers, body.clone().into()).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
        });
    }
}
