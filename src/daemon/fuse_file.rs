//! A FUSE filesystem whose root holds one file, `volume`, of the volume's size: reads
//! decrypt, writes encrypt, fsync commits, fallocate punch-hole and zero-range discard.
//! Requests run on several threads; the volume's own striped locks keep them apart.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};
use tracing::{debug, warn};

use super::errno;
use crate::volume::{BLOCK_SIZE, OpenVolume};

pub const FILE_NAME: &str = "volume";
const ROOT: INodeNo = INodeNo(1);
const FILE: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);
/// Largest request the kernel sends (it caps FUSE requests at 1 MiB anyway).
pub const MAX_IO: u32 = 1 << 20;

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub struct VolumeFs {
    vol: Arc<OpenVolume>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

impl VolumeFs {
    pub fn new(vol: Arc<OpenVolume>) -> Self {
        VolumeFs {
            vol,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mounted_at: SystemTime::now(),
        }
    }

    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o700, 0, 2)
        } else {
            (FileType::RegularFile, 0o600, self.vol.size(), 1)
        };
        FileAttr {
            ino,
            size,
            blocks: if ino == FILE {
                self.vol.allocated_bytes() / 512
            } else {
                0
            },
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_SIZE as u32,
            flags: 0,
        }
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Async direct I/O lets the loop device's O_DIRECT requests reach us in parallel
        // (3-4x on every fio job through the loop device, docs/benchmarks.md); fuser does
        // not ask for it.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO) {
            warn!("kernel lacks FUSE capabilities {missing:?}");
        }
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == FILE_NAME {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            ROOT | FILE => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The size is the volume's: change it with `cryptvol volume resize`, never by
        // truncate (which would silently lose or invent data).
        if let Some(s) = size
            && (ino != FILE || s != self.vol.size())
        {
            reply.error(Errno::EPERM);
            return;
        }
        reply.attr(&TTL, &self.attr(ino));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        // No page cache in front of us (the loop device or the application above has its
        // own), and writers in parallel instead of queued on the inode lock.
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        let end = offset.saturating_add(size as u64).min(self.vol.size());
        let len = end.saturating_sub(offset) as usize;
        READ_BUF.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < len {
                b.resize(len, 0);
            }
            match self.vol.read(offset, &mut b[..len]) {
                Ok(()) => reply.data(&b[..len]),
                Err(e) => {
                    warn!("read {offset}+{len}: {e}");
                    reply.error(errno::of(&e));
                }
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        // A file opened O_SYNC/O_DSYNC: each write is durable before it is acknowledged.
        let sync = flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0;
        let res = self
            .vol
            .write(offset, data)
            .and_then(|()| if sync { self.vol.fsync() } else { Ok(()) });
        match res {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                warn!("write {offset}+{}: {e}", data.len());
                reply.error(errno::of(&e));
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.vol.fsync() {
            Ok(()) => reply.ok(),
            Err(e) => {
                warn!("fsync: {e}");
                reply.error(errno::of(&e));
            }
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        let size = self.vol.size();
        let res = if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
            // Both leave zeros; neither may grow the file.
            let end = offset.saturating_add(length).min(size);
            if offset >= end {
                Ok(())
            } else {
                self.vol.discard(offset, end - offset)
            }
        } else if mode & !FALLOC_FL_KEEP_SIZE == 0 {
            // Plain allocation: thin volumes allocate on write; only refuse growth.
            if offset.saturating_add(length) > size && mode & FALLOC_FL_KEEP_SIZE == 0 {
                reply.error(Errno::EFBIG);
                return;
            }
            Ok(())
        } else {
            reply.error(Errno::EOPNOTSUPP);
            return;
        };
        debug!("fallocate mode {mode:#x} {offset}+{length}");
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno::of(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.vol.size() / BLOCK_SIZE;
        let used = self.vol.allocated_bytes() / BLOCK_SIZE;
        let free = blocks.saturating_sub(used);
        reply.statfs(
            blocks,
            free,
            free,
            2,
            0,
            BLOCK_SIZE as u32,
            255,
            BLOCK_SIZE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}
