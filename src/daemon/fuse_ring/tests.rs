//! The dispatcher against a real volume, one request at a time, in the ring's layout: what
//! the kernel would find in the entry after our commit (out-header, payload length, the
//! reply's bytes). The real kernel path is `tests/fuse_ring.rs`.

use std::sync::Arc;

use super::abi::{self, u32_at, u64_at};
use super::dispatch;
use crate::daemon::fuse_file::VolumeFs;
use crate::volume::test_support::{header, region, xts};
use crate::volume::{OpenVolume, Pool};

const SIZE: u64 = 4 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    fs: VolumeFs,
    header: Vec<u8>,
    payload: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let r = region(&dir);
        let pool = Arc::new(Pool::open(&r).unwrap());
        let h = header(SIZE);
        pool.create_volume(&h).unwrap();
        let vol = Arc::new(OpenVolume::open(pool, &h, xts()).unwrap());
        Fixture {
            _dir: dir,
            fs: VolumeFs::new(vol),
            header: vec![0; abi::HEADER_SZ],
            payload: vec![0; 1 << 20],
        }
    }

    /// Puts a request (in-header, `op_in`, `data` into the payload) and serves it; returns
    /// (error, reply payload).
    fn call(&mut self, opcode: u32, nodeid: u64, op_in: &[u8], data: &[u8]) -> (i32, Vec<u8>) {
        self.header.fill(0xee); // what the last request left must not leak into a reply
        self.header[4..8].copy_from_slice(&opcode.to_le_bytes());
        self.header[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
        self.header[16..24].copy_from_slice(&nodeid.to_le_bytes());
        self.header[abi::OP_IN..abi::OP_IN + 128].fill(0);
        self.header[abi::OP_IN..abi::OP_IN + op_in.len()].copy_from_slice(op_in);
        self.header[abi::ENT_PAYLOAD_SZ..abi::ENT_PAYLOAD_SZ + 4]
            .copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.payload[..data.len()].copy_from_slice(data);
        dispatch::serve(&self.fs, &mut self.header, &mut self.payload);
        assert_eq!(
            u64_at(&self.header, 8),
            0x1234,
            "the reply names its request"
        );
        let error = u32_at(&self.header, 4) as i32;
        let len = u32_at(&self.header, abi::ENT_PAYLOAD_SZ) as usize;
        assert_eq!(
            u32_at(&self.header, 0) as usize,
            16 + len,
            "out-header length"
        );
        (error, self.payload[..len].to_vec())
    }
}

fn rw_in(offset: u64, size: u32, flags: u32) -> Vec<u8> {
    // fh, offset, size, read/write flags, lock_owner, flags, padding.
    let mut v = Vec::new();
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

#[test]
fn a_write_then_a_read_round_trip_through_the_entry() {
    let mut f = Fixture::new();
    let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 251) as u8).collect();
    let (e, out) = f.call(abi::WRITE, 2, &rw_in(8192 + 5, data.len() as u32, 0), &data);
    assert_eq!(e, 0);
    assert_eq!(out.len(), 8, "struct fuse_write_out");
    assert_eq!(u32_at(&out, 0) as usize, data.len());
    let (e, out) = f.call(abi::READ, 2, &rw_in(8192 + 5, data.len() as u32, 0), &[]);
    assert_eq!(e, 0);
    assert_eq!(out, data);
    // A read past the end returns what there is.
    let (e, out) = f.call(abi::READ, 2, &rw_in(SIZE - 10, 4096, 0), &[]);
    assert_eq!((e, out.len()), (0, 10));
}

#[test]
fn a_write_that_claims_more_than_its_payload_is_refused() {
    let mut f = Fixture::new();
    let (e, out) = f.call(abi::WRITE, 2, &rw_in(0, 8192, 0), &[1u8; 4096]);
    assert_eq!(e, -libc::EINVAL);
    assert!(out.is_empty());
    let (_, back) = f.call(abi::READ, 2, &rw_in(0, 4096, 0), &[]);
    assert_eq!(back, vec![0u8; 4096], "nothing was written");
}

#[test]
fn lookup_getattr_and_open_reply_with_the_kernels_struct_sizes() {
    let mut f = Fixture::new();
    let (e, out) = f.call(abi::LOOKUP, 1, &[], b"volume\0");
    assert_eq!(e, 0);
    assert_eq!(out.len(), 128, "struct fuse_entry_out");
    assert_eq!(u64_at(&out, 0), 2, "node id");
    assert_eq!(u64_at(&out, 40 + 8), SIZE, "attr.size");
    assert_eq!(u32_at(&out, 40 + 60) & libc::S_IFMT, libc::S_IFREG);
    let (e, _) = f.call(abi::LOOKUP, 1, &[], b"other\0");
    assert_eq!(e, -libc::ENOENT);
    let (e, out) = f.call(abi::GETATTR, 1, &[0u8; 16], &[]);
    assert_eq!((e, out.len()), (0, 104), "struct fuse_attr_out");
    assert_eq!(u32_at(&out, 16 + 60) & libc::S_IFMT, libc::S_IFDIR);
    let (e, out) = f.call(abi::OPEN, 2, &[0u8; 8], &[]);
    assert_eq!((e, out.len()), (0, 16), "struct fuse_open_out");
    assert_ne!(
        u32_at(&out, 8) & fuser::FopenFlags::FOPEN_DIRECT_IO.bits(),
        0
    );
    let (e, _) = f.call(abi::OPEN, 1, &[0u8; 8], &[]);
    assert_eq!(e, -libc::EISDIR);
}

