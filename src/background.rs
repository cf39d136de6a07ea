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
//!
//! Not always, though: when the woken loop is not yet "eligible" in the
//! kernel's (EEVDF) sense, the background thread keeps the CPU until the
//! next timer tick, up to 4 ms later. So background loops also call
//! [`checkpoint`], which hands the CPU over every [`TURN`] if anyone waits.

use std::cell::Cell;
use std::time::{Duration, Instant};

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
        let value = work();
        collect_freed();
        value
    }
}

thread_local! {
    /// Whether this thread's policy was already set.
    static IDLE: Cell<bool> = const { Cell::new(false) };
    /// Checkpoints passed on this thread (see [`checkpoint`]).
    static PASSED: Cell<u32> = const { Cell::new(0) };
    /// When this thread last offered the CPU.
    static OFFERED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How long background work runs before it offers the CPU: about the
/// serving loop's own latency, so that a query waits at most this long.
pub const TURN: Duration = Duration::from_micros(50);

/// Checkpoints between two looks at the clock: each is a step of well
/// under a microsecond (an instance parsed, a comparison in a sort).
const STEPS_PER_LOOK: u32 = 64;

/// Called in the loops of background work (every instance parsed, built
/// or written, every chunk read): every [`TURN`], yields the CPU to any
/// thread that waits for it, which returns at once if none does. Does
/// nothing outside background threads (the CLI, tests).
pub fn checkpoint() {
    if !IDLE.with(Cell::get) {
        return;
    }
    let passed = PASSED.with(|p| {
        let n = p.get().wrapping_add(1);
        p.set(n);
        n
    });
    if passed.is_multiple_of(STEPS_PER_LOOK) {
        yield_if_due();
    }
}

/// [`checkpoint`] after a long step (a chunk of a file read): looks at
/// the clock every time.
pub fn offer() {
    if IDLE.with(Cell::get) {
        yield_if_due();
    }
}

/// Yields the CPU if this background thread last offered it a [`TURN`]
/// ago or more.
fn yield_if_due() {
    let now = Instant::now();
    let due = OFFERED
        .with(Cell::get)
        .is_none_or(|at| now.duration_since(at) >= TURN);
    if due {
        std::thread::yield_now();
        OFFERED.with(|o| o.set(Some(Instant::now())));
    }
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

/// Turns transparent huge pages off for this process (`main` does so
/// first thing; mimalloc is also built with `no_thp`, so that it does not
/// ask for them on its arenas even before `main`).
///
/// A fault on a huge page zeroes (and may first compact) 2 MiB in one go
/// in the kernel, where the background thread cannot be preempted: with
/// huge pages, swapping a 100,000-name zone every second held queries for
/// up to 3.8 ms (p99 0.3 ms against 0.1 ms without, in the same runs;
/// benches/results/). They also make memory resident 2 MiB at a time: the
/// daemon took 28 MB at 1,000 names and 41 MB at 100,000 with them, 9 and
/// 25 MB without. They once made the first load faster, when it allocated
/// 100 MB; since the zone is built one instance at a time, startup from a
/// 100,000-instance state takes about 80 ms either way. Failure only keeps
/// the default.
pub fn no_huge_pages() {
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "cannot turn transparent huge pages off");
    }
}

/// Index of `mi_option_purge_delay` in `mi_option_t` of the mimalloc 3
/// that libmimalloc-sys 0.1.49 (pinned through mimalloc =0.1.52) builds;
/// a test checks it by its default.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

// mimalloc's option calls, in the static library the `mimalloc` crate
// links (the same one that is `main`'s global allocator); libmimalloc-sys
// declares them only behind a feature that brings in another crate.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_collect(force: bool);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Has the allocator give freed pages back to the kernel at once, instead
/// of after a second (mimalloc's default purge delay). `main` calls it
/// first thing.
///
/// The work that frees much (building a zone, dropping the old one,
/// reading the inventory) runs on blocking-pool threads, which then sit
/// idle: mimalloc purges a heap's freed pages only when that heap
/// allocates again after the delay, so they stayed resident. A 100,000-name
/// daemon held 46-50 MB after six reloads and 26 MB with this (38 MB at
/// its peak during them); its peak at startup fell from 26 to 24.5 MB
/// (`/proc/PID/status`, VmHWM), and a reload takes the same time (figures
/// in benches/results/2026-12-05-memory.md).
#[allow(unsafe_code)]
pub fn return_freed_memory_at_once() {
    // SAFETY: sets one integer option; mimalloc reads options atomically
    // and allows setting them at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Has the allocator give back what this thread's heap holds free, once
/// a piece of background work is done ([`run`] and [`drop_later`] call it).
///
/// Blocks freed by another thread (an old zone dropped by `drop_later`,
/// which the refresher's thread built) wait on their heap's list until
/// that heap allocates again, and a blocking-pool thread may then sit idle
/// for seconds: after the second reload of a 100,000-name zone, 1.9 MB
/// more stayed resident each time. With this call after each piece of
/// work, the daemon holds 21.5 MB between reloads instead of 23.8-26 MB,
/// and a reload peaks at 35.3 MB instead of 37.8 MB, in the same time
/// (benches/results/; reload times unchanged).
///
/// A zone's build and patch also call it where they have just freed
/// working arrays of the whole zone and are about to make the zone's own:
/// mimalloc keeps a thread's emptied pages for reuse, which arrays of
/// other sizes do not get, so without the call the new arrays came on top
/// of the old ones. At 100,000 instances a build's peak RSS fell by 0.9
/// MB and a reload's by 1.5 MB (issue 18,
/// benches/results/2026-12-05-code-order.md).
#[allow(unsafe_code)]
pub(crate) fn collect_freed() {
    // SAFETY: a plain call into the allocator, allowed from any thread at
    // any time.
    unsafe { mi_collect(true) }
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
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_mimalloc_defaults_to_a_second() {
        // SAFETY: reads and sets one integer option. A wrong index would set some
        // other option in `return_freed_memory_at_once`: mimalloc 3's
        // purge delay is the option whose default is 1,000 ms (unless the
        // environment sets it).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) },
                1000
            );
        }
        super::return_freed_memory_at_once();
        assert_eq!(
            unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) },
            0
        );
    }

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
