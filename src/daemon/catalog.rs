//! Opening a region's pool catalog ([`Catalog`], the trait, is the snapshot layer's):
//! [`PoolOwner`] when this process owns the pool (the CLI when no daemon runs, or the
//! daemon itself), [`Client`] when the region daemon owns it. [`open`] picks the right one.

use std::time::{Duration, Instant};

use super::client::Client;
use super::owner::PoolOwner;
use crate::datadir::RegionDir;
use crate::snapshot::catalog::Catalog;
use crate::volume::Pool;
use crate::volume::error::{Result, VolumeError};

/// The pool of `region`: through its daemon when one runs, else owned by this process.
/// A daemon that is starting or stopping holds the pool for a moment: retry for a few
/// seconds before giving up.
pub fn open(region: &RegionDir) -> Result<Box<dyn Catalog>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = Client::connect(region) {
            return Ok(Box::new(c));
        }
        match Pool::open(region) {
            Ok(p) => {
                return Ok(Box::new(PoolOwner::with_fetcher(
                    std::sync::Arc::new(p),
                    region.region.clone(),
                    super::fetcher::for_region(region)?,
                )));
            }
            Err(VolumeError::PoolBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}
