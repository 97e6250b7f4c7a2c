//! The portable XTS backend: tweaks computed with scalar 128-bit arithmetic, blocks encrypted
//! in batches by the `aes` crate (which picks AES-NI, VAES, ARMv8 AES or its constant-time
//! software AES at run time). Used wherever `x86.rs` cannot run, and tested everywhere.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes256, Aes256Enc, Block};

use super::{BLOCK, Direction, mul_alpha};

/// Blocks per batch handed to the `aes` crate: its widest backend (VAES-512) works on 64
/// blocks at a time. The tweak copies live on the stack (1 KiB), never on the heap.
const BATCH: usize = 64;

/// Both key schedules. The `aes` types zeroize themselves on drop (its `zeroize` feature).
#[derive(Clone)]
pub(super) struct Engine {
    data: Aes256,
    tweak: Aes256Enc,
}

impl Engine {
    pub(super) fn new(k1: &[u8; 32], k2: &[u8; 32]) -> Engine {
        Engine {
            data: Aes256::new(&Array(*k1)),
            tweak: Aes256Enc::new(&Array(*k2)),
        }
    }

    pub(super) fn crypt(&self, dir: Direction, first_unit: u128, buf: &mut [u8], unit_len: usize) {
        for (i, unit) in buf.chunks_exact_mut(unit_len).enumerate() {
            let mut t = Block::from((first_unit + i as u128).to_le_bytes());
            self.tweak.encrypt_block(&mut t);
            let mut tweak = u128::from_le_bytes(t.0);

            let (blocks, rest) = Array::slice_as_chunks_mut(unit);
            debug_assert!(rest.is_empty(), "units are whole {BLOCK}-byte blocks");
            for batch in blocks.chunks_mut(BATCH) {
                let mut tweaks = [0u128; BATCH];
                for (block, saved) in batch.iter_mut().zip(tweaks.iter_mut()) {
                    *saved = tweak;
                    xor_block(block, tweak);
                    tweak = mul_alpha(tweak);
                }
                match dir {
                    Direction::Encrypt => self.data.encrypt_blocks(batch),
                    Direction::Decrypt => self.data.decrypt_blocks(batch),
                }
                for (block, saved) in batch.iter_mut().zip(tweaks.iter()) {
                    xor_block(block, *saved);
                }
            }
        }
    }
}

#[inline(always)]
fn xor_block(block: &mut Block, tweak: u128) {
    block.0 = (u128::from_le_bytes(block.0) ^ tweak).to_le_bytes();
}
