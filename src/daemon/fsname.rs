//! The source ("fsname") of cryptvol's FUSE mounts, as `/proc/self/mountinfo` shows it:
//! `cryptvol:<region>/<volume id>`, so that the mount itself says which region's daemon
//! serves it. Mounts made before the region was part of it say `cryptvol:<volume id>`.
//!
//! A region name is lowercase letters, digits and `-` ([`Region::parse`]) and a volume id
//! `vol-` and hex, so the name holds no `/` but the one separator, and no `,`, space or
//! backslash that mount options or mountinfo would have to escape.

use std::path::Path;

use crate::aws::Region;
use crate::sys::mountinfo;
use crate::volume::VolumeId;

/// Every source of ours starts with this.
pub const PREFIX: &str = "cryptvol:";

/// What a cryptvol mount source says about its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `None` for a mount made by an earlier version (no region in its name), or one
    /// whose region part is not a region name.
    pub region: Option<Region>,
    pub volume: String,
}

/// The source of the mount of `volume` served by `region`'s daemon.
pub fn format(region: &Region, volume: &VolumeId) -> String {
    format!("{PREFIX}{region}/{volume}")
}

/// Parses a mount source; `None` if it is not one of ours.
pub fn parse(source: &str) -> Option<Owner> {
    let rest = source.strip_prefix(PREFIX)?;
    match rest.split_once('/') {
        Some((region, volume)) => Some(Owner {
            region: Region::parse(region).ok(),
            volume: volume.to_string(),
        }),
        None => Some(Owner {
            region: None,
            volume: rest.to_string(),
        }),
    }
}

/// The owner named by the cryptvol FUSE mount at `dir` (live, or dead: left by a killed
/// daemon); `None` if the topmost mount at `dir` is not one of ours. `dir` is compared as
/// given: pass an absolute, canonical path (a dead mount does not canonicalize; pass it
/// absolute).
pub fn owner_at(dir: &Path) -> Option<Owner> {
    let m = mountinfo::find(dir)?;
    // As root fuser mounts type `fuse` (not `fuse.cryptvol`); our mark is the source.
    if !m.fs_type.starts_with("fuse") {
        return None;
    }
    parse(m.source_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_names_region_and_volume() {
        let r = Region::parse("us-east-1").unwrap();
        let v = VolumeId::parse("vol-0123456789abcdef0").unwrap();
        let s = format(&r, &v);
        assert_eq!(s, "cryptvol:us-east-1/vol-0123456789abcdef0");
        assert_eq!(
            parse(&s),
            Some(Owner {
                region: Some(r),
                volume: v.to_string()
            })
        );
    }

    #[test]
    fn an_old_source_has_no_region() {
        assert_eq!(
            parse("cryptvol:vol-0123456789abcdef0"),
            Some(Owner {
                region: None,
                volume: "vol-0123456789abcdef0".into()
            })
        );
        // A region part that is no region name: ours, owner unknown.
        assert_eq!(parse("cryptvol:Bad Region/vol-1").unwrap().region, None);
    }

    #[test]
    fn other_sources_are_not_ours() {
        for s in ["/dev/loop0", "tmpfs", "cryptvolx:vol-1", "fuse", ""] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
