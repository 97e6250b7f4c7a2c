//! `/proc/self/mountinfo`: the mounts this process sees, one line each (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
//! ```
//!
//! mount id, parent id, major:minor, root, mount point, per-mount options, zero or more
//! optional fields, the separator `-`, filesystem type, source, super options. Fields are
//! separated by one space; the kernel writes a space, tab, newline or backslash inside a
//! field as a backslash and three octal digits (`\040`, `\011`, `\012`, `\134`), and every
//! other byte as it is, so a path need not be UTF-8. This is the only parser of the file.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

pub const PATH: &str = "/proc/self/mountinfo";

/// One mount, its text fields decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of the device (`0:52` for FUSE, tmpfs…).
    pub dev: String,
    /// The directory of the filesystem that is mounted here (`/` unless a bind mount of a
    /// subdirectory).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev`).
    pub options: String,
    /// Optional fields before the separator (`shared:1`, `master:2`…).
    pub optional: Vec<String>,
    /// `ext4`, `tmpfs`, `fuse`, `fuse.NAME`…
    pub fs_type: String,
    /// What was mounted: `/dev/loop3`, `tmpfs`, or a FUSE filesystem's name.
    pub source: OsString,
    pub super_options: String,
}

impl MountEntry {
    /// The source as text, if it is UTF-8.
    pub fn source_str(&self) -> Option<&str> {
        self.source.to_str()
    }
}

