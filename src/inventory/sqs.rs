//! The SQS queue that EventBridge rules feed with EC2 change events
//! (`[source.ec2.events]`, issue 16): long polls for messages and deletes
//! them once their changes are served.
//!
//! The client is built from the same AWS configuration as EC2's (the
//! endpoint, the ambient credentials, adaptive retries, the attempt
//! limit); its attempt timeout is the long poll's 20 s plus
//! `call_timeout_secs`, so a poll that waits is never cut off as hung.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;

use super::ec2::{api_error, CountAttempts};
use super::ec2_settings::{Ec2Settings, EventQueueSettings};
use super::{ApiProblem, SourceError};
use crate::metrics::{metrics, EventsStatus, StatusHandle};

/// What to do when reading the queue is refused.
const PERMISSIONS: &str = "allow sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on this queue to this identity (deploy/iam-policy.json)";

/// How long one ReceiveMessage waits for a message (SQS's most).
pub const LONG_POLL_SECS: i32 = 20;

/// The queue, and a client for it.
#[derive(Clone)]
pub struct EventQueue {
    client: Client,
    url: String,
    /// The region its client asks.
    region: String,
}

/// A failed call to the queue, in one line with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(String);

/// One message taken from the queue.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its body: the event, as EventBridge wrote it (untrusted).
    pub body: String,
    /// What deletes it.
    pub receipt_handle: String,
    /// When it arrived in the queue (SQS's `SentTimestamp`).
    pub sent: Option<SystemTime>,
}

impl EventQueue {
    /// A client for `queue` from the EC2 source's `base` configuration.
    pub fn new(base: &SdkConfig, queue: &EventQueueSettings, settings: &Ec2Settings) -> Self {
        let attempt = settings.call_timeout + Duration::from_secs(LONG_POLL_SECS as u64);
        let mut config = aws_sdk_sqs::config::Builder::from(base).timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5).min(settings.call_timeout))
                .operation_attempt_timeout(attempt)
                .operation_timeout(attempt * settings.max_attempts.max(1))
                .build(),
        );
        if let Some(region) = &queue.region {
            config = config.region(aws_config::Region::new(region.clone()));
        }
        // Counted beside the units' calls, under the queue's name.
        let name = queue.queue_url.rsplit('/').next().unwrap_or_default();
        config = config.interceptor(CountAttempts(
            metrics().api_counters(&format!("events:{name}"), "ReceiveMessage"),
        ));
        let config = config.build();
        EventQueue {
            region: config
                .region()
                .map_or_else(|| "no region".to_string(), ToString::to_string),
            client: Client::from_conf(config),
            url: queue.queue_url.clone(),
        }
    }

    /// `error` of a call to this queue, with the queue's own hints where
    /// the EC2 source's would mislead (which permissions, which region).
    fn error<E>(
        &self,
        error: aws_sdk_sqs::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> QueueError
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        // A 403 whose body gives no code is a refusal all the same (moto
        // 5.0.28 answers SQS's JSON protocol with an XML AccessDenied).
        let denied = matches!(&error, aws_sdk_sqs::error::SdkError::ServiceError(e)
            if e.raw().status().as_u16() == 403 && e.err().code().is_none());
        let error = api_error(error, &self.url, false);
        QueueError(match &error {
            _ if denied => {
                format!("permission missing: HTTP 403 without an error code; {PERMISSIONS}")
            }
            SourceError::Api {
                problem: ApiProblem::PermissionMissing,
                cause,
                ..
            } => format!("permission missing: {cause}; {PERMISSIONS}"),
            SourceError::Api { code, cause, .. }
                if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") =>
            {
                format!("no such queue in {}: {cause}; check queue_url (the region is its host's, or with endpoint_url the first of regions), or create the queue (deploy/events/)", self.region)
            }
            other => other.to_string(),
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's visibility timeout and how many messages wait in it:
    /// a check at start that the queue exists and may be read, with what
    /// is worth a log line.
    pub async fn check(&self) -> Result<(Option<u64>, Option<u64>), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        let number = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
        };
        Ok((
            number(QueueAttributeName::VisibilityTimeout),
            number(QueueAttributeName::ApproximateNumberOfMessages),
        ))
    }

    /// Up to 10 messages, waiting up to `wait_secs` for the first.
    pub async fn receive(&self, wait_secs: i32) -> Result<Vec<Message>, QueueError> {
        #[allow(deprecated)] // AttributeNames: see below
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            // The older name of the same request, which moto 5.0.28 reads.
            .attribute_names(QueueAttributeName::from("SentTimestamp"))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let sent = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
                Some(Message {
                    body: m.body()?.to_string(),
                    receipt_handle: m.receipt_handle()?.to_string(),
                    sent,
                })
            })
            .collect())
    }

    /// Deletes the messages with these receipt handles, 10 to a call;
    /// how many could not be deleted (they come back later, and are
    /// harmless: an event is only a hint).
    pub async fn delete(&self, handles: &[String]) -> Result<usize, QueueError> {
        let mut failed = 0;
        for chunk in handles.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.error(e))?;
            failed += out.failed().len();
        }
        Ok(failed)
    }
}

