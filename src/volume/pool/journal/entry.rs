//! One tag journal entry: its bytes (docs/formats.md, "Tag journal") and their parsing.
//!
//! Two layouts, told apart by the magic. Version 1 (`CVTAGJ01`, written before blocks
//! rode in entries) holds records, roots and the generation of a commit whose data files
//! were synced first. Version 2 (`CVTAGJ02`, the only one written now) adds a flag saying
//! whether the data files were synced before the entry, and the blocks written (or
//! punched) since the journal last covered them: an entry that carries them stands for
//! the data sync it saves, and replay writes them back.

/// Version 1: records, roots, generation; data synced before it.
pub(super) const MAGIC_V1: &[u8; 8] = b"CVTAGJ01";
/// Version 2: a flags byte and the blocks after the roots.
pub(super) const MAGIC: &[u8; 8] = b"CVTAGJ02";
/// magic, sequence number, payload length, 4 zero bytes, blake3 of the rest.
pub(super) const HEAD: usize = 8 + 8 + 4 + 4 + 32;
/// Entries start on page boundaries: a torn write damages one entry only.
pub(super) const PAGE: u64 = 4096;
/// Flags bit 0: the data files were synced before this entry was written (it carries no
/// blocks, and the blocks of the entries before it are on disk where they were written).
const DATA_SYNCED: u8 = 1;
/// Replay writes a block no further than this into a data file: an entry whose checksum
/// holds but which points past it is damage, not something to write out.
const MAX_DATA_OFFSET: u64 = 1 << 52;
/// Chunk sizes a pool knows (2^12 to 2^30 bytes).
const SHIFTS: std::ops::RangeInclusive<u8> = 12..=30;

/// One journal entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::volume::pool) struct Entry {
    pub(in crate::volume::pool) seq: u64,
    pub(in crate::volume::pool) generation: Option<u64>,
    pub(in crate::volume::pool) records: Vec<((u8, u64), Vec<u8>)>,
    pub(in crate::volume::pool) roots: Vec<(String, Vec<u8>)>,
    /// The data files were synced before the entry (version 1 entries all were).
    pub(in crate::volume::pool) data_synced: bool,
    /// What was written or punched in the data files since the journal last covered them
    /// (empty when `data_synced`).
    pub(in crate::volume::pool) blocks: Vec<Block>,
}

/// A range of one data file as an entry carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::volume::pool) struct Block {
    pub(in crate::volume::pool) shift: u8,
    /// 0: the data file, 1: its alternate file (second halves).
    pub(in crate::volume::pool) half: u8,
    pub(in crate::volume::pool) off: u64,
    /// The range's bytes, or `Punched(len)`: a hole.
    pub(in crate::volume::pool) content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::volume::pool) enum Content {
    Bytes(Vec<u8>),
    Punched(u64),
}

impl Block {
    pub(in crate::volume::pool) fn len(&self) -> u64 {
        match &self.content {
            Content::Bytes(b) => b.len() as u64,
            Content::Punched(n) => *n,
        }
    }
}

