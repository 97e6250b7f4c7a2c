//! The process's heap: glibc's malloc, and in `kms serve` mimalloc for small blocks.
//!
//! Why mimalloc there: `kms serve` spent 15% of its CPU in glibc's malloc and free (its
//! arena locks and `malloc_consolidate` among them) across its worker threads; with
//! mimalloc for its small blocks its CPU per SigV4 Decrypt falls by a fifth
//! (docs/benchmarks.md, "KMS server over loopback").
//!
//! Why not everywhere, and why small blocks only: as root every cryptvol process locks its
//! pages (`crypto::hardening`, key material out of swap), and mimalloc hands freed memory
//! back with `madvise(MADV_DONTNEED)`, which the kernel refuses on locked pages. So what
//! mimalloc once held it keeps: a daemon that read a 64 MiB hostile control line kept the
//! 128 MiB of buffers it grew through, and the authenticated volume daemon's peak RSS rose
//! from 40–64 to 77–85 MiB with no gain in speed. glibc can serve a large block with its
//! own `mmap` and give it back with `munmap`, which works on locked pages (not by default:
//! its mmap threshold rises to the size of any mapped block freed, after which such
//! blocks come from its arenas, which return memory with `madvise` too). So:
//! - every process starts on glibc alone;
//! - [`small_blocks_from_mimalloc`] (called by `kms serve` before its threads start) sends
//!   new blocks under [`LARGE`] bytes to mimalloc, and fixes glibc's mmap threshold at
//!   [`LARGE`], so that larger ones (request bodies, a hostile client's data) are mapped
//!   and unmapped one by one.
//!
//! Frees go to the owner: a block of [`LARGE`] bytes or more is glibc's (Rust passes the
//! block's layout to `dealloc` and `realloc`); a smaller one is mimalloc's exactly when
//! `mi_is_in_heap_region` says so, since small blocks made before the switch are glibc's.
//! That lookup in mimalloc's page map is true for every page mimalloc has live and false
//! for memory it never mapped or has freed, so for every block glibc made (it may also be
//! true just past an over-aligned mimalloc block, where no glibc block can be).
//! Secrets are zeroized before they are freed, whichever allocator frees them.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// The size from which a block is always glibc's.
pub const LARGE: usize = 64 * 1024;

/// Whether new small blocks come from mimalloc. Only ever set, never cleared, so Relaxed
/// suffices: a thread that made a block in mimalloc read `true`, and whatever hands the
/// block to another thread orders that read before the other thread's (read-read
/// coherence), which so reads `true` as well when it frees the block.
static SMALL_FROM_MIMALLOC: AtomicBool = AtomicBool::new(false);

/// From now on, blocks under [`LARGE`] bytes come from mimalloc (see the module doc).
/// glibc keeps the large blocks: each is mapped and unmapped on its own (a fixed mmap
/// threshold), and its few small blocks from before the switch need no more than two
/// arenas.
pub fn small_blocks_from_mimalloc() {
    // SAFETY: mallopt only sets glibc's tuning variables (it checks their values).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    SMALL_FROM_MIMALLOC.store(true, Ordering::Relaxed);
}

/// glibc's malloc, and mimalloc for small blocks once switched on (see the module doc).
pub struct SplitAllocator;

fn small_goes_to_mimalloc(size: usize) -> bool {
    size < LARGE && SMALL_FROM_MIMALLOC.load(Ordering::Relaxed)
}

