//! The MAC keys of a region's audit chain, one per *key epoch*.
//!
//! Epoch 0 is the key the region was made with (derived from its first root key). Each
//! root-key rotation adds a random successor, sealed in the keystore under the new root, so
//! that whoever learns an old root key cannot write events the chain accepts after the
//! rotation. A line names its epoch (`"keyEpoch":E`, absent for 0); epochs never go back
//! along the chain, and a writer always writes under the newest epoch it knows or that the
//! log has reached, whichever is newer.

use crate::crypto::Key256;

/// Epoch `i`'s key at index `i`; never empty.
#[derive(Clone)]
pub struct ChainKeys(Vec<Key256>);

impl std::fmt::Debug for ChainKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKeys(epochs 0..={})", self.latest_epoch())
    }
}

impl ChainKeys {
    /// Epoch 0's key, then its successors in order.
    pub fn new(first: Key256, successors: impl IntoIterator<Item = Key256>) -> ChainKeys {
        let mut keys = vec![first];
        keys.extend(successors);
        ChainKeys(keys)
    }

    /// A region that was never rotated: one epoch.
    pub fn single(key: Key256) -> ChainKeys {
        ChainKeys(vec![key])
    }

    pub fn latest_epoch(&self) -> u32 {
        (self.0.len() - 1) as u32
    }

    pub fn get(&self, epoch: u32) -> Option<&Key256> {
        self.0.get(epoch as usize)
    }
}