#[test]
fn setattr_refuses_a_new_size_and_keeps_the_volume() {
    let mut f = Fixture::new();
    let mut op = vec![0u8; 88];
    op[0..4].copy_from_slice(&abi::FATTR_SIZE.to_le_bytes());
    op[16..24].copy_from_slice(&(SIZE / 2).to_le_bytes());
    let (e, _) = f.call(abi::SETATTR, 2, &op, &[]);
    assert_eq!(e, -libc::EPERM);
    op[16..24].copy_from_slice(&SIZE.to_le_bytes());
    let (e, out) = f.call(abi::SETATTR, 2, &op, &[]);
    assert_eq!((e, out.len()), (0, 104));
    assert_eq!(u64_at(&out, 16 + 8), SIZE);
}

#[test]
fn readdir_lists_the_one_file_and_stops_at_the_buffer() {
    let mut f = Fixture::new();
    let (e, out) = f.call(abi::READDIR, 1, &rw_in(0, 4096, 0), &[]);
    assert_eq!(e, 0);
    // Three dirents of 24 bytes plus the name, each padded to 8: ".", "..", "volume".
    assert_eq!(out.len(), 32 + 32 + 32);
    assert_eq!(&out[64 + 24..64 + 30], b"volume");
    let (e, out) = f.call(abi::READDIR, 1, &rw_in(0, 40, 0), &[]);
    assert_eq!((e, out.len()), (0, 32), "only what fits");
    let (e, out) = f.call(abi::READDIR, 1, &rw_in(3, 4096, 0), &[]);
    assert_eq!((e, out.len()), (0, 0), "past the end");
}

#[test]
fn fallocate_punches_zeros_and_unknown_opcodes_are_enosys() {
    let mut f = Fixture::new();
    let (e, _) = f.call(abi::WRITE, 2, &rw_in(0, 8192, 0), &[9u8; 8192]);
    assert_eq!(e, 0);
    let mut op = vec![0u8; 32];
    op[16..24].copy_from_slice(&8192u64.to_le_bytes());
    op[24..28].copy_from_slice(&(0x02u32 | 0x01).to_le_bytes()); // PUNCH_HOLE | KEEP_SIZE
    let (e, out) = f.call(abi::FALLOCATE, 2, &op, &[]);
    assert_eq!((e, out.len()), (0, 0));
    let (_, back) = f.call(abi::READ, 2, &rw_in(0, 8192, 0), &[]);
    assert_eq!(back, vec![0u8; 8192]);
    for op in [22, 23, 46, 52, 999] {
        let (e, out) = f.call(op, 2, &[], &[]);
        assert_eq!((e, out.len()), (-libc::ENOSYS, 0), "opcode {op}");
    }
    let (e, _) = f.call(abi::FSYNC, 2, &[0u8; 16], &[]);
    assert_eq!(e, 0);
}

#[test]
fn statfs_reports_the_volume_in_blocks() {
    let mut f = Fixture::new();
    let (e, out) = f.call(abi::STATFS, 1, &[], &[]);
    assert_eq!((e, out.len()), (0, 80), "struct fuse_statfs_out");
    assert_eq!(u64_at(&out, 0), SIZE / 4096);
    assert_eq!(u32_at(&out, 40), 4096);
}

/// A queue enters its ring again after a shortage (it would otherwise end, and every
/// request issued on its CPU would wait for the unmount), but not after a failure of the
/// ring or the connection.
#[test]
fn a_queue_enters_again_after_a_shortage_and_ends_after_a_failure() {
    use std::io::Error;
    for shortage in [libc::EAGAIN, libc::EBUSY, libc::ENOMEM, libc::EINTR] {
        assert!(
            super::enter_again(&Error::from_raw_os_error(shortage)),
            "{shortage}"
        );
    }
    for failure in [
        libc::EBADF,
        libc::EINVAL,
        libc::ENOTCONN,
        libc::EFAULT,
        libc::EOPNOTSUPP,
    ] {
        assert!(
            !super::enter_again(&Error::from_raw_os_error(failure)),
            "{failure}"
        );
    }
    assert!(!super::enter_again(&Error::other("not an errno")));
}

/// A shortage is retried with growing pauses, and one that lasts ends the queue with its
/// error (so an unmount does not wait forever on a queue that cannot enter its ring).
#[test]
fn a_shortage_that_lasts_ends_the_queue() {
    use std::io::Error;
    use std::time::{Duration, Instant};
    let mut s = super::Shortage::default();
    let eagain = || Error::from_raw_os_error(libc::EAGAIN);
    assert!(s.wait(0, eagain()).is_ok());
    assert!(s.wait(0, eagain()).is_ok());
    assert_eq!(s.pause, Duration::from_millis(2));
    s.since = Some(Instant::now() - super::Shortage::LIMIT);
    let e = s.wait(0, eagain()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
}