/// How long to gather more messages after the first of a batch: events
/// of one change come in twos and threes (pending, then running), and
/// each batch costs a describe and a zone build.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the poller tells the rest of the daemon.
pub struct Links {
    /// The refresher, which applies the batches.
    pub batches: tokio::sync::mpsc::Sender<crate::refresh::EventBatch>,
    /// Whether the queue answers: the refresher schedules full passes by it.
    pub following: tokio::sync::watch::Sender<bool>,
    /// The refresher's status, for `/readyz` and the metrics.
    pub status: StatusHandle,
}

/// Polls `queue` until `shutdown`, and hands the refresher the instances
/// its events name, grouped by unit (of `units`). A message is deleted
/// once its changes are served and persisted, or at once when it is no
/// event of ours; when the describe fails it stays, and SQS delivers it
/// again after its visibility timeout. Says through `links` whether the
/// queue answers, and since when the data is current.
pub fn spawn_poller(
    queue: EventQueue,
    units: Vec<String>,
    links: Links,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match queue.check().await {
            Ok((visibility, waiting)) => {
                tracing::info!(queue = %queue.url(), visibility_timeout_s = visibility, messages_waiting = waiting, "following EC2 change events");
                // The queue answers: no need to wait for the first long
                // poll to end before full passes slow down.
                set_following(&links, None);
            }
            Err(error) => {
                // Receiving tells again (and retries); this says it at once.
                tracing::warn!(queue = %queue.url(), %error, "the EC2 event queue cannot be read; polling every interval_secs until it can");
                set_following(&links, Some(error.to_string()));
            }
        }
        let mut failures = 0u32;
        loop {
            let received = tokio::select! {
                r = queue.receive(LONG_POLL_SECS) => r,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            // A long poll that ends empty saw every message sent while it
            // waited: the data is current as of its end (and as of then,
            // once the messages it brought are applied).
            let received_at = SystemTime::now();
            let mut messages = match received {
                Ok(m) => {
                    if failures > 0 {
                        tracing::info!(queue = %queue.url(), "the event queue answers again");
                        failures = 0;
                    }
                    set_following(&links, None);
                    m
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    // 2, 4, 8, ... 60 s: the SDK has retried already.
                    let wait =
                        Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
                    tracing::warn!(queue = %queue.url(), %error, retry_in_s = wait.as_secs(), "receiving EC2 events failed; polling every interval_secs until it works");
                    set_following(&links, Some(error.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            };
            if messages.is_empty() {
                set_current(&links, received_at);
                continue;
            }
            tokio::time::sleep(DEBOUNCE).await;
            if let Ok(more) = queue.receive(0).await {
                messages.extend(more);
            }
            let sorted = sort_messages(&messages, &units);
            let mut delete = sorted.now;
            let mut applied_all = true;
            if !sorted.by_unit.is_empty() {
                let (done, applied) = tokio::sync::oneshot::channel();
                let batch = crate::refresh::EventBatch {
                    units: sorted.by_unit,
                    done,
                };
                if links.batches.send(batch).await.is_err() {
                    return; // the refresher is gone: shutting down
                }
                applied_all = applied.await.unwrap_or(false);
                if applied_all {
                    let served = SystemTime::now();
                    for sent in sorted.sent {
                        metrics()
                            .observe_event_to_swap(served.duration_since(sent).unwrap_or_default());
                    }
                    delete.extend(sorted.later);
                }
            }
            if applied_all {
                set_current(&links, received_at);
            }
            match queue.delete(&delete).await {
                Ok(0) => {}
                Ok(failed) => tracing::debug!(
                    failed,
                    "some event messages were not deleted; they come back and are harmless"
                ),
                Err(error) => {
                    tracing::warn!(%error, "deleting event messages failed; they come back and are harmless")
                }
            }
        }
    })
}

/// Says whether the queue answers (`failing` is why not), to the
/// refresher and in the status.
fn set_following(links: &Links, failing: Option<String>) {
    let following = failing.is_none();
    links.following.send_if_modified(|f| {
        let changed = *f != following;
        *f = following;
        changed
    });
    links.status.update(|s| {
        let events = s.events.get_or_insert_with(EventsStatus::default);
        events.following = following;
        events.failing = failing;
    });
}

/// Records that every event received until `at` is applied.
fn set_current(links: &Links, at: SystemTime) {
    links.status.update(|s| {
        s.events
            .get_or_insert_with(EventsStatus::default)
            .current_at = Some(at);
    });
}

/// A batch of messages, sorted (see [`sort_messages`]).
#[derive(Debug, Default)]
struct Sorted {
    /// Per unit, the instance ids the events name.
    by_unit: Vec<(String, Vec<String>)>,
    /// Receipt handles to delete at once: no event of ours, or for a unit
    /// not served.
    now: Vec<String>,
    /// Receipt handles to delete once the units are updated.
    later: Vec<String>,
    /// When each of `later` arrived in the queue.
    sent: Vec<SystemTime>,
}

/// Sorts a batch of messages: per unit, the instance ids their events
/// name; the receipt handles to delete at once and those to delete once
/// the units are updated. Counts each message in `fleetdns_events_total`.
fn sort_messages(messages: &[Message], units: &[String]) -> Sorted {
    use super::events::{parse, Parsed};
    let mut by_unit: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    let mut sorted = Sorted::default();
    for message in messages {
        match parse(&message.body) {
            Parsed::Event(event) => match route(&event, units) {
                Some(unit) => {
                    metrics().count_event(event.kind.label(), "applied");
                    by_unit.entry(unit).or_default().insert(event.instance_id);
                    sorted.later.push(message.receipt_handle.clone());
                    sorted.sent.extend(message.sent);
                }
                None => {
                    metrics().count_event(event.kind.label(), "ignored");
                    tracing::debug!(
                        ?event,
                        "an event for an account or region not listed; deleted"
                    );
                    sorted.now.push(message.receipt_handle.clone());
                }
            },
            Parsed::Other => {
                metrics().count_event("other", "ignored");
                sorted.now.push(message.receipt_handle.clone());
            }
            Parsed::Malformed(why) => {
                metrics().count_event("other", "malformed");
                // debug: whoever may send to the queue could fill the log
                tracing::debug!(%why, "a message in the event queue is no EC2 event; deleted");
                sorted.now.push(message.receipt_handle.clone());
            }
        }
    }
    sorted.by_unit = by_unit
        .into_iter()
        .map(|(unit, ids)| (unit, ids.into_iter().collect()))
        .collect();
    sorted
}

/// The unit an event belongs to: `ec2:<account>:<region>` when that
/// account is listed (a role's), else the ambient account's unit of the
/// region (whose account id fleetdns does not ask for); `None` for a
/// region not listed.
fn route(event: &super::events::Event, units: &[String]) -> Option<String> {
    let region = event.region.as_deref()?;
    let listed = |label: String| units.contains(&label).then_some(label);
    event
        .account
        .as_ref()
        .and_then(|account| listed(format!("ec2:{account}:{region}")))
        .or_else(|| listed(format!("ec2:ambient:{region}")))
}
