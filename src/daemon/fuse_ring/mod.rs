//! FUSE over io_uring (Linux 6.14 and later): the kernel hands requests to ring entries
//! we registered, one queue per CPU, and takes each reply and the next request in one
//! `io_uring_enter` (`FUSE_IO_URING_CMD_COMMIT_AND_FETCH`) instead of a `read` and a
//! `writev` on `/dev/fuse`. A request is served on the CPU that issued it, so the loop
//! device's worker, the daemon and the completion meet on one core: through ext4 on a
//! loop device this cuts the task switches that bound small I/O on two CPUs
//! (docs/benchmarks.md, "FUSE over io_uring").
//!
//! fuser still mounts, answers INIT (where `VolumeFs::ring` asks for the ring), and serves
//! whatever comes through `/dev/fuse`: every request until all queues are registered, and
//! FORGET and INTERRUPT always. Requests on the ring go to the same `VolumeFs` operations
//! (`dispatch`). The kernel offers the ring only when root has set the `fuse` module's
//! `enable_uring` parameter; without it, or if a queue cannot register, requests keep
//! flowing through `/dev/fuse` and nothing else changes.
//!
//! Lifetime: the kernel writes requests into our buffers until it completes the entry's
//! command. An unmount ends the connection and completes every parked command with an
//! error, and only then are the buffers freed; a queue told to stop while its commands are
//! still with the kernel (a lazy unmount at shutdown) leaks its buffers instead.

// The ring shares memory with the kernel: registering buffers and writing raw SQEs cannot
// be done without `unsafe`. Each block says what keeps it sound; the crypto hot path and
// this module are the crate's only exceptions to `deny(unsafe_code)`.
#![allow(unsafe_code)]

mod abi;
mod dispatch;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tracing::{debug, info, warn};

use super::fuse_file::{MAX_IO, VolumeFs};
use crate::sys::process;

/// Threads per queue, each with its own io_uring: a request that waits on the disk (a read
/// the page cache misses, a sync) holds only its thread, as with `/dev/fuse` threads.
const THREADS: usize = 4;
/// Entries per thread: requests one thread holds at once.
const DEPTH: usize = 2;
/// The `user_data` of the poll on the queue's wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// How long `stop` waits for an ended connection to complete its queues' commands.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// How long `start` waits for every queue to have its ring and buffers.
const READY_WAIT: Duration = Duration::from_secs(10);
/// Where root turns the kernel's side on.
pub const ENABLE_KNOB: &str = "/sys/module/fuse/parameters/enable_uring";

/// True if the kernel will offer FUSE over io_uring at INIT, after turning its switch on
/// if it is off and we may (root). The switch only lets a FUSE server that asks at INIT
/// use the ring; servers that do not ask are unaffected.
pub fn enable() -> bool {
    let on = || std::fs::read_to_string(ENABLE_KNOB).is_ok_and(|v| matches!(v.trim(), "Y" | "1"));
    if on() {
        return true;
    }
    if !std::path::Path::new(ENABLE_KNOB).exists() {
        debug!("this kernel has no FUSE over io_uring ({ENABLE_KNOB})");
        return false;
    }
    match std::fs::write(ENABLE_KNOB, "1") {
        Ok(()) => {
            info!("turned on FUSE over io_uring ({ENABLE_KNOB} = 1)");
            on()
        }
        Err(e) => {
            debug!("cannot turn on FUSE over io_uring ({ENABLE_KNOB}): {e}");
            false
        }
    }
}

/// True if this process may create and enter a ring of the kind the queues use. The
/// kernel's switch can be on while io_uring is refused to us (a seccomp filter such as
/// Docker's default profile, `kernel.io_uring_disabled`): a mount that accepted the ring at
/// INIT would then wait for queues that never register, and every request on it would hang
/// (tests/fuse_ring_seccomp.rs). So a mount asks for the ring only after this probe, which
/// makes a ring and submits one no-op through it (a filter may refuse `io_uring_enter`
/// alone).
pub fn can_create_rings() -> bool {
    match new_ring().and_then(|mut r| enter_once(&mut r)) {
        Ok(()) => true,
        Err(e) => {
            info!(
                "io_uring is not available to this process ({e}): FUSE requests stay on /dev/fuse"
            );
            false
        }
    }
}

/// Submits a no-op on `ring` and waits for it: proves `io_uring_enter` works here.
fn enter_once(ring: &mut IoUring<squeue::Entry128, cqueue::Entry>) -> std::io::Result<()> {
    push(
        ring,
        0,
        squeue::Entry128::from(opcode::Nop::new().build().user_data(WAKE)),
    )?;
    ring.submit_and_wait(1)?;
    let done: Vec<i32> = ring.completion().map(|c| c.result()).collect();
    match done.first() {
        Some(&r) if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
        _ => Ok(()),
    }
}

