//! Following the swaps: what runs after every new snapshot, off the answer
//! path (the hosts export; the journal and NOTIFY sender follow the same
//! watch channel in `dns::xfr` and `notify`).
//!
//! The refresher knows nothing of its readers: it signals each swap on a
//! `tokio::sync::watch` channel, and `serve` hands each subscriber its own
//! receiver. Subscribers depend on this module, never on `serve`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::snapshot::Snapshot;

/// Something to do after every swap, off the answer path (the hosts
/// export is one).
pub trait OnSwap: Send + Sync + 'static {
    /// Called with each new snapshot on a blocking thread, one call at a
    /// time; if several swaps happen during a call, the next call gets only
    /// the latest. Errors are the subscriber's to log.
    fn on_swap(&self, snapshot: &Snapshot);
}

/// Runs `subscriber` for the current snapshot (if any) and then after
/// every swap announced on `changes`, until the refresher is gone.
pub fn spawn_subscriber(
    mut changes: watch::Receiver<Option<Arc<Snapshot>>>,
    subscriber: Arc<dyn OnSwap>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = changes.borrow_and_update().clone();
            if let Some(snapshot) = current {
                let subscriber = subscriber.clone();
                if let Err(error) =
                    crate::background::run(move || subscriber.on_swap(&snapshot)).await
                {
                    warn!(%error, "snapshot subscriber failed");
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::packed::{Packed, Spool};
    use crate::inventory::Source;
    use crate::inventory::{test_instance, UnitFetch};
    use crate::naming::Naming;
    use crate::refresh::Refresher;
    use crate::snapshot::new_store;
    use hickory_proto::rr::Name;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A test double of the hosts export: records the serials it was given.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<u32>>);

    impl OnSwap for Recorder {
        fn on_swap(&self, snapshot: &Snapshot) {
            self.0.lock().unwrap().push(snapshot.serial());
        }
    }

    /// A source whose one unit answers with `names` (set by the test).
    struct Names(Mutex<Vec<&'static str>>);

    #[async_trait::async_trait]
    impl Source for Names {
        fn describe(&self) -> String {
            "names".into()
        }
        fn units(&self) -> Vec<String> {
            vec!["names".into()]
        }
        async fn fetch(&self, _: &Spool) -> Vec<UnitFetch> {
            let names = self.0.lock().unwrap().clone();
            let instances: Vec<_> = names
                .iter()
                .enumerate()
                .map(|(i, n)| test_instance(&format!("i-{i:02x}"), Some(n), &["10.0.0.1"]))
                .collect();
            vec![UnitFetch {
                unit: "names".into(),
                result: Ok(Packed::from_instances(&instances)),
            }]
        }
    }

    async fn wait_for(recorder: &Recorder, calls: usize) -> Vec<u32> {
        for _ in 0..200 {
            let seen = recorder.0.lock().unwrap().clone();
            if seen.len() >= calls {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("subscriber saw {:?}", recorder.0.lock().unwrap());
    }

    #[tokio::test]
    async fn the_export_hook_runs_after_each_swap_and_not_on_unchanged_refreshes() {
        let source = Arc::new(Names(Mutex::new(vec!["a"])));
        let mut refresher = Refresher::new(
            source.clone(),
            Naming::new(Naming::default_rules(), "fleet.internal."),
            Name::from_ascii("fleet.internal.").unwrap(),
            new_store(),
        );
        let recorder = Arc::new(Recorder::default());
        let task = spawn_subscriber(refresher.subscribe(), recorder.clone());

        refresher.refresh_once().await.unwrap();
        let first = wait_for(&recorder, 1).await;
        refresher.refresh_once().await.unwrap(); // unchanged
        *source.0.lock().unwrap() = vec!["a", "b"];
        refresher.refresh_once().await.unwrap();
        let seen = wait_for(&recorder, 2).await;
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[1] > first[0]);

        drop(refresher);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the subscriber ends with the refresher")
            .unwrap();
        assert_eq!(recorder.0.lock().unwrap().len(), 2);
    }
}
