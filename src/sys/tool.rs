//! Running an external tool (util-linux, e2fsprogs, xfsprogs) as a user would: its stderr
//! becomes the error message.

use std::process::Command;

/// A tool that could not be run or that failed; `message` is its stderr.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{tool}: {message}")]
pub struct ToolError {
    pub tool: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, ToolError>;

/// Runs a system tool; its stderr is the error.
pub fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| ToolError {
            tool: tool.to_string(),
            message: format!("cannot run it ({e}); install util-linux / e2fsprogs / xfsprogs"),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        return Err(ToolError {
            tool: format!("{tool} {}", args.join(" ")),
            message: if err.is_empty() {
                format!("exited with {}", out.status)
            } else {
                err
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
