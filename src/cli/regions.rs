//! The command line's side of re-encrypting transfers (`snapshot::transfer`): its
//! [`Config`] names the regions, opens their pools and KMS, and shows a progress bar.

use indicatif::{ProgressBar, ProgressStyle};

use super::Config;
use super::exit::CliError;
use crate::aws::Region;
use crate::daemon::catalog;
use crate::datadir::RegionDir;
use crate::kms::KeyBackend;
use crate::snapshot::catalog::Catalog;
use crate::snapshot::transfer::{Meter, Regions};
use crate::sys::clock::Clock;
use crate::volume::VolumeError;

impl Regions for Config {
    type Error = CliError;

    fn here(&self) -> &Region {
        &self.region
    }

    fn dir(&self, r: &Region) -> RegionDir {
        self.for_region(r).region_dir()
    }

    fn catalog(&self, dir: &RegionDir) -> Result<Box<dyn Catalog>, VolumeError> {
        catalog::open(dir)
    }

    fn kms(&self, r: &Region) -> Result<Box<dyn KeyBackend>, CliError> {
        self.for_region(r).volume_kms()
    }

    fn kms_for(
        &self,
        r: &Region,
        h: &crate::volume::VolumeHeader,
    ) -> Result<Box<dyn KeyBackend>, CliError> {
        self.for_region(r).volume_kms_for(h)
    }

    fn clock(&self) -> Clock {
        self.clock
    }

    fn progress(&self, total: u64, what: &str) -> Option<Box<dyn Meter>> {
        if !self.show_progress() {
            return None;
        }
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Some(Box::new(Bar(pb)))
    }
}

/// A copy's progress on the terminal.
struct Bar(ProgressBar);

impl Meter for Bar {
    fn add(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
