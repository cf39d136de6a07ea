//! Background work at the lowest CPU priority.
//!
//! Refreshes parse the inventory, build and compare a snapshot, write the
//! state file and free the previous data: for a large fleet, a few hundred
//! milliseconds of CPU. Where fleetdns has one CPU (a small instance, a
//! `CPUQuota=`, `taskset`), that work would take turns with the UDP loop,
//! and queries would wait a scheduler slice (milliseconds) behind it. Run
//! at nice 19, it only gets the CPU the answers leave: the answers' latency
//! stays as it is, and the refresh takes longer only when the CPU is busy.

use std::cell::Cell;

use tokio::task::JoinError;

/// Runs `work` on a blocking thread at the lowest priority and waits for it.
pub async fn run<T, F>(work: F) -> Result<T, JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        lower_this_thread();
        work()
    })
    .await
}

/// Drops `value` on a low-priority blocking thread when inside a runtime
/// (else here). Freeing the previous snapshot or instance list of a large
/// fleet would otherwise hold a runtime worker, and the queries it serves.
pub fn drop_later<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || {
                lower_this_thread();
                drop(value)
            });
        }
        Err(_) => drop(value),
    }
}

thread_local! {
    /// Whether this thread's priority was already lowered.
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Sets the calling thread's nice value to 19, once per thread. The
/// blocking pool's threads run only background work (file reads, builds,
/// state and hosts writes, frees), so they stay low. Failure (a seccomp
/// filter, say) is harmless: the work then runs at normal priority.
fn lower_this_thread() {
    LOWERED.with(|lowered| {
        if !lowered.get() {
            // On Linux, a thread id names that thread alone here.
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
            lowered.set(true);
        }
    });
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn background_work_runs_at_nice_19() {
        let nice = super::run(|| rustix::process::getpriority_process(None))
            .await
            .unwrap()
            .unwrap();
        // getpriority(PRIO_PROCESS, 0) reads the calling thread on Linux.
        assert_eq!(nice, 19);
    }
}
