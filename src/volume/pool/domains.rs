//! Tweak domains of plain volumes' slots. A volume restored from a snapshot shares the data
//! key of its source (and its slots, until it writes them), so it writes in its own tweak
//! domain (`integrity::domain_of`): two volumes then never encrypt different data under the
//! same key and tweak. Each slot is in one domain, the one of the volume that filled it; an
//! authenticated slot's record carries it, and a plain slot in a domain other than 0 has a
//! `slot_domain` row, written in the commit that maps the slot and removed in the one that
//! frees it. A slot with neither is in domain 0.

use std::collections::HashMap;

use redb::ReadableDatabase;

use super::Pool;
use crate::volume::error::Result;
use crate::volume::ids::SlotNo;
use crate::volume::integrity::SlotRecord;
use crate::volume::tables::{MAPS, SLOT_AUTH, SLOT_DOMAIN};

impl Pool {
    /// The domain of every chunk `owner` maps whose slot is not in domain 0 (from its
    /// `slot_domain` row or its record), committed state.
    pub fn load_domains(&self, owner: &str, shift: u8) -> Result<HashMap<u64, u64>> {
        let r = self.db()?.begin_read()?;
        let maps = r.open_table(MAPS)?;
        let plain = open_optional(&r, SLOT_DOMAIN)?;
        let auth = open_optional(&r, SLOT_AUTH)?;
        let mut out = HashMap::new();
        for item in maps.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            let d = slot_domain(plain.as_ref(), auth.as_ref(), shift, v.value())?;
            if d != 0 {
                out.insert(k.value().1, d);
            }
        }
        Ok(out)
    }

    /// The domain of each slot in `slots` that is not in domain 0.
    pub fn slot_domains(&self, shift: u8, slots: &[SlotNo]) -> Result<HashMap<SlotNo, u64>> {
        let r = self.db()?.begin_read()?;
        let plain = open_optional(&r, SLOT_DOMAIN)?;
        let auth = open_optional(&r, SLOT_AUTH)?;
        let mut out = HashMap::new();
        for s in slots {
            let d = slot_domain(plain.as_ref(), auth.as_ref(), shift, s.0)?;
            if d != 0 {
                out.insert(*s, d);
            }
        }
        Ok(out)
    }
}

fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &redb::ReadTransaction,
    t: redb::TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match r.open_table(t) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn slot_domain(
    plain: Option<&redb::ReadOnlyTable<(u8, u64), u64>>,
    auth: Option<&redb::ReadOnlyTable<(u8, u64), &[u8]>>,
    shift: u8,
    slot: u64,
) -> Result<u64> {
    if let Some(d) = plain.map(|t| t.get((shift, slot))).transpose()?.flatten() {
        return Ok(d.value());
    }
    if let Some(rec) = auth.map(|t| t.get((shift, slot))).transpose()?.flatten() {
        return Ok(SlotRecord::decode(rec.value(), 1 << (shift - 12))?.domain);
    }
    Ok(0)
}

/// Writes the domains of the slots a commit maps: a row for a domain other than 0, and no
/// row for 0 (one left from an earlier life of the slot, which a checker's repair may
/// free without dropping, goes).
pub(super) fn write_domains(
    w: &redb::WriteTransaction,
    domains: &HashMap<(u8, u64), u64>,
) -> Result<()> {
    if domains.is_empty() {
        return Ok(());
    }
    let mut t = w.open_table(SLOT_DOMAIN)?;
    for (k, d) in domains {
        if *d == 0 {
            t.remove(*k)?;
        } else {
            t.insert(*k, *d)?;
        }
    }
    Ok(())
}

/// Forgets the domain of a slot a commit freed.
pub(super) fn drop_domain(w: &redb::WriteTransaction, shift: u8, slot: u64) -> Result<()> {
    w.open_table(SLOT_DOMAIN)?.remove((shift, slot))?;
    Ok(())
}