impl Entry {
    /// The head, then the payload (generation, flags, records, roots, blocks), zero-padded
    /// to whole pages.
    pub(in crate::volume::pool) fn encode(&self, pool: u64) -> Vec<u8> {
        // One buffer, head first (filled in once the payload's length and checksum are
        // known): an entry is some 200 KB for fio's 32 writes, not worth a second copy.
        let size = 8
            + 1
            + 4
            + self
                .records
                .iter()
                .map(|(_, b)| 13 + b.len())
                .sum::<usize>()
            + 4
            + self
                .roots
                .iter()
                .map(|(o, b)| 6 + o.len() + b.len())
                .sum::<usize>()
            + 4
            + self
                .blocks
                .iter()
                .map(|b| {
                    19 + match &b.content {
                        Content::Bytes(v) => v.len(),
                        Content::Punched(_) => 0,
                    }
                })
                .sum::<usize>();
        let mut out = Vec::with_capacity(padded(HEAD + size) as usize);
        out.resize(HEAD, 0);
        out.extend_from_slice(&self.generation.unwrap_or(0).to_le_bytes());
        out.push(if self.data_synced { DATA_SYNCED } else { 0 });
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for ((shift, slot), bytes) in &self.records {
            out.push(*shift);
            out.extend_from_slice(&slot.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&(self.roots.len() as u32).to_le_bytes());
        for (owner, bytes) in &self.roots {
            out.extend_from_slice(&(owner.len() as u16).to_le_bytes());
            out.extend_from_slice(owner.as_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for b in &self.blocks {
            out.push(b.shift);
            out.push(b.half);
            out.push(matches!(b.content, Content::Punched(_)) as u8);
            out.extend_from_slice(&b.off.to_le_bytes());
            out.extend_from_slice(&b.len().to_le_bytes());
            if let Content::Bytes(v) = &b.content {
                out.extend_from_slice(v);
            }
        }
        let len = out.len() - HEAD;
        let (head, payload) = out.split_at_mut(HEAD);
        head[..8].copy_from_slice(MAGIC);
        head[8..16].copy_from_slice(&self.seq.to_le_bytes());
        head[16..20].copy_from_slice(&(len as u32).to_le_bytes());
        let sum = checksum(&head[..24], pool, payload);
        head[24..].copy_from_slice(&sum);
        out.resize(padded(out.len()) as usize, 0);
        out
    }

    /// Parses a payload whose checksum held; `v2` from the head's magic.
    pub(super) fn decode_payload(
        seq: u64,
        v2: bool,
        p: &[u8],
    ) -> std::result::Result<Entry, String> {
        let mut r = Reader { b: p, at: 0 };
        let generation = Some(r.u64()?).filter(|g| *g != 0);
        let flags = if v2 { r.take(1)?[0] } else { DATA_SYNCED };
        if flags & !DATA_SYNCED != 0 {
            return Err(format!("unknown flags {flags:#04x}"));
        }
        let n = r.u32()?;
        let mut records = Vec::new();
        for _ in 0..n {
            let shift = r.take(1)?[0];
            let slot = r.u64()?;
            let len = r.u32()? as usize;
            records.push(((shift, slot), r.take(len)?.to_vec()));
        }
        let n = r.u32()?;
        let mut roots = Vec::new();
        for _ in 0..n {
            let len = u16::from_le_bytes(r.take(2)?.try_into().expect("2")) as usize;
            let owner = std::str::from_utf8(r.take(len)?)
                .map_err(|_| "an owner name that is not UTF-8".to_string())?
                .to_string();
            let len = r.u32()? as usize;
            roots.push((owner, r.take(len)?.to_vec()));
        }
        let mut blocks = Vec::new();
        if v2 {
            for _ in 0..r.u32()? {
                let head = r.take(3)?;
                let (shift, half, hole) = (head[0], head[1], head[2]);
                let off = r.u64()?;
                let len = r.u64()?;
                if !SHIFTS.contains(&shift) || half > 1 || hole > 1 {
                    return Err(format!(
                        "a block of chunk size 2^{shift}, half {half}, kind {hole}"
                    ));
                }
                if off.checked_add(len).is_none_or(|end| end > MAX_DATA_OFFSET) {
                    return Err(format!("a block at byte {off} of {len} bytes"));
                }
                let content = if hole == 1 {
                    Content::Punched(len)
                } else {
                    let len = usize::try_from(len).map_err(|_| "a block too large".to_string())?;
                    Content::Bytes(r.take(len)?.to_vec())
                };
                blocks.push(Block {
                    shift,
                    half,
                    off,
                    content,
                });
            }
        }
        if r.at != p.len() {
            return Err(format!("{} bytes after its last field", p.len() - r.at));
        }
        let data_synced = flags & DATA_SYNCED != 0;
        if data_synced && !blocks.is_empty() {
            return Err("blocks in an entry whose data was synced".to_string());
        }
        Ok(Entry {
            seq,
            generation,
            records,
            roots,
            data_synced,
            blocks,
        })
    }
}

pub(super) fn padded(n: usize) -> u64 {
    (n as u64).div_ceil(PAGE) * PAGE
}

pub(super) fn checksum(head: &[u8], pool: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(&pool.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("it ends at byte {} inside a field", self.b.len()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}