/// A ring of the kind each queue thread uses (128-byte entries for the FUSE commands).
fn new_ring() -> std::io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    IoUring::builder()
        .setup_cqsize(2 * DEPTH as u32 + 2)
        .build(DEPTH as u32 + 1)
}

/// The queues of one mount; `stop` ends them.
pub struct Rings {
    threads: Vec<JoinHandle<()>>,
    /// One eventfd for every queue thread of the mount: each polls it, one write wakes all.
    wake: Arc<EventFd>,
    /// Set once the ring has answered a request (until then `/dev/fuse` serves).
    served: Arc<AtomicBool>,
}

/// How a queue thread tells `Rings::start` it is ready, and learns whether to register.
struct Start {
    ready: mpsc::Sender<std::io::Result<()>>,
    go: mpsc::Receiver<()>,
}

/// One registered entry: the header area and the payload the kernel writes a request into
/// and reads the reply from, and the iovecs that named them at REGISTER. Boxed so that
/// their addresses never move while the kernel holds them.
struct Entry {
    header: Box<[u8]>,
    payload: Box<[u8]>,
    iov: [libc::iovec; 2],
    /// With the kernel (registered or committed, not yet completed).
    pending: bool,
}

impl Rings {
    /// Starts one queue per possible CPU on the connection of `dev` (the session's
    /// `/dev/fuse` descriptor), before INIT is answered. Returns once every queue thread has
    /// made its ring and buffers and entered the ring once; if one cannot, none registers
    /// and the error comes back, so that INIT does not ask for a ring that would never be
    /// complete (the kernel holds every request of such a connection). Registration then
    /// completes in the background once INIT is answered; a REGISTER the kernel refuses
    /// turns the ring off for the connection and requests stay on `/dev/fuse`.
    pub fn start(dev: BorrowedFd, fs: Arc<VolumeFs>) -> std::io::Result<Rings> {
        let cpus = process::possible_cpus();
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map_err(std::io::Error::from)?;
        // Built first, so that an error below drops it and ends the queues already started.
        let mut rings = Rings {
            threads: Vec::new(),
            wake: Arc::new(wake),
            served: Arc::new(AtomicBool::new(false)),
        };
        // One duplicate of the connection for all the queues (every thread's ring names it
        // in its SQEs): descriptors per mount stay near one per thread.
        let dev = Arc::new(dev.try_clone_to_owned()?);
        let online = process::online_cpus();
        // A CPU that is offline issues nothing; its queue needs one entry only because the
        // kernel starts using the ring when every possible CPU's queue has one.
        let threads = |q: usize| if online.contains(&q) { THREADS } else { 1 };
        let (ready_tx, ready) = mpsc::channel::<std::io::Result<()>>();
        // Each thread registers only once told to go; dropping these tells them to end.
        let mut go = Vec::new();
        for (qid, t) in (0..cpus).flat_map(|q| (0..threads(q)).map(move |t| (q, t))) {
            let (dev, wake) = (dev.clone(), rings.wake.clone());
            let fs = fs.clone();
            let counter = rings.served.clone();
            let ready_tx = ready_tx.clone();
            let (go_tx, go_rx) = mpsc::sync_channel::<()>(1);
            go.push(go_tx);
            let thread = std::thread::Builder::new()
                .name(format!("fuse-ring-{qid}.{t}"))
                .spawn(move || {
                    let start = Start {
                        ready: ready_tx,
                        go: go_rx,
                    };
                    if let Err(e) = run_queue(qid as u16, &dev, &wake, &fs, &counter, start) {
                        warn!("FUSE ring queue {qid}: {e}; requests stay on /dev/fuse");
                    }
                })?;
            rings.threads.push(thread);
        }
        drop(ready_tx);
        let deadline = std::time::Instant::now() + READY_WAIT;
        for _ in 0..rings.threads.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match ready.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "a FUSE ring queue did not start within {READY_WAIT:?}"
                    )));
                }
            }
        }
        for g in go {
            let _ = g.send(());
        }
        info!("FUSE over io_uring: {cpus} queues, {THREADS} threads of {DEPTH} entries each");
        Ok(rings)
    }

    /// True once the ring has answered a request; until then `/dev/fuse` serves this
    /// mount (queues registering, or refused).
    pub fn serving(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Ends every queue. After an unmount the kernel has already completed their commands
    /// and the threads are gone or going; the wake-up ends a queue still waiting.
    /// `join`: wait for the threads (a plain unmount), giving the kernel's completions up
    /// to `STOP_WAIT` to arrive so that the buffers are freed, not leaked.
    pub fn stop(mut self, join: bool) {
        if join {
            let started = std::time::Instant::now();
            while started.elapsed() < STOP_WAIT && self.threads.iter().any(|t| !t.is_finished()) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.wake_all();
        for thread in std::mem::take(&mut self.threads) {
            if join {
                let _ = thread.join();
            }
        }
    }

    fn wake_all(&self) {
        // It stays readable, so every queue's poll sees it, even one armed later.
        let _ = self.wake.write(1);
    }
}

/// Rings dropped without `stop` (an attach that failed after starting them): the queues
/// are told to end, not waited for.
impl Drop for Rings {
    fn drop(&mut self) {
        self.wake_all();
    }
}

fn run_queue(
    qid: u16,
    dev: &OwnedFd,
    wake: &EventFd,
    fs: &VolumeFs,
    served: &AtomicBool,
    start: Start,
) -> std::io::Result<()> {
    let wake = wake.as_raw_fd();
    // The kernel puts a request on the queue of the CPU that issued it: pinned, the
    // wake-up stays on that CPU.
    if let Err(e) = process::pin_current_thread(qid as usize) {
        debug!("cannot pin a FUSE ring thread to CPU {qid}: {e}");
    }
    let (mut ring, mut entries) = match prepare_queue() {
        Ok(q) => {
            let _ = start.ready.send(Ok(()));
            q
        }
        Err(e) => {
            // `start` reports it and no queue registers.
            let _ = start.ready.send(Err(std::io::Error::new(
                e.kind(),
                format!("queue {qid} cannot make its io_uring: {e}"),
            )));
            return Ok(());
        }
    };
    if start.go.recv().is_err() {
        return Ok(()); // another queue failed: nothing was registered
    }
    let fd = dev.as_raw_fd();
    for (i, e) in entries.iter_mut().enumerate() {
        push(&mut ring, qid, register(fd, qid, e, i))?;
    }
    let poll = opcode::PollAdd::new(types::Fd(wake), libc::POLLIN as u32)
        .build()
        .user_data(WAKE);
    push(&mut ring, qid, squeue::Entry128::from(poll))?;
    let result = serve(&mut ring, fd, qid, &mut entries, fs, served);
    if entries.iter().any(|e| e.pending) {
        // The kernel may still write into these: never free them.
        debug!("FUSE ring queue {qid}: leaving its buffers to the kernel");
        std::mem::forget(entries);
    }
    result
}

/// A queue's ring, entered once, and its entries' buffers.
fn prepare_queue() -> std::io::Result<(IoUring<squeue::Entry128, cqueue::Entry>, Vec<Entry>)> {
    let mut ring = new_ring()?;
    enter_once(&mut ring)?;
    let payload_len = MAX_IO as usize;
    let entries = (0..DEPTH)
        .map(|_| {
            let mut header = vec![0u8; abi::HEADER_SZ].into_boxed_slice();
            let mut payload = vec![0u8; payload_len].into_boxed_slice();
            let iov = [
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: header.len(),
                },
                libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: payload.len(),
                },
            ];
            Entry {
                header,
                payload,
                iov,
                pending: false,
            }
        })
        .collect();
    Ok((ring, entries))
}

