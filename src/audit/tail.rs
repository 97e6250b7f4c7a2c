//! The end of a log file: its last complete line, read backwards in chunks so a resync costs
//! the same whatever the file's size, and the removal of a torn last line left by a crash.
//! Callers hold the audit lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const CHUNK: u64 = 8 * 1024;

/// Offset just after the last `\n` in `[0, end)`, or 0 if there is none.
fn line_start_before(file: &File, end: u64) -> io::Result<u64> {
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(lo + i as u64 + 1);
        }
        hi = lo;
    }
    Ok(0)
}

/// If the file (of `size` bytes) does not end in `\n`, cuts the torn last line off and
/// returns the new size; otherwise returns `size`.
pub(super) fn cut_torn_line(file: &File, size: u64) -> io::Result<u64> {
    if size == 0 {
        return Ok(0);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, size - 1)?;
    if last[0] == b'\n' {
        return Ok(size);
    }
    let keep = line_start_before(file, size)?;
    file.set_len(keep)?;
    Ok(keep)
}

/// The last line (without its `\n`) of a file of `size` bytes that ends in `\n`.
pub(super) fn last_line(file: &File, size: u64) -> io::Result<Option<Vec<u8>>> {
    if size == 0 {
        return Ok(None);
    }
    let start = line_start_before(file, size - 1)?;
    let mut line = vec![0u8; (size - 1 - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    #[test]
    fn last_line_across_chunks() {
        let long = vec![b'x'; 3 * CHUNK as usize + 17];
        let mut bytes = b"first\n".to_vec();
        bytes.extend_from_slice(&long);
        bytes.push(b'\n');
        let (f, n) = file_with(&bytes);
        assert_eq!(last_line(f.as_file(), n).unwrap().unwrap(), long);
        let (f, n) = file_with(b"only\n");
        assert_eq!(last_line(f.as_file(), n).unwrap().unwrap(), b"only");
        let (f, _) = file_with(b"");
        assert_eq!(last_line(f.as_file(), 0).unwrap(), None);
    }

    #[test]
    fn torn_line_is_cut() {
        let (f, n) = file_with(b"a\nb\npartial");
        assert_eq!(cut_torn_line(f.as_file(), n).unwrap(), 4);
        assert_eq!(std::fs::read(f.path()).unwrap(), b"a\nb\n");
        let (f, n) = file_with(b"partial only");
        assert_eq!(cut_torn_line(f.as_file(), n).unwrap(), 0);
        let (f, n) = file_with(b"whole\n");
        assert_eq!(cut_torn_line(f.as_file(), n).unwrap(), n);
    }
}
