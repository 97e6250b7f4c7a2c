//! Group commit: concurrent callers' events are written together, in the order they were
//! queued and chained, and no caller gets its seq before its event is in the file; a write
//! that fails fails every caller whose event it carried.

use std::sync::Barrier;

use super::*;
use crate::audit::fail_point;

/// The active file's lines that carry `seq`.
fn line_with_seq(log: &AuditLog, seq: u64) -> Option<String> {
    let needle = format!("\"cryptvolChain\":{{\"seq\":{seq},");
    names::list(log.dir())
        .unwrap()
        .iter()
        .flat_map(|e| {
            fs::read_to_string(log.dir().join(&e.log_name))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find(|l| l.contains(&needle))
}

#[test]
fn concurrent_callers_are_chained_in_order_and_written_before_they_return() {
    let d = tempfile::tempdir().unwrap();
    // Two logs on one directory: two processes' writers, each with its own group.
    let logs = [Arc::new(open(d.path())), Arc::new(open(d.path()))];
    let threads = 8u64;
    let each = 40u64;
    let start = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = logs[(t % 2) as usize].clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut seqs = vec![];
                for i in 0..each {
                    let id = t * 1000 + i;
                    let seq = log.append(&ev(id), T0).unwrap();
                    // Durable (in the file) before the caller has its result.
                    let line = line_with_seq(&log, seq).expect("the event is in the file");
                    assert!(line.contains(&format!("\"ev-{id}\"")), "{line}");
                    seqs.push(seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = vec![];
    for h in handles {
        let seqs = h.join().unwrap();
        // Each caller's events are in the order it made them.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    all.sort();
    assert_eq!(all, (1..=threads * each).collect::<Vec<_>>());
    let r = logs[0].verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(r.last_seq, threads * each);
}

/// Starts a leader whose write of event 1 is held, then `n` callers queued behind it;
/// returns the threads (each answering its event id and result).
fn queue_behind_a_held_leader(
    log: &Arc<AuditLog>,
    n: u64,
) -> Vec<std::thread::JoinHandle<(u64, Result<u64>)>> {
    fail_point::hold(log.dir());
    let leader = {
        let log = log.clone();
        std::thread::spawn(move || (1, log.append(&ev(1), T0)))
    };
    fail_point::wait_for_held_writer(log.dir());
    let mut threads = vec![leader];
    for i in 0..n {
        let id = 100 + i;
        let l = log.clone();
        threads.push(std::thread::spawn(move || (id, l.append(&ev(id), T0))));
        // Queued in this order: wait for each before starting the next.
        while log.group().queue.len() as u64 != i + 1 {
            std::thread::yield_now();
        }
    }
    threads
}

#[test]
fn callers_queued_behind_a_write_share_the_next_one_in_their_order() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(d.path()));
    log.append(&ev(0), T0).unwrap(); // creates the file outside the test's count
    let writes_before = fail_point::writes(log.dir());
    let threads = queue_behind_a_held_leader(&log, 5);
    fail_point::release(log.dir());
    let mut out: Vec<(u64, u64)> = threads
        .into_iter()
        .map(|h| {
            let (id, r) = h.join().unwrap();
            (id, r.unwrap())
        })
        .collect();
    out.sort_by_key(|(_, seq)| *seq);
    // The leader's event, then the five queued ones in queue order, in one more write.
    assert_eq!(
        out,
        [(1, 2), (100, 3), (101, 4), (102, 5), (103, 6), (104, 7)]
    );
    assert_eq!(fail_point::writes(log.dir()) - writes_before, 2);
    for (id, seq) in out {
        let line = line_with_seq(&log, seq).unwrap();
        assert!(line.contains(&format!("\"ev-{id}\"")), "{line}");
    }
    assert!(log.verify().unwrap().valid);
}

#[test]
fn a_failed_group_write_fails_every_caller_it_carried_and_the_chain_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(d.path()));
    log.append(&ev(0), T0).unwrap();
    let writes_before = fail_point::writes(log.dir());
    let threads = queue_behind_a_held_leader(&log, 4);
    // The leader's write goes through; the queued callers' shared write is torn.
    fail_point::tear_write(log.dir(), writes_before + 1);
    fail_point::release(log.dir());
    for h in threads {
        let (id, r) = h.join().unwrap();
        if id == 1 {
            assert_eq!(r.unwrap(), 2);
        } else {
            let e = r.expect_err("a caller whose event was not written gets no seq");
            assert!(e.to_string().contains("torn by a test"), "{e}");
        }
    }
    // The torn bytes are cut and the chain continues after the last whole event.
    assert_eq!(log.append(&ev(9), T0).unwrap(), 3);
    let r = log.verify().unwrap();
    assert!(r.valid, "{r:?}");
    let ids: Vec<u64> = log.events().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(line_with_seq(&log, 3).unwrap().contains("\"ev-9\""));
}
