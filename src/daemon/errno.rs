//! The one place where errors become errno values for the kernel.

use fuser::Errno;

use crate::volume::VolumeError;

pub fn of(e: &VolumeError) -> Errno {
    Errno::from_i32(e.errno())
}