fn owned_by_mimalloc(ptr: *mut u8, size: usize) -> bool {
    // Before the switch nothing is mimalloc's, and a large block never is.
    small_goes_to_mimalloc(size)
        // SAFETY: a lookup of the address in mimalloc's page map; reads no block memory.
        && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: every block is freed and resized by the allocator that made it: `owned_by_mimalloc`
// tells exactly (sizes of LARGE or more are only ever glibc's; a small block is mimalloc's
// iff its page map knows the address, which it never does for a block glibc made). A
// `realloc` that changes allocator allocates in the new one, copies and frees, as
// `GlobalAlloc` allows.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (non-zero size).
        unsafe {
            if small_goes_to_mimalloc(layout.size()) {
                mimalloc::MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if small_goes_to_mimalloc(layout.size()) {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` goes back to the allocator that made it (see the impl's comment).
        unsafe {
            if owned_by_mimalloc(ptr, layout.size()) {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let from_mimalloc = owned_by_mimalloc(ptr, layout.size());
        let to_mimalloc = small_goes_to_mimalloc(new_size);
        // SAFETY: same allocator: its own realloc. Otherwise a new block of the same
        // alignment from the other, the common prefix copied, the old one freed.
        unsafe {
            match (from_mimalloc, to_mimalloc) {
                (true, true) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
                (false, false) => System.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates `size` bytes of alignment `align` from `a`, filled with a pattern.
    unsafe fn filled(a: &SplitAllocator, size: usize, align: usize) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
        for i in 0..size {
            unsafe { p.add(i).write(i as u8 ^ 0x5a) };
        }
        (p, layout)
    }

    fn holds_pattern(p: *const u8, len: usize) -> bool {
        (0..len).all(|i| unsafe { p.add(i).read() } == i as u8 ^ 0x5a)
    }

    // One test, not several: the switch is process-wide and one-way, so the steps before
    // and after it must run in order, and the test binary's other tests (which allocate
    // with the default allocator) never see it.
    #[test]
    fn blocks_made_before_and_after_the_switch_go_back_to_their_owner() {
        let a = SplitAllocator;
        let sizes = [48, 4096, LARGE - 1, LARGE, 3 * LARGE];
        // Before the switch: all glibc's, mimalloc owns nothing.
        let before: Vec<_> = sizes
            .iter()
            .map(|&s| unsafe { filled(&a, s, 16) })
            .collect();
        for &(p, layout) in &before {
            assert!(!owned_by_mimalloc(p, layout.size()));
        }

        small_blocks_from_mimalloc();
        let after: Vec<_> = sizes
            .iter()
            .map(|&s| unsafe { filled(&a, s, 16) })
            .collect();
        for &(p, layout) in &after {
            assert_eq!(
                owned_by_mimalloc(p, layout.size()),
                layout.size() < LARGE,
                "a new block of {} bytes",
                layout.size()
            );
        }
        // Blocks from before the switch are still glibc's, though small ones now come
        // from mimalloc.
        for &(p, layout) in &before {
            assert!(
                !owned_by_mimalloc(p, layout.size()),
                "{} bytes",
                layout.size()
            );
        }

        // Grown and shrunk across the boundary and across the switch: bytes and
        // alignment kept, and each freed by its owner (a wrong owner aborts the test).
        for align in [8, 64, 4096, 128 * 1024] {
            for (from, to) in [
                (100, LARGE - 1),
                (LARGE - 1, LARGE),
                (1000, 3 * LARGE),
                (3 * LARGE, 1000),
                (LARGE, LARGE - 1),
                (2 * LARGE, 4 * LARGE),
            ] {
                unsafe {
                    let (p, layout) = filled(&a, from, align);
                    let q = a.realloc(p, layout, to);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{from} -> {to}, aligned to {align}");
                    assert!(
                        holds_pattern(q, from.min(to)),
                        "{from} -> {to} kept its bytes"
                    );
                    a.dealloc(q, Layout::from_size_align(to, align).unwrap());
                }
            }
        }
        for (p, layout) in before {
            unsafe {
                // A glibc block from before the switch, resized after it, keeps its bytes.
                let q = a.realloc(p, layout, layout.size() + 100);
                assert!(holds_pattern(q, layout.size()));
                a.dealloc(q, Layout::from_size_align(layout.size() + 100, 16).unwrap());
            }
        }

        // Zeroed blocks are zero on both sides, even when reusing a dirtied block.
        for size in [64, LARGE - 8, LARGE, 4 * LARGE] {
            unsafe {
                let (p, layout) = filled(&a, size, 16);
                a.dealloc(p, layout);
                let z = a.alloc_zeroed(layout);
                assert!(!z.is_null());
                assert!((0..size).all(|i| z.add(i).read() == 0), "{size} zeroed");
                a.dealloc(z, layout);
            }
        }

        // Blocks freed on another thread go back to their owner too.
        let moved: Vec<(usize, usize)> =
            after.iter().map(|&(p, l)| (p as usize, l.size())).collect();
        std::thread::spawn(move || {
            for (p, size) in moved {
                assert!(holds_pattern(p as *const u8, size));
                let layout = Layout::from_size_align(size, 16).unwrap();
                unsafe { SplitAllocator.dealloc(p as *mut u8, layout) };
            }
        })
        .join()
        .unwrap();
    }
}
