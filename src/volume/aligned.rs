//! Page-aligned buffers for O_DIRECT I/O, without `unsafe`: a vector of 4 KiB-aligned
//! pages viewed as bytes through bytemuck.

use bytemuck::{Pod, Zeroable};

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A zeroed buffer of whole 4 KiB pages whose start is 4096-aligned.
pub struct AlignedBuf(Vec<Page>);

impl AlignedBuf {
    /// `len` is rounded up to whole pages.
    pub fn new(len: usize) -> AlignedBuf {
        AlignedBuf(vec![Page([0; 4096]); len.div_ceil(4096)])
    }

    pub fn as_slice(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligned_and_sized() {
        let mut b = super::AlignedBuf::new(10_000);
        assert_eq!(b.as_slice().len(), 12_288);
        assert_eq!(b.as_mut_slice().as_ptr() as usize % 4096, 0);
    }
}