/// The REGISTER of entry `i`, naming its two buffers.
fn register(fd: RawFd, qid: u16, e: &mut Entry, i: usize) -> squeue::Entry128 {
    e.pending = true;
    let sqe = abi::ring_cmd_sqe(
        fd,
        abi::CMD_REGISTER,
        qid,
        0,
        e.iov.as_ptr() as u64,
        i as u64,
    );
    // SAFETY: `Entry128` is `#[repr(C)]` over `struct io_uring_sqe` and 64 more bytes, for
    // which every bit pattern is valid; `ring_cmd_sqe` lays out that struct.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(sqe) }
}

fn commit(fd: RawFd, qid: u16, e: &mut Entry, i: usize) -> squeue::Entry128 {
    e.pending = true;
    let commit_id = abi::u64_at(&e.header, abi::ENT_COMMIT_ID);
    let sqe = abi::ring_cmd_sqe(fd, abi::CMD_COMMIT_AND_FETCH, qid, commit_id, 0, i as u64);
    // SAFETY: as in `register`.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(sqe) }
}

/// Whether `io_uring_enter(2)` failed for want of a resource that comes back (EAGAIN:
/// no memory for a request now; EBUSY: completions waiting to be reaped; ENOMEM), so that
/// entering again later is right, unlike a failure of the ring or the connection.
fn enter_again(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOMEM | libc::EINTR)
    )
}

