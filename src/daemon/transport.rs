//! Which FUSE transport serves a mount: `auto` (the default) asks the kernel for FUSE over
//! io_uring where it has it (Linux 6.14+, turning the `fuse` module's `enable_uring` switch
//! on as root) and falls back to `/dev/fuse`; `uring` insists on the ring and refuses the
//! attach where there is none; `classic` serves through `/dev/fuse` only and leaves the
//! kernel's switch alone. Chosen per attach (`--fuse-transport`, or
//! `CRYPTVOL_FUSE_TRANSPORT` in the command's environment), so one daemon can serve mounts
//! of both kinds.

use super::fuse_ring;
use crate::volume::VolumeError;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum FuseTransport {
    /// io_uring where the kernel offers it, else `/dev/fuse`
    #[default]
    Auto,
    /// io_uring queues, or the attach is refused
    Uring,
    /// `/dev/fuse` only
    Classic,
}

impl FuseTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            FuseTransport::Auto => "auto",
            FuseTransport::Uring => "uring",
            FuseTransport::Classic => "classic",
        }
    }

    /// Whether a mount asks the kernel for ring queues at INIT. `Uring` on a kernel that
    /// cannot offer them is refused before anything is mounted.
    pub(super) fn wants_ring(self) -> Result<bool, VolumeError> {
        match self {
            FuseTransport::Classic => Ok(false),
            FuseTransport::Auto => Ok(fuse_ring::enable() && fuse_ring::can_create_rings()),
            FuseTransport::Uring if !fuse_ring::enable() => Err(Self::no_ring(format!(
                "this kernel has no FUSE over io_uring ({} is missing or cannot be turned on: Linux 6.14+ and root)",
                fuse_ring::ENABLE_KNOB
            ))),
            FuseTransport::Uring if !fuse_ring::can_create_rings() => Err(Self::no_ring(
                "io_uring is refused to the daemon (a seccomp filter, or kernel.io_uring_disabled)"
                    .into(),
            )),
            FuseTransport::Uring => Ok(true),
        }
    }

    /// The refusal of `--fuse-transport uring` when the ring cannot serve.
    pub(super) fn no_ring(why: String) -> VolumeError {
        VolumeError::Unsupported {
            what: "--fuse-transport uring".into(),
            why,
            hint: "use --fuse-transport auto (the default) or classic".into(),
        }
    }
}

/// Parses `--fuse-transport` and `CRYPTVOL_FUSE_TRANSPORT`: one of the three names, or an
/// empty value (`CRYPTVOL_FUSE_TRANSPORT=` in a script) meaning the default, as an unset
/// variable does.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransportParser;

impl clap::builder::TypedValueParser for TransportParser {
    type Value = FuseTransport;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<FuseTransport, clap::Error> {
        if value.is_empty() {
            return Ok(FuseTransport::default());
        }
        clap::builder::EnumValueParser::<FuseTransport>::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        use clap::ValueEnum;
        Some(Box::new(
            FuseTransport::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value()),
        ))
    }
}
