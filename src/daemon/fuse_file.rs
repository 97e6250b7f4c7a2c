//! A FUSE filesystem whose root holds one file, `volume`, of the volume's size: reads
//! decrypt, writes encrypt, fsync commits, fallocate punch-hole and zero-range discard.
//! Requests run on several threads; the volume's own striped locks keep them apart.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
pub(super) const TTL: Duration = Duration::from_secs(1);
/// Largest request the kernel sends (it caps FUSE requests at 1 MiB anyway).
pub const MAX_IO: u32 = 1 << 20;

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone)]
pub struct VolumeFs {
    vol: Arc<OpenVolume>,
    /// Ask the kernel for FUSE over io_uring at INIT (`fuse_ring` then serves requests).
    /// Shared by every clone, so that the attach can take the request back when the ring's
    /// queues fail to start before fuser answers INIT.
    pub(super) ring: Arc<AtomicBool>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

impl VolumeFs {
    pub fn new(vol: Arc<OpenVolume>) -> Self {
        VolumeFs {
            vol,
            ring: Arc::new(AtomicBool::new(false)),
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
    /// LOOKUP: the one name in the root.
    pub(super) fn lookup_file(&self, parent: INodeNo, name: &[u8]) -> Result<FileAttr, Errno> {
        if parent == ROOT && name == FILE_NAME.as_bytes() {
            Ok(self.attr(FILE))
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// GETATTR.
    pub(super) fn getattr_of(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        match ino {
            ROOT | FILE => Ok(self.attr(ino)),
            _ => Err(Errno::ENOENT),
        }
    }

    /// SETATTR: the size is the volume's: change it with `cryptvol volume resize`, never by
    /// truncate (which would silently lose or invent data); other changes are ignored.
    pub(super) fn setattr_of(&self, ino: INodeNo, size: Option<u64>) -> Result<FileAttr, Errno> {
        if let Some(s) = size
            && (ino != FILE || s != self.vol.size())
        {
            return Err(Errno::EPERM);
        }
        self.getattr_of(ino)
    }

    /// OPEN: no page cache in front of us (the loop device or the application above has
    /// its own), and writers in parallel instead of queued on the inode lock.
    pub(super) fn open_flags(&self, ino: INodeNo) -> Result<FopenFlags, Errno> {
        if ino != FILE {
            return Err(Errno::EISDIR);
        }
        Ok(FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES)
    }

    /// READ into `buf` (at most its length); returns the bytes read, fewer at the end.
    pub(super) fn read_into(
        &self,
        ino: INodeNo,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        if ino != FILE {
            return Err(Errno::EISDIR);
        }
        let end = offset.saturating_add(buf.len() as u64).min(self.vol.size());
        let len = end.saturating_sub(offset) as usize;
        self.vol.read(offset, &mut buf[..len]).map_err(|e| {
            warn!("read {offset}+{len}: {e}");
            errno::of(&e)
        })?;
        Ok(len)
    }

    /// WRITE; `open_flags` are the file's: opened O_SYNC/O_DSYNC, each write is durable
    /// before it is acknowledged.
    pub(super) fn write_at(
        &self,
        ino: INodeNo,
        offset: u64,
        data: &[u8],
        open_flags: i32,
    ) -> Result<u32, Errno> {
        self.write_with(ino, offset, data.len(), open_flags, |v| {
            v.write(offset, data)
        })
    }

    /// WRITE from a buffer the caller is done with (a ring entry's payload): whole blocks
    /// are encrypted in it, without a copy (`OpenVolume::write_consuming`).
    pub(super) fn write_consuming(
        &self,
        ino: INodeNo,
        offset: u64,
        data: &mut [u8],
        open_flags: i32,
    ) -> Result<u32, Errno> {
        let len = data.len();
        self.write_with(ino, offset, len, open_flags, |v| {
            v.write_consuming(offset, data)
        })
    }

    fn write_with(
        &self,
        ino: INodeNo,
        offset: u64,
        len: usize,
        open_flags: i32,
        write: impl FnOnce(&OpenVolume) -> crate::volume::error::Result<()>,
    ) -> Result<u32, Errno> {
        if ino != FILE {
            return Err(Errno::EISDIR);
        }
        let sync = open_flags & (libc::O_SYNC | libc::O_DSYNC) != 0;
        write(&self.vol)
            .and_then(|()| if sync { self.vol.fsync() } else { Ok(()) })
            .map_err(|e| {
                warn!("write {offset}+{len}: {e}");
                errno::of(&e)
            })?;
        Ok(len as u32)
    }

    /// FSYNC: commits everything written so far.
    pub(super) fn fsync_all(&self) -> Result<(), Errno> {
        self.vol.fsync().map_err(|e| {
            warn!("fsync: {e}");
            errno::of(&e)
        })
    }

    /// FALLOCATE: punch-hole and zero-range discard; plain allocation only refuses growth.
    pub(super) fn fallocate_range(
        &self,
        ino: INodeNo,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        if ino != FILE {
            return Err(Errno::EISDIR);
        }
        let size = self.vol.size();
        debug!("fallocate mode {mode:#x} {offset}+{length}");
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
            // Both leave zeros; neither may grow the file.
            let end = offset.saturating_add(length).min(size);
            if offset >= end {
                return Ok(());
            }
            self.vol
                .discard(offset, end - offset)
                .map_err(|e| errno::of(&e))
        } else if mode & !FALLOC_FL_KEEP_SIZE == 0 {
            // Thin volumes allocate on write.
            if offset.saturating_add(length) > size && mode & FALLOC_FL_KEEP_SIZE == 0 {
                return Err(Errno::EFBIG);
            }
            Ok(())
        } else {
            Err(Errno::EOPNOTSUPP)
        }
    }

    /// READDIR from `offset`: the root's three entries (inode, next offset, type, name).
    pub(super) fn dir_entries(
        &self,
        ino: INodeNo,
        offset: u64,
    ) -> Result<Vec<(INodeNo, u64, FileType, &'static str)>, Errno> {
        if ino != ROOT {
            return Err(Errno::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| (*ino, (i + 1) as u64, *kind, *name))
            .collect())
    }

    /// STATFS: (blocks, free, block size).
    pub(super) fn statfs_of(&self) -> (u64, u64, u32) {
        let blocks = self.vol.size() / BLOCK_SIZE;
        let used = self.vol.allocated_bytes() / BLOCK_SIZE;
        (blocks, blocks.saturating_sub(used), BLOCK_SIZE as u32)
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
        // Requests over io_uring queues (`fuse_ring`), where the kernel offers them.
        if self.ring.load(Ordering::SeqCst)
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_err()
        {
            debug!("the kernel does not offer FUSE over io_uring");
        }
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_file(parent, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
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
        match self.setattr_of(ino, size) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_flags(ino) {
            Ok(f) => reply.opened(FileHandle(0), f),
            Err(e) => reply.error(e),
        }
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
        READ_BUF.with(|b| {
            let mut b = b.borrow_mut();
            let want = (size as usize).min(MAX_IO as usize);
            if b.len() < want {
                b.resize(want, 0);
            }
            match self.read_into(ino, offset, &mut b[..want]) {
                Ok(n) => reply.data(&b[..n]),
                Err(e) => reply.error(e),
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
        match self.write_at(ino, offset, data, flags.0) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
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
        match self.fsync_all() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
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
        match self.fallocate_range(ino, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
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
        match self.dir_entries(ino, offset) {
            Ok(entries) => {
                for (ino, next, kind, name) in entries {
                    if reply.add(ino, next, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, bsize) = self.statfs_of();
        reply.statfs(blocks, free, free, 2, 0, bsize, 255, bsize);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}
