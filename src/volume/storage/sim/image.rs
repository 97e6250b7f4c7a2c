//! One file of the simulated disk: its contents as sparse pages, what a crash cannot take
//! away (the durable image) and what it can (the operations since the last sync).

use std::collections::BTreeMap;
use std::sync::Arc;
/// The granularity of the sparse in-memory images.
pub(super) const PAGE: u64 = 4096;

pub(super) type Page = [u8; PAGE as usize];

/// The contents of one file: a length and sparse 4 KiB pages (absent pages read as zeros).
/// Pages are shared between images (copy on write), so a snapshot costs a map clone.
/// Invariant: no byte at or past `len` is non-zero.
#[derive(Clone, Default)]
pub(super) struct Image {
    pub(super) len: u64,
    pub(super) pages: BTreeMap<u64, Arc<Page>>,
}

impl Image {
    /// Reads at `off`, zeros past the end.
    pub(super) fn read(&self, buf: &mut [u8], off: u64) {
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match self.pages.get(&(at / PAGE)) {
                Some(page) => out.copy_from_slice(&page[in_page..in_page + n]),
                None => out.fill(0),
            }
            done += n;
        }
    }

    /// Writes at `off`, extending the length (the caller has checked `off + data.len()`).
    pub(super) fn write(&mut self, data: &[u8], off: u64) {
        let mut done = 0;
        while done < data.len() {
            let at = off + done as u64;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(data.len() - done);
            let page = self
                .pages
                .entry(at / PAGE)
                .or_insert_with(|| Arc::new([0; PAGE as usize]));
            Arc::make_mut(page)[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.len = self.len.max(off + data.len() as u64);
    }

    /// Zeros `[off, end)` without changing the length; whole pages are dropped.
    pub(super) fn zero(&mut self, off: u64, end: u64) {
        let end = end.min(self.len.next_multiple_of(PAGE));
        let mut at = off;
        while at < end {
            let page_no = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE - at % PAGE).min(end - at) as usize;
            if n == PAGE as usize {
                self.pages.remove(&page_no);
            } else if let Some(page) = self.pages.get_mut(&page_no) {
                Arc::make_mut(page)[in_page..in_page + n].fill(0);
            }
            at += n as u64;
        }
    }

    pub(super) fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.zero(len, self.len);
            let _ = self.pages.split_off(&len.div_ceil(PAGE));
        }
        self.len = len;
    }

    pub(super) fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { off, data } => self.write(data, *off),
            Op::Punch { off, end } => self.zero(*off, *end),
            Op::SetLen(len) => self.set_len(*len),
        }
    }
}

/// An operation not yet synced.
#[derive(Clone)]
pub(super) enum Op {
    Write { off: u64, data: Vec<u8> },
    Punch { off: u64, end: u64 },
    SetLen(u64),
}

/// One file of the disk.
#[derive(Clone, Default)]
pub(super) struct FileState {
    /// What a crash cannot take away.
    pub(super) durable: Image,
    /// What reads see (the page cache): `durable` with `volatile` applied, and with the
    /// operations a failed sync lost, until the cache is dropped.
    pub(super) live: Image,
    /// Operations not yet on the disk that the next successful sync writes, in order
    /// (dirty pages).
    pub(super) volatile: Vec<Op>,
}

impl FileState {
    pub(super) fn from_image(image: Image) -> FileState {
        FileState {
            durable: image.clone(),
            live: image,
            volatile: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, op: Op) {
        self.live.apply(&op);
        self.volatile.push(op);
    }

    /// A successful sync: the pending operations reach the disk (not what a failed sync
    /// lost, which the live view may still show).
    pub(super) fn sync(&mut self) {
        for op in self.volatile.drain(..) {
            self.durable.apply(&op);
        }
    }

    /// A failed sync (Linux after a writeback error): the pending operations are no longer
    /// pending; those `landed` picks reached the disk, the others did not; reads still see
    /// them all.
    pub(super) fn sync_failed(&mut self, mut landed: impl FnMut() -> bool) {
        for op in self.volatile.drain(..) {
            if landed() {
                self.durable.apply(&op);
            }
        }
    }

    /// The clean cached pages are dropped: reads see the disk and the pending operations.
    pub(super) fn drop_cache(&mut self) {
        let mut live = self.durable.clone();
        for op in &self.volatile {
            live.apply(op);
        }
        self.live = live;
    }
}
