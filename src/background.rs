//! Background work at idle CPU priority.
//!
//! Refreshes parse the inventory, compare it, build and compare a snapshot,
//! write the state file and free the previous data: for a large fleet, a
//! few hundred milliseconds of CPU. Where fleetdns has one CPU (a small
//! instance, a `CPUQuota=`, `taskset`), that work takes turns with the UDP
//! loop. At normal priority, or even at nice 19, a query arriving meanwhile
//! waits for the background thread's time slice to end (p99 latency went
//! from 0.04 ms to 1.4 ms while swapping a 100,000-name zone every second).
//! Under `SCHED_IDLE` the kernel preempts the background thread as soon as
//! the loop has a packet (p99 0.3 ms in the same run), and the refresh
//! takes longer only when the CPU is busy.

use std::cell::Cell;

use tokio::task::JoinError;

/// Runs `work` on a blocking thread at idle priority and waits for it.
pub async fn run<T, F>(work: F) -> Result<T, JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(idle(work)).await
}

/// Drops `value` on an idle-priority blocking thread when inside a runtime
/// (else here). Freeing the previous snapshot or instance list of a large
/// fleet would otherwise hold a runtime worker, and the queries it serves.
pub fn drop_later<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(idle(move || drop(value)));
        }
        Err(_) => drop(value),
    }
}

/// `work`, run after putting its thread under `SCHED_IDLE`.
fn idle<T>(work: impl FnOnce() -> T) -> impl FnOnce() -> T {
    move || {
        idle_this_thread();
        work()
    }
}

thread_local! {
    /// Whether this thread's policy was already set.
    static IDLE: Cell<bool> = const { Cell::new(false) };
}

/// Puts the calling thread under `SCHED_IDLE`, once per thread. The
/// blocking pool's threads run only background work (file reads, builds,
/// state and hosts writes, frees), so they stay there. Failure (a seccomp
/// filter, say) is harmless: the work then runs at normal priority.
fn idle_this_thread() {
    IDLE.with(|done| {
        if !done.get() {
            set_idle();
            done.set(true);
        }
    });
}

/// Turns transparent huge pages off for this process.
///
/// mimalloc asks for huge pages on its arenas. A fault on such a page
/// zeroes (and may first compact) 2 MiB in one go in the kernel, where the
/// background thread cannot be preempted: with huge pages, swapping a
/// 100,000-name zone every second held queries for up to 3.8 ms (p99 0.3
/// ms against 0.1 ms without, in the same runs; benches/results/). Peak
/// RSS also counts whole 2 MiB pages. Failure only keeps the default.
pub fn no_huge_pages() {
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "cannot turn transparent huge pages off");
    }
}

/// The one system call of fleetdns that no safe wrapper in its dependency
/// tree offers (rustix leaves `sched_setscheduler` out).
#[allow(unsafe_code)]
fn set_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised
    // struct that outlives the call, which only reads it. SCHED_IDLE needs
    // no privilege and lowers priority only.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    #[allow(unsafe_code)]
    async fn background_work_runs_under_sched_idle() {
        // SAFETY: a read-only query of the calling thread's policy.
        let policy = super::run(|| unsafe { libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
    }
}