/// Reverses the kernel's escaping: `\ooo` (three octal digits, at most `\377`) is that
/// byte; any other backslash is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(&[a, b, c]) = field.get(i + 1..i + 4)
            && (b'0'..=b'3').contains(&a)
            && (b'0'..=b'7').contains(&b)
            && (b'0'..=b'7').contains(&c)
        {
            out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn number(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// One line; `None` if it does not have the shape above.
fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let f: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    // The separator is the first lone `-` after the six fixed fields (an escaped field
    // never is one: spaces inside fields are `\040`).
    let sep = 6 + f.get(6..)?.iter().position(|x| *x == b"-")?;
    // Later kernels may add fields at the end: take the first three.
    let [fs_type, source, super_options] = f.get(sep + 1..sep + 4)? else {
        return None;
    };
    Some(MountEntry {
        mount_id: number(f[0])?,
        parent_id: number(f[1])?,
        dev: text(f[2]),
        root: path(f[3]),
        mount_point: path(f[4]),
        options: text(f[5]),
        optional: f[6..sep].iter().map(|o| text(o)).collect(),
        fs_type: text(fs_type),
        source: OsString::from_vec(unescape(source)),
        super_options: text(super_options),
    })
}

/// Every well-formed line of a mountinfo text, in the kernel's order (a mount stacked on
/// another comes after it). Malformed lines are skipped.
pub fn parse(text: impl AsRef<[u8]>) -> Vec<MountEntry> {
    text.as_ref()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// The mounts this process sees now.
pub fn read() -> io::Result<Vec<MountEntry>> {
    std::fs::read(PATH).map(parse)
}

/// The mount that `dir` shows, among `entries`: the last (topmost) one at that path.
pub fn find_in(entries: &[MountEntry], dir: &Path) -> Option<MountEntry> {
    entries.iter().rev().find(|m| m.mount_point == dir).cloned()
}

/// The mount at `dir` (compared as given: pass a canonical path), if `dir` is a mount
/// point; `None` also when mountinfo cannot be read.
pub fn find(dir: &Path) -> Option<MountEntry> {
    find_in(&read().ok()?, dir)
}

/// Whether `dir` is a mount point (see [`find`]).
pub fn is_mount_point(dir: &Path) -> bool {
    find(dir).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
36 22 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 22 0:52 / /tmp/a\\040b rw,nosuid,nodev,noexec,relatime - fuse cryptvol:local-1/vol-0123456789abcdef0 rw,user_id=0,group_id=0
41 22 0:53 / /tmp/tab\\011here rw - fuse.cryptvol cryptvol:vol-0123456789abcdef0 rw
42 22 0:54 / /tmp/new\\012line rw shared:7 master:3 propagate_from:2 unbindable - tmpfs tmp\\040fs rw,size=1024k
43 22 7:3 /sub\\134dir /tmp/back\\134slash rw - ext4 /dev/loop3 rw
";

    fn at<'a>(all: &'a [MountEntry], dir: &str) -> &'a MountEntry {
        all.iter()
            .find(|m| m.mount_point == Path::new(dir))
            .unwrap_or_else(|| panic!("no mount at {dir:?} in {all:#?}"))
    }

    #[test]
    fn fixed_fields() {
        let all = parse(SAMPLE);
        assert_eq!(all.len(), 6, "{all:#?}");
        let m = at(&all, "/mnt2");
        assert_eq!((m.mount_id, m.parent_id), (36, 22));
        assert_eq!(m.dev, "98:0");
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.options, "rw,noatime");
        assert_eq!(m.optional, vec!["master:1"]);
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert_eq!(at(&all, "/").source_str(), Some("/dev/sda1"));
    }

    #[test]
    fn a_space_in_the_mount_point() {
        let all = parse(SAMPLE);
        let m = at(&all, "/tmp/a b");
        assert_eq!(m.fs_type, "fuse");
        assert_eq!(
            m.source_str(),
            Some("cryptvol:local-1/vol-0123456789abcdef0")
        );
        assert_eq!(m.super_options, "rw,user_id=0,group_id=0");
        assert!(m.optional.is_empty());
        assert!(find_in(&all, Path::new("/tmp/a")).is_none());
        assert!(find_in(&all, Path::new("/tmp/a\\040b")).is_none());
    }

    #[test]
    fn a_tab_and_a_newline_in_the_mount_point() {
        let all = parse(SAMPLE);
        assert_eq!(at(&all, "/tmp/tab\there").fs_type, "fuse.cryptvol");
        let m = at(&all, "/tmp/new\nline");
        assert_eq!(m.fs_type, "tmpfs");
        assert_eq!(m.source, "tmp fs");
    }

    #[test]
    fn a_backslash_in_the_root_and_the_mount_point() {
        let all = parse(SAMPLE);
        let m = at(&all, "/tmp/back\\slash");
        assert_eq!(m.root, Path::new("/sub\\dir"));
        assert_eq!(m.source, "/dev/loop3");
    }

    #[test]
    fn optional_fields_before_the_separator() {
        let all = parse(SAMPLE);
        let m = at(&all, "/tmp/new\nline");
        assert_eq!(
            m.optional,
            vec!["shared:7", "master:3", "propagate_from:2", "unbindable"]
        );
        assert_eq!(m.super_options, "rw,size=1024k");
        // A mount point spelled `-` is not taken for the separator.
        let all = parse("50 22 0:60 / /- rw shared:9 - tmpfs tmpfs rw\n");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].mount_point, Path::new("/-"));
        assert_eq!(all[0].optional, vec!["shared:9"]);
        assert_eq!(all[0].fs_type, "tmpfs");
    }

    #[test]
    fn mount_points_need_not_be_utf8() {
        let all = parse(b"60 22 0:61 / /tmp/caf\xe9\\040x rw - tmpfs tmpfs rw\n");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].mount_point.as_os_str().as_bytes(), b"/tmp/caf\xe9 x");
    }

    #[test]
    fn escapes_are_decoded_and_other_backslashes_kept() {
        assert_eq!(unescape(br"a\040b\011c\012d\134e"), b"a b\tc\nd\\e");
        assert_eq!(unescape(br"\0"), br"\0");
        assert_eq!(unescape(br"x\08y"), br"x\08y");
        assert_eq!(unescape(br"\400"), br"\400");
        assert_eq!(unescape(br"end\"), br"end\");
        assert_eq!(unescape(br"\\040"), b"\\ ");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "garbage\n\n1 2 3 4 5 6 - fuse\nx 22 0:1 / /a rw - tmpfs t rw\n\
                    70 22 0:70 / /ok rw - tmpfs t rw\n";
        let all = parse(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(all[0].mount_point, Path::new("/ok"));
    }

    #[test]
    fn the_topmost_mount_wins() {
        let all =
            parse("80 22 0:80 / /m rw - fuse cryptvol:vol-1 rw\n81 80 0:81 / /m rw - tmpfs t rw\n");
        assert_eq!(find_in(&all, Path::new("/m")).unwrap().mount_id, 81);
    }

    #[test]
    fn this_process_sees_its_root() {
        let all = read().expect("read /proc/self/mountinfo");
        assert!(all.iter().any(|m| m.mount_point == Path::new("/")));
        assert!(is_mount_point(Path::new("/")));
    }
}