/// A shortage of `io_uring_enter` in progress: waits between retries grow from 1 ms to
/// 64 ms; after [`Shortage::LIMIT`] without one successful enter the error is returned.
#[derive(Default)]
struct Shortage {
    since: Option<std::time::Instant>,
    pause: Duration,
}

impl Shortage {
    const LIMIT: Duration = Duration::from_secs(10);

    /// Waits before the next retry of an enter that failed with `e`, or returns `e` once
    /// the shortage has lasted [`Shortage::LIMIT`].
    fn wait(&mut self, qid: u16, e: std::io::Error) -> std::io::Result<()> {
        let since = *self.since.get_or_insert_with(|| {
            warn!("FUSE ring queue {qid}: io_uring_enter: {e}; retrying");
            std::time::Instant::now()
        });
        if since.elapsed() >= Self::LIMIT {
            return Err(e);
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(64));
        std::thread::sleep(self.pause);
        Ok(())
    }
}

/// Submits what is queued, entering again through a shortage (bounded by
/// [`Shortage::LIMIT`]); an interrupted enter is retried at once.
fn submit_through_shortage(ring: &mut IoUring<squeue::Entry128>, qid: u16) -> std::io::Result<()> {
    let mut shortage = Shortage::default();
    loop {
        match ring.submit() {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if enter_again(&e) => shortage.wait(qid, e)?,
            Err(e) => return Err(e),
        }
    }
}

fn push(
    ring: &mut IoUring<squeue::Entry128>,
    qid: u16,
    sqe: squeue::Entry128,
) -> std::io::Result<()> {
    // SAFETY: every buffer an SQE names lives in an `Entry` that outlives its command.
    let full = unsafe { ring.submission().push(&sqe).is_err() };
    if full {
        submit_through_shortage(ring, qid)?;
        // SAFETY: as above.
        unsafe { ring.submission().push(&sqe) }
            .map_err(|_| std::io::Error::other("submission queue full"))?;
    }
    Ok(())
}

fn serve(
    ring: &mut IoUring<squeue::Entry128>,
    fd: RawFd,
    qid: u16,
    entries: &mut [Entry],
    fs: &VolumeFs,
    served: &AtomicBool,
) -> std::io::Result<()> {
    let mut failed = None;
    let mut shortage = Shortage::default();
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(2 * DEPTH + 2);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => shortage = Shortage::default(),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // The kernel is short of something for a moment (memory, completion-queue
            // room): no submission was lost (a failed enter consumes none), so reap what
            // completed and enter again. Ending the queue instead would stall every
            // request issued on this CPU until the unmount. Bounded: a shortage that
            // lasts ends the queue as any other failure does (an unmount must not wait
            // on a queue whose wake-up never reached the kernel).
            Err(e) if enter_again(&e) => {
                if ring.completion().is_empty() {
                    shortage.wait(qid, e)?;
                    continue;
                }
            }
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        // Told to stop: the requests of this batch are still answered and their commits
        // sent, or their callers would wait for the daemon's exit.
        let mut stopping = false;
        for &(ud, res) in &done {
            if ud == WAKE {
                stopping = true;
                continue;
            }
            let i = ud as usize;
            let Some(e) = entries.get_mut(i) else {
                continue;
            };
            e.pending = false;
            match res {
                0 => {
                    dispatch::serve(fs, &mut e.header, &mut e.payload);
                    // Once per queue, not per request: all queues of a mount share it.
                    if !served.load(Ordering::Relaxed) {
                        served.store(true, Ordering::Relaxed);
                    }
                    push(ring, qid, commit(fd, qid, e, i))?;
                }
                // Not initialised yet (INIT still on its way): register again shortly.
                r if (r == -libc::EAGAIN || r == -libc::EINTR) && !stopping => {
                    std::thread::sleep(Duration::from_millis(2));
                    push(ring, qid, register(fd, qid, e, i))?;
                }
                // The connection ended (unmount, abort), or we are stopping: done.
                r if r == -libc::ENOTCONN
                    || r == -libc::ECONNABORTED
                    || r == -libc::ECANCELED
                    || r == -libc::EAGAIN
                    || r == -libc::EINTR => {}
                // Refused (a kernel without the ring, a malformed entry): keep waiting
                // until every other entry is back, then report the first refusal.
                r => {
                    failed.get_or_insert(r);
                }
            }
        }
        if stopping {
            // The commits of this batch, sent even through a shortage.
            return submit_through_shortage(ring, qid);
        }
        if entries.iter().all(|e| !e.pending) {
            return failed.map_or(Ok(()), |r| Err(std::io::Error::from_raw_os_error(-r)));
        }
    }
}
