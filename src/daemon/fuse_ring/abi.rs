//! The bytes of FUSE over io_uring, from the kernel's `include/uapi/linux/fuse.h` (protocol
//! 7.42) and `io_uring.h`: the request and reply structures the ring carries, the ring
//! entry's header area, and the 128-byte SQE of a FUSE ring command. Everything here is
//! little-endian plain data at fixed offsets; nothing is trusted beyond its bounds.

/// Opcodes this transport answers (`enum fuse_opcode`).
pub const LOOKUP: u32 = 1;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const FLUSH: u32 = 25;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const ACCESS: u32 = 34;
pub const DESTROY: u32 = 38;
pub const FALLOCATE: u32 = 43;

/// `FATTR_SIZE` in `fuse_setattr_in.valid`.
pub const FATTR_SIZE: u32 = 1 << 3;

/// `struct fuse_uring_req_header`: `in_out` (the in or out header), `op_in` (the opcode's
/// fixed arguments), then `struct fuse_uring_ent_in_out`.
pub const IN_OUT: usize = 0;
pub const OP_IN: usize = 128;
pub const ENT_COMMIT_ID: usize = 256 + 8;
pub const ENT_PAYLOAD_SZ: usize = 256 + 16;
pub const HEADER_SZ: usize = 256 + 32;

/// `enum fuse_uring_cmd`.
pub const CMD_REGISTER: u32 = 1;
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `IORING_OP_URING_CMD`.
const IORING_OP_URING_CMD: u8 = 46;

/// The parts of `struct fuse_in_header` a request is answered by.
#[derive(Clone, Copy, Debug)]
pub struct InHeader {
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
}

pub fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

impl InHeader {
    /// `len u32, opcode u32, unique u64, nodeid u64, ...` at the start of `in_out`.
    pub fn parse(header: &[u8]) -> InHeader {
        InHeader {
            opcode: u32_at(header, IN_OUT + 4),
            unique: u64_at(header, IN_OUT + 8),
            nodeid: u64_at(header, IN_OUT + 16),
        }
    }
}

/// Writes `struct fuse_out_header` (`len`, `error`, `unique`) into `in_out`, and the
/// payload's length into the entry's trailer, as the kernel reads a commit.
pub fn put_out_header(header: &mut [u8], error: i32, unique: u64, payload: usize) {
    header[IN_OUT..IN_OUT + 4].copy_from_slice(&((16 + payload) as u32).to_le_bytes());
    header[IN_OUT + 4..IN_OUT + 8].copy_from_slice(&error.to_le_bytes());
    header[IN_OUT + 8..IN_OUT + 16].copy_from_slice(&unique.to_le_bytes());
    header[ENT_PAYLOAD_SZ..ENT_PAYLOAD_SZ + 4].copy_from_slice(&(payload as u32).to_le_bytes());
}

/// The 128-byte SQE of a FUSE ring command (`IORING_OP_URING_CMD` on the `/dev/fuse`
/// descriptor `fd`), laid out as `struct io_uring_sqe` with `struct fuse_uring_cmd_req` in
/// its command area. A REGISTER names the entry's two iovecs (header, payload) through
/// `addr` and `len` = 2, which the io-uring crate's builder cannot set.
pub fn ring_cmd_sqe(
    fd: i32,
    cmd: u32,
    qid: u16,
    commit_id: u64,
    iovecs: u64,
    user_data: u64,
) -> [u8; 128] {
    let mut s = [0u8; 128];
    s[0] = IORING_OP_URING_CMD;
    s[4..8].copy_from_slice(&fd.to_le_bytes());
    s[8..12].copy_from_slice(&cmd.to_le_bytes()); // cmd_op
    if cmd == CMD_REGISTER {
        s[16..24].copy_from_slice(&iovecs.to_le_bytes()); // addr
        s[24..28].copy_from_slice(&2u32.to_le_bytes()); // len: two iovecs
    }
    s[32..40].copy_from_slice(&user_data.to_le_bytes());
    // struct fuse_uring_cmd_req at cmd[0] (offset 48): flags, commit_id, qid.
    s[56..64].copy_from_slice(&commit_id.to_le_bytes());
    s[64..66].copy_from_slice(&qid.to_le_bytes());
    s
}

/// Appends little-endian words to a reply.
pub struct Out<'a> {
    buf: &'a mut [u8],
    pub len: usize,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, len: 0 }
    }
    fn put(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.put(b);
        self
    }
    pub fn pad8(&mut self) -> &mut Self {
        while !self.len.is_multiple_of(8) {
            self.put(&[0]);
        }
        self
    }
}

/// `struct fuse_attr` (88 bytes) of an inode.
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub time: (u64, u32),
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
}

impl Attr {
    pub fn put(&self, o: &mut Out) {
        let (secs, nsec) = self.time;
        o.u64(self.ino).u64(self.size).u64(self.blocks);
        o.u64(secs)
            .u64(secs)
            .u64(secs)
            .u32(nsec)
            .u32(nsec)
            .u32(nsec);
        o.u32(self.mode).u32(self.nlink).u32(self.uid).u32(self.gid);
        o.u32(0).u32(self.blksize).u32(0); // rdev, blksize, flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attr_is_88_bytes_and_an_attr_out_104() {
        let mut b = [0u8; 256];
        let mut o = Out::new(&mut b);
        o.u64(1).u32(0).u32(0);
        let a = Attr {
            ino: 2,
            size: 3,
            blocks: 4,
            time: (5, 6),
            mode: 0o100600,
            nlink: 1,
            uid: 7,
            gid: 8,
            blksize: 4096,
        };
        a.put(&mut o);
        assert_eq!(o.len, 104);
        assert_eq!(u64_at(&b, 16), 2, "ino first");
        assert_eq!(u32_at(&b, 16 + 60), 0o100600, "mode after the times");
        assert_eq!(u32_at(&b, 16 + 80), 4096, "blksize");
    }

    #[test]
    fn a_register_sqe_names_two_iovecs_and_its_queue() {
        let s = ring_cmd_sqe(9, CMD_REGISTER, 1, 0, 0xabc0, 77);
        assert_eq!(s[0], IORING_OP_URING_CMD);
        assert_eq!(u32_at(&s, 4), 9);
        assert_eq!(u32_at(&s, 8), CMD_REGISTER);
        assert_eq!(u64_at(&s, 16), 0xabc0);
        assert_eq!(u32_at(&s, 24), 2);
        assert_eq!(u64_at(&s, 32), 77);
        assert_eq!(u16::from_le_bytes([s[64], s[65]]), 1);
        let c = ring_cmd_sqe(9, CMD_COMMIT_AND_FETCH, 0, 55, 0xabc0, 77);
        assert_eq!(u64_at(&c, 56), 55, "commit id");
        assert_eq!(u32_at(&c, 24), 0, "a commit names no iovecs");
    }
}
