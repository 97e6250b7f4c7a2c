//! One request from a ring entry to `VolumeFs`, and its reply back into the entry: the
//! in-header and the opcode's fixed arguments come in the header area, a write's data and
//! a lookup's name in the payload; the reply's fixed part and data go into the payload,
//! its out-header into the header area (as the kernel's `fuse_uring_commit` reads it).
//! Any opcode not listed is answered ENOSYS, as `/dev/fuse` servers answer one they lack.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::UNIX_EPOCH;

use fuser::{Errno, FileAttr, FileType, INodeNo};
use tracing::error;

use super::abi::{self, Attr, InHeader, Out, u32_at, u64_at};
use crate::daemon::fuse_file::{TTL, VolumeFs};

/// Serves the request in `header` / `payload` and writes its reply there.
pub fn serve(fs: &VolumeFs, header: &mut [u8], payload: &mut [u8]) {
    let h = InHeader::parse(header);
    let in_len = (u32_at(header, abi::ENT_PAYLOAD_SZ) as usize).min(payload.len());
    let op: [u8; 128] = header[abi::OP_IN..abi::OP_IN + 128]
        .try_into()
        .unwrap_or([0; 128]);
    // A fault in one request must not end the queue: the kernel would wait for it forever.
    let answer = catch_unwind(AssertUnwindSafe(|| answer(fs, &h, &op, payload, in_len)))
        .unwrap_or_else(|_| {
            error!("FUSE ring: opcode {} failed; answered EIO", h.opcode);
            Err(Errno::EIO)
        });
    match answer {
        Ok(len) => abi::put_out_header(header, 0, h.unique, len),
        Err(e) => abi::put_out_header(header, -e.code(), h.unique, 0),
    }
}

/// The reply's payload length, or the error to answer.
fn answer(
    fs: &VolumeFs,
    h: &InHeader,
    op: &[u8; 128],
    payload: &mut [u8],
    in_len: usize,
) -> Result<usize, Errno> {
    let ino = INodeNo(h.nodeid);
    match h.opcode {
        abi::LOOKUP => {
            let name = &payload[..in_len];
            let name = name.strip_suffix(&[0]).unwrap_or(name);
            let a = fs.lookup_file(ino, name)?;
            // struct fuse_entry_out: nodeid, generation, entry_valid, attr_valid,
            // entry_valid_nsec, attr_valid_nsec, attr.
            let mut o = Out::new(payload);
            o.u64(a.ino.0).u64(0).u64(TTL.as_secs()).u64(TTL.as_secs());
            o.u32(0).u32(0);
            wire_attr(&a).put(&mut o);
            Ok(o.len)
        }
        abi::GETATTR => attr_out(payload, fs.getattr_of(ino)?),
        abi::SETATTR => {
            // struct fuse_setattr_in: valid u32, padding u32, fh u64, size u64, ...
            let size = (u32_at(op, 0) & abi::FATTR_SIZE != 0).then(|| u64_at(op, 16));
            attr_out(payload, fs.setattr_of(ino, size)?)
        }
        abi::OPEN => {
            let flags = fs.open_flags(ino)?;
            // struct fuse_open_out: fh, open_flags, backing_id.
            let mut o = Out::new(payload);
            o.u64(0).u32(flags.bits()).u32(0);
            Ok(o.len)
        }
        abi::OPENDIR => {
            let mut o = Out::new(payload);
            o.u64(0).u32(0).u32(0);
            Ok(o.len)
        }
        abi::READ => {
            // struct fuse_read_in: fh, offset, size, ...
            let (offset, size) = (u64_at(op, 8), u32_at(op, 16) as usize);
            let size = size.min(payload.len());
            fs.read_into(ino, offset, &mut payload[..size])
        }
        abi::WRITE => {
            // struct fuse_write_in: fh, offset, size, write_flags, lock_owner, flags.
            let (offset, size, flags) = (u64_at(op, 8), u32_at(op, 16) as usize, u32_at(op, 32));
            if size > in_len {
                return Err(Errno::EINVAL);
            }
            let n = fs.write_consuming(ino, offset, &mut payload[..size], flags as i32)?;
            // struct fuse_write_out: size, padding.
            let mut o = Out::new(payload);
            o.u32(n).u32(0);
            Ok(o.len)
        }
        abi::FSYNC => fs.fsync_all().map(|()| 0),
        abi::FALLOCATE => {
            // struct fuse_fallocate_in: fh, offset, length, mode.
            let (offset, length, mode) = (u64_at(op, 8), u64_at(op, 16), u32_at(op, 24));
            fs.fallocate_range(ino, offset, length, mode as i32)
                .map(|()| 0)
        }
        abi::READDIR => {
            // struct fuse_read_in: fh, offset, size.
            let (offset, size) = (u64_at(op, 8), u32_at(op, 16) as usize);
            let entries = fs.dir_entries(ino, offset)?;
            let mut o = Out::new(payload);
            for (ino, next, kind, name) in entries {
                // struct fuse_dirent: ino, off, namelen, type, name, padded to 8 bytes.
                let len = (24 + name.len()).div_ceil(8) * 8;
                if o.len + len > size {
                    break;
                }
                let dtype = if kind == FileType::Directory {
                    libc::DT_DIR
                } else {
                    libc::DT_REG
                };
                o.u64(ino.0)
                    .u64(next)
                    .u32(name.len() as u32)
                    .u32(dtype as u32);
                o.bytes(name.as_bytes()).pad8();
            }
            Ok(o.len)
        }
        abi::STATFS => {
            let (blocks, free, bsize) = fs.statfs_of();
            // struct fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen,
            // frsize, padding, spare[6].
            let mut o = Out::new(payload);
            o.u64(blocks).u64(free).u64(free).u64(2).u64(0);
            o.u32(bsize).u32(255).u32(bsize).u32(0);
            for _ in 0..6 {
                o.u32(0);
            }
            Ok(o.len)
        }
        abi::RELEASE | abi::RELEASEDIR | abi::FLUSH | abi::ACCESS | abi::DESTROY => Ok(0),
        _ => Err(Errno::ENOSYS),
    }
}

/// struct fuse_attr_out: attr_valid, attr_valid_nsec, dummy, attr.
fn attr_out(payload: &mut [u8], a: FileAttr) -> Result<usize, Errno> {
    let mut o = Out::new(payload);
    o.u64(TTL.as_secs()).u32(0).u32(0);
    wire_attr(&a).put(&mut o);
    Ok(o.len)
}

fn wire_attr(a: &FileAttr) -> Attr {
    let type_bits = if a.kind == FileType::Directory {
        libc::S_IFDIR
    } else {
        libc::S_IFREG
    };
    let t = a.mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    Attr {
        ino: a.ino.0,
        size: a.size,
        blocks: a.blocks,
        time: (t.as_secs(), t.subsec_nanos()),
        mode: type_bits | u32::from(a.perm),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        blksize: a.blksize,
    }
}
