//! The SQS queue that EventBridge rules feed with EC2 change events
//! (`[source.ec2.events]`, issue 16): long polls for messages and deletes
//! them once their changes are served.
//!
//! The client is built from the same AWS configuration as EC2's (the
//! endpoint, the ambient credentials, adaptive retries, the attempt
//! limit); its attempt timeout is the long poll's 20 s plus
//! `call_timeout_secs`, so a poll that waits is never cut off as hung.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use aws_sdk_sqs::Client;

use super::ec2::api_error;
use super::ec2_settings::{Ec2Settings, EventQueueSettings};
use super::SourceError;

/// How long one ReceiveMessage waits for a message (SQS's most).
pub const LONG_POLL_SECS: i32 = 20;

/// The queue, and a client for it.
#[derive(Clone)]
pub struct EventQueue {
    client: Client,
    url: String,
}

/// One message taken from the queue.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its body: the event, as EventBridge wrote it (untrusted).
    pub body: String,
    /// What deletes it.
    pub receipt_handle: String,
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
        EventQueue {
            client: Client::from_conf(config.build()),
            url: queue.queue_url.clone(),
        }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Up to 10 messages, waiting up to `wait_secs` for the first.
    pub async fn receive(&self, wait_secs: i32) -> Result<Vec<Message>, SourceError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .send()
            .await
            .map_err(|e| api_error(e, &self.url, false))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(Message {
                    body: m.body()?.to_string(),
                    receipt_handle: m.receipt_handle()?.to_string(),
                })
            })
            .collect())
    }

    /// Deletes the messages with these receipt handles, 10 to a call;
    /// how many could not be deleted (they come back later, and are
    /// harmless: an event is only a hint).
    pub async fn delete(&self, handles: &[String]) -> Result<usize, SourceError> {
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
                .map_err(|e| api_error(e, &self.url, false))?;
            failed += out.failed().len();
        }
        Ok(failed)
    }
}

/// How long to gather more messages after the first of a batch: events
/// of one change come in twos and threes (pending, then running), and
/// each batch costs a describe and a zone build.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Polls `queue` until `shutdown`, and hands the refresher (`batches`)
/// the instances its events name, grouped by unit (of `units`). A message
/// is deleted once its changes are served and persisted, or at once when
/// it is no event of ours; when the describe fails it stays, and SQS
/// delivers it again after its visibility timeout.
pub fn spawn_poller(
    queue: EventQueue,
    units: Vec<String>,
    batches: tokio::sync::mpsc::Sender<crate::refresh::EventBatch>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tracing::info!(queue = %queue.url(), "following EC2 change events");
        let mut failures = 0u32;
        loop {
            let received = tokio::select! {
                r = queue.receive(LONG_POLL_SECS) => r,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let mut messages = match received {
                Ok(m) => {
                    if failures > 0 {
                        tracing::info!(queue = %queue.url(), "the event queue answers again");
                        failures = 0;
                    }
                    m
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait =
                        Duration::from_secs(5u64 << failures.min(4)).min(Duration::from_secs(60));
                    tracing::warn!(queue = %queue.url(), %error, retry_in_s = wait.as_secs(), "receiving EC2 events failed; refreshes go on as scheduled");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            };
            if messages.is_empty() {
                continue;
            }
            tokio::time::sleep(DEBOUNCE).await;
            if let Ok(more) = queue.receive(0).await {
                messages.extend(more);
            }
            let (by_unit, now, later) = sort_messages(&messages, &units);
            let mut delete = now;
            if !by_unit.is_empty() {
                let (done, applied) = tokio::sync::oneshot::channel();
                let batch = crate::refresh::EventBatch {
                    units: by_unit,
                    done,
                };
                if batches.send(batch).await.is_err() {
                    return; // the refresher is gone: shutting down
                }
                if applied.await.unwrap_or(false) {
                    delete.extend(later);
                }
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

/// Sorts a batch of messages: per unit, the instance ids their events
/// name; the receipt handles to delete at once (no event of ours, or for
/// a unit not served); and those to delete once the units are updated.
/// Counts each message in `fleetdns_events_total`.
#[allow(clippy::type_complexity)]
fn sort_messages(
    messages: &[Message],
    units: &[String],
) -> (Vec<(String, Vec<String>)>, Vec<String>, Vec<String>) {
    use super::events::{parse, Parsed};
    use crate::metrics::metrics;
    let mut by_unit: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for message in messages {
        match parse(&message.body) {
            Parsed::Event(event) => match route(&event, units) {
                Some(unit) => {
                    metrics().count_event(event.kind.label(), "applied");
                    by_unit.entry(unit).or_default().insert(event.instance_id);
                    later.push(message.receipt_handle.clone());
                }
                None => {
                    metrics().count_event(event.kind.label(), "ignored");
                    tracing::debug!(
                        ?event,
                        "an event for an account or region not listed; deleted"
                    );
                    now.push(message.receipt_handle.clone());
                }
            },
            Parsed::Other => {
                metrics().count_event("other", "ignored");
                now.push(message.receipt_handle.clone());
            }
            Parsed::Malformed(why) => {
                metrics().count_event("other", "malformed");
                // debug: whoever may send to the queue could fill the log
                tracing::debug!(%why, "a message in the event queue is no EC2 event; deleted");
                now.push(message.receipt_handle.clone());
            }
        }
    }
    let by_unit = by_unit
        .into_iter()
        .map(|(unit, ids)| (unit, ids.into_iter().collect()))
        .collect();
    (by_unit, now, later)
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
