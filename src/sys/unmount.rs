//! Unmounting a FUSE mount point: umount2(2) directly as root, fusermount3 (setuid) for
//! everyone else, as libfuse does.

use std::path::Path;

use nix::mount::MntFlags;

use super::tool::ToolError;

#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// Something still uses the mount (EBUSY); `lazy` would detach it anyway.
    #[error("the mount is busy")]
    Busy,
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("cannot unmount: {0}")]
    Io(#[from] std::io::Error),
}

/// Unmounts a FUSE mount point: directly as root, through fusermount3 otherwise. A busy
/// mount is an error unless `lazy` (then it disappears now and dies when unused).
pub fn unmount(dir: &Path, lazy: bool) -> Result<(), UnmountError> {
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match nix::mount::umount2(dir, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let mut cmd = std::process::Command::new("fusermount3");
            cmd.arg("-u").arg("-q");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd.arg(dir).output().map_err(|e| ToolError {
                tool: format!("fusermount3 -u {}", dir.display()),
                message: format!("cannot run it ({e}); install fuse3"),
            })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(UnmountError::Tool(ToolError {
                    tool: format!("fusermount3 -u {}", dir.display()),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                }))
            }
        }
        Err(nix::errno::Errno::EBUSY) => Err(UnmountError::Busy),
        Err(e) => Err(UnmountError::Io(e.into())),
    }
}

/// Ends the FUSE connection of the mount whose device was `dev` (`major:minor`, as in
/// mountinfo) through the fusectl filesystem, as `echo 1 > .../abort` does: what an
/// outside lazy unmount leaves alive while files under it stay open. Their next I/O
/// fails with ENOTCONN. fusectl is mounted first where it is not (root only); the mount's
/// owner may write its connection's `abort`.
pub fn abort_connection(dev: &str) -> std::io::Result<()> {
    const FUSECTL: &str = "/sys/fs/fuse/connections";
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("device {dev}"));
    let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
    let (major, minor): (u32, u32) = (
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    );
    // The kernel names a connection by its device number in its own encoding.
    let dir = Path::new(FUSECTL).join(((major << 20) | minor).to_string());
    if !dir.exists() {
        let _ = nix::mount::mount(
            Some("fusectl"),
            FUSECTL,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    std::fs::write(dir.join("abort"), "1")
}
