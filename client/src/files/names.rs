//! Which names a received file may be written under: a sender names a file,
//! the receiver decides whether that name is safe, and never overwrites.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::body::MAX_FILE_NAME_LEN;

/// Why a sender's file name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The name is empty.
    Empty,
    /// `.` or `..`.
    Dots,
    /// It holds `/` or `\`: a path (absolute, or climbing with `../`), not a name.
    Separator,
    /// It holds NUL.
    Nul,
    /// It holds a control character (an escape sequence for the terminal).
    Control,
    /// Over 255 bytes.
    TooLong,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Empty => "the name is empty",
            Refusal::Dots => "the name is . or ..",
            Refusal::Separator => "the name is a path (it holds / or \\)",
            Refusal::Nul => "the name holds NUL",
            Refusal::Control => "the name holds control characters",
            Refusal::TooLong => "the name is longer than 255 bytes",
        })
    }
}

/// Checks a file name a sender gave: it must be one plain name, to be written
/// in the receiver's folder and nowhere else.
pub fn check(name: &str) -> Result<&str, Refusal> {
    if name.is_empty() {
        return Err(Refusal::Empty);
    }
    if name == "." || name == ".." {
        return Err(Refusal::Dots);
    }
    if name.contains(['/', '\\']) {
        return Err(Refusal::Separator);
    }
    if name.contains('\0') {
        return Err(Refusal::Nul);
    }
    if name.chars().any(char::is_control) {
        return Err(Refusal::Control);
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(Refusal::TooLong);
    }
    Ok(name)
}

/// The `n`th alternative to `name` when it is taken: `report (1).pdf`,
/// `report (2).pdf`, ...; `archive.tar.gz` keeps its whole extension.
pub fn with_suffix(name: &str, n: u32) -> String {
    // A leading dot is part of the stem (".bashrc" has no extension).
    let split = name[1..].find('.').map(|i| i + 1);
    match split {
        Some(i) => format!("{} ({n}){}", &name[..i], &name[i..]),
        None => format!("{name} ({n})"),
    }
}

/// Moves the finished temporary file `tmp` to `dir/name`, or to the first of
/// `name (1)`, `name (2)`, ... that does not exist. Never overwrites: a hard
/// link fails when its target exists, so two receivers racing for one name
/// both keep their file.
pub fn place(tmp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            name.to_string()
        } else {
            with_suffix(name, n)
        };
        let target = dir.join(candidate);
        match std::fs::hard_link(tmp, &target) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                return Ok(target);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{name} and 9,999 suffixed names exist"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_refused() {
        assert_eq!(check("../etc/passwd"), Err(Refusal::Separator));
        assert_eq!(check("/etc/passwd"), Err(Refusal::Separator));
        assert_eq!(check("a/b"), Err(Refusal::Separator));
        assert_eq!(check("..\\x"), Err(Refusal::Separator));
        assert_eq!(check(".."), Err(Refusal::Dots));
        assert_eq!(check("."), Err(Refusal::Dots));
        assert_eq!(check(""), Err(Refusal::Empty));
        assert_eq!(check("a\0b"), Err(Refusal::Nul));
        assert_eq!(check("a\x1b[31mb"), Err(Refusal::Control));
        assert_eq!(check(&"x".repeat(256)), Err(Refusal::TooLong));
        assert_eq!(check("..hidden"), Ok("..hidden"));
        assert_eq!(check("report 2026.pdf"), Ok("report 2026.pdf"));
    }

    #[test]
    fn suffixes_keep_the_extension() {
        assert_eq!(with_suffix("report.pdf", 1), "report (1).pdf");
        assert_eq!(with_suffix("a.tar.gz", 2), "a (2).tar.gz");
        assert_eq!(with_suffix("README", 1), "README (1)");
        assert_eq!(with_suffix(".bashrc", 1), ".bashrc (1)");
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.txt"), b"old").unwrap();
        std::fs::write(dir.path().join("f (1).txt"), b"old 1").unwrap();
        let tmp = dir.path().join(".part");
        std::fs::write(&tmp, b"new").unwrap();
        let placed = place(&tmp, dir.path(), "f.txt").unwrap();
        assert_eq!(placed, dir.path().join("f (2).txt"));
        assert_eq!(std::fs::read(dir.path().join("f.txt")).unwrap(), b"old");
        assert_eq!(
            std::fs::read(dir.path().join("f (1).txt")).unwrap(),
            b"old 1"
        );
        assert_eq!(std::fs::read(&placed).unwrap(), b"new");
        assert!(!tmp.exists());
    }
}
