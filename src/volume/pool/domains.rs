//! Tweak domains of plain volumes' slots. A volume restored from a snapshot shares the data
//! key of its source (and its slots, until it writes them), so it writes in its own tweak
//! domain (`integrity::domain_of`): two volumes then never encrypt different data under the
//! same key and tweak. Each slot is in one domain, the one of the volume that filled it; an
//! authenticated slot's record carries it, and a plain slot in a domain other than 0 has a
//! `slot_domain` row, written in the commit that maps the slot (in the same change as its
//! map row, `Pool::remap`) and removed in the one that frees it. A plain slot without a row
//! is in domain 0.

use std::collections::HashMap;

use redb::ReadableDatabase;

use super::{Pool, read_table};
use crate::volume::error::Result;
use crate::volume::tables::{MAPS, SLOT_DOMAIN};

impl Pool {
    /// The domain of every chunk a plain `owner` maps whose slot is not in domain 0
    /// (committed state). An authenticated owner's domains are in its slot records.
    pub fn load_domains(&self, owner: &str, shift: u8) -> Result<HashMap<u64, u64>> {
        let r = self.db()?.begin_read()?;
        let maps = r.open_table(MAPS)?;
        let Some(domains) = read_table(&r, SLOT_DOMAIN)? else {
            return Ok(HashMap::new());
        };
        let mut out = HashMap::new();
        for item in maps.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            if let Some(d) = domains.get((shift, v.value()))? {
                out.insert(k.value().1, d.value());
            }
        }
        Ok(out)
    }
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
