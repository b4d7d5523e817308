//! Object names: `Local\NAME`, `Global\NAME` or a bare `NAME`, and their file names.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The namespace a name lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `Local\`: on Linux, private to the current user (one namespace per user, not per
    /// session). On Windows, the session namespace.
    Local,
    /// `Global\`: one namespace for the whole machine.
    Global,
}

impl Scope {
    /// The prefix as written in names, with its backslash.
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Local => "Local\\",
            Scope::Global => "Global\\",
        }
    }
}

/// A validated object name.
///
/// # Grammar
///
/// - `Local\NAME` or `Global\NAME` choose the namespace; a bare `NAME` means `Local\NAME`.
///   The prefixes are case-sensitive, as is the rest of the name.
/// - After the prefix, any character except `\` and NUL is allowed, including `/`, spaces,
///   dots and non-ASCII text. The part after the prefix must not be empty.
/// - Any other backslash (`Session\1\x`, `a\b`) is an error.
///
/// # Length
///
/// On Linux the part after the prefix becomes a file name (see below) of at most
/// [`Name::MAX_ENCODED_LEN`] (255) bytes. ASCII letters, digits, `-`, `_` and `.` take one
/// byte each; every other byte of the name's UTF-8 form takes three. So a name of up to 255
/// plain ASCII characters always fits. On Windows the whole name is limited to `MAX_PATH`
/// (260) characters by the kernel.
///
/// # File names on Linux
///
/// The part after the prefix is percent-encoded into one file name: ASCII letters, digits,
/// `-`, `_` and `.` stay as they are, except a `.` in first position; every other byte is
/// written `%XX` in upper-case hex. `Local\Sample Map` is stored as `Sample%20Map`,
/// `Local\a/b` as `a%2Fb`, `Local\..` as `%2E.`. The encoding is one-to-one, so listings
/// show the original names, and no name can become `.`, `..` or a hidden file.
///
/// # Short names, for 31-character limits
///
/// macOS limits POSIX shared-memory names to 31 bytes (`PSHMNAMLEN`), counting the leading
/// `/`. [`Name::short_name`] maps every name, long or short, to a 30-byte name of that form:
/// `/fm`, then `l` for `Local\` or `g` for `Global\`, then 26 characters of lower-case
/// base32 (RFC 4648 alphabet `a`–`z`, `2`–`7`), which are the first 130 bits of
/// `SHA-256("filemap short name v1" NUL scope uid NUL base)`:
///
/// - *scope* is the byte `L` or `G`;
/// - *uid* is the user id in decimal for `Local\` (which is per user on Unix, while macOS's
///   shared-memory names are machine-wide), and empty for `Global\`;
/// - *base* is the part of the name after the prefix, in UTF-8.
///
/// Every name is hashed, even a short one, so there is one rule and a hashed name can never
/// be mistaken for a literal one. The scheme is collision-safe in two ways: 130 bits of
/// SHA-256 make an accidental collision unlikely beyond practical concern (about 2^-65
/// among 2^32 names) and a deliberate one infeasible; and the object's record keeps the
/// full name, so a backend that finds another full name behind the short one refuses the
/// object instead of sharing it. The scheme is fixed by the `v1` in the hashed text and by
/// a test vector; other languages can compute it with a SHA-256 library.
///
/// macOS has no filemap backend yet (see the README); the scheme is defined, tested and
/// public so that the backend and programs in other languages agree on it.
///
/// # Printing
///
/// Names may contain control characters, as on Windows, and another user may choose them.
/// `Display` (and so every message of filemap) escapes them, so that a name can never
/// write escape sequences to a terminal or break a line: `Global\a\u{1b}[2J` prints as
/// `Global\a\u{1b}[2J`, literally. The same goes for the characters that reorder text
/// (bidirectional controls). [`Name::full`] gives the name exactly, for programs and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name {
    scope: Scope,
    base: String,
}

impl Name {
    /// The longest encoded file name, in bytes (Linux's `NAME_MAX`).
    pub const MAX_ENCODED_LEN: usize = 255;

    /// Parses and validates a name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty name, an unknown prefix, a backslash or NUL
    /// after the prefix; [`Error::NameTooLong`] past the length limit.
    pub fn parse(name: &str) -> Result<Name> {
        let invalid = |reason| {
            Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return invalid("the name is empty");
        }
        let (scope, base) = if let Some(rest) = name.strip_prefix("Local\\") {
            (Scope::Local, rest)
        } else if let Some(rest) = name.strip_prefix("Global\\") {
            (Scope::Global, rest)
        } else if name.contains('\\') {
            return invalid("the only prefixes are Local\\ and Global\\");
        } else {
            (Scope::Local, name)
        };
        if base.is_empty() {
            return invalid("nothing follows the prefix");
        }
        if base.contains('\\') {
            return invalid("a backslash is only allowed after Local or Global");
        }
        if base.contains('\0') {
            return invalid("the name contains a NUL character");
        }
        let len = encoded_len(base);
        if len > Self::MAX_ENCODED_LEN {
            return Err(Error::NameTooLong {
                name: name.to_owned(),
                len,
                max: Self::MAX_ENCODED_LEN,
            });
        }
        Ok(Name {
            scope,
            base: base.to_owned(),
        })
    }

    /// The namespace.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The part after the prefix.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The whole name, prefix included, exactly as it is: control characters are not
    /// escaped, unlike in `Display`.
    pub fn full(&self) -> String {
        format!("{}{}", self.scope.prefix(), self.base)
    }

    /// `text` with the characters that `Display` escapes in names escaped the same way,
    /// for printing other text that someone else may have chosen (a path in a namespace
    /// directory, say).
    pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
        escaped(text)
    }

    /// The file name that stands for this name on Linux (see the type's documentation).
    pub fn file_name(&self) -> String {
        let mut out = String::with_capacity(self.base.len());
        for (i, &b) in self.base.as_bytes().iter().enumerate() {
            if is_plain(b) && !(i == 0 && b == b'.') {
                out.push(b as char);
            } else {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
        out
    }

    /// The length of every [`Name::short_name`], in bytes: within macOS's 31-byte limit.
    pub const SHORT_NAME_LEN: usize = 30;

    /// The short POSIX shared-memory name that stands for this name for user `uid` (see
    /// "Short names" in the type's documentation). `uid` only matters for `Local\` names.
    ///
    /// ```
    /// let name = filemap::Name::parse("Global\\SampleMap").unwrap();
    /// assert_eq!(name.short_name(0), "/fmg3xaok3dh4bjmhczpfnnmpb5gq7");
    /// ```
    pub fn short_name(&self, uid: u32) -> String {
        let uid = match self.scope {
            Scope::Local => uid.to_string(),
            Scope::Global => String::new(),
        };
        let scope: &[u8] = match self.scope {
            Scope::Local => b"L",
            Scope::Global => b"G",
        };
        let digest = crate::sha256::digest(&[
            b"filemap short name v1\0",
            scope,
            uid.as_bytes(),
            b"\0",
            self.base.as_bytes(),
        ]);
        let mut out = String::with_capacity(Self::SHORT_NAME_LEN);
        out.push_str(match self.scope {
            Scope::Local => "/fml",
            Scope::Global => "/fmg",
        });
        // 26 base32 characters from the digest's leading bits, most significant first.
        let mut acc: u32 = 0;
        let mut bits = 0;
        let mut bytes = digest.iter();
        while out.len() < Self::SHORT_NAME_LEN {
            if bits < 5 {
                let next = bytes.next().copied().unwrap_or(0);
                acc = (acc << 8) | u32::from(next);
                bits += 8;
            }
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
        out
    }

    /// The inverse of [`Name::file_name`]: the name that a file in a namespace directory
    /// stands for, or `None` if the file name is not one that filemap makes.
    pub fn from_file_name(scope: Scope, file_name: &str) -> Option<Name> {
        let bytes = file_name.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            } else if is_plain(b) && !(i == 0 && b == b'.') {
                out.push(b);
                i += 1;
            } else {
                return None;
            }
        }
        let base = String::from_utf8(out).ok()?;
        let name = Name::parse(&format!("{}{base}", scope.prefix())).ok()?;
        // Only the canonical encoding is ours: `%41` for `A` is somebody else's file.
        (name.file_name() == file_name).then_some(name)
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn encoded_len(base: &str) -> usize {
    base.bytes()
        .enumerate()
        .map(|(i, b)| {
            if is_plain(b) && !(i == 0 && b == b'.') {
                1
            } else {
                3
            }
        })
        .sum()
}

/// Whether a character must not reach a terminal as it is: control characters (C0, DEL,
/// C1) and the invisible characters that reorder text.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unprintable character escaped as Rust writes it (`\n`, `\u{1b}`).
pub(crate) fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(unprintable) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

impl fmt::Display for Name {
    /// The name with control characters escaped (see "Printing").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.scope.prefix(), escaped(&self.base))
    }
}

impl FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Name> {
        Name::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_what_a_terminal_would_obey() {
        let n = Name::parse("Global\\a\u{1b}[2J\nb\u{202e}c\u{7f}\u{9b}d é").unwrap();
        assert_eq!(
            n.to_string(),
            "Global\\a\\u{1b}[2J\\nb\\u{202e}c\\u{7f}\\u{9b}d é"
        );
        assert_eq!(n.full(), "Global\\a\u{1b}[2J\nb\u{202e}c\u{7f}\u{9b}d é");
        assert_eq!(
            Name::parse("Local\\plain name").unwrap().to_string(),
            "Local\\plain name"
        );
    }

    #[test]
    fn prefixes() {
        let n = Name::parse("Local\\SampleMap").unwrap();
        assert_eq!((n.scope(), n.base()), (Scope::Local, "SampleMap"));
        let n = Name::parse("Global\\x").unwrap();
        assert_eq!((n.scope(), n.base()), (Scope::Global, "x"));
        let n = Name::parse("bare").unwrap();
        assert_eq!(n.to_string(), "Local\\bare");
        // Prefixes are case-sensitive: `local\x` is not a prefix but a stray backslash.
        assert!(matches!(
            Name::parse("local\\x"),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn bad_names() {
        for (bad, reason) in [
            ("", "the name is empty"),
            ("Local\\", "nothing follows the prefix"),
            ("Global\\", "nothing follows the prefix"),
            (
                "Local\\a\\b",
                "a backslash is only allowed after Local or Global",
            ),
            (
                "Session\\1\\x",
                "the only prefixes are Local\\ and Global\\",
            ),
            ("a\0b", "the name contains a NUL character"),
        ] {
            match Name::parse(bad) {
                Err(Error::InvalidName { reason: r, .. }) => assert_eq!(r, reason, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let long = "x".repeat(256);
        assert!(matches!(
            Name::parse(&long),
            Err(Error::NameTooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
        assert!(Name::parse(&"x".repeat(255)).is_ok());
        // 86 two-byte characters need 86 * 2 * 3 = 516 encoded bytes.
        assert!(matches!(
            Name::parse(&"é".repeat(86)),
            Err(Error::NameTooLong { .. })
        ));
    }

    /// The scheme is pinned: these values come from Python's `hashlib` and `base64` with
    /// the recipe in the documentation, so a change to the scheme fails here.
    #[test]
    fn short_names_are_pinned() {
        for (name, uid, want) in [
            ("Global\\SampleMap", 0, "/fmg3xaok3dh4bjmhczpfnnmpb5gq7"),
            ("Global\\SampleMap", 1000, "/fmg3xaok3dh4bjmhczpfnnmpb5gq7"),
            ("Local\\SampleMap", 0, "/fmlsrui7ojms66vieamtl3alqxjmb"),
            ("SampleMap", 1000, "/fml34gpw62bonxnbiww2tz57zsfol"),
            ("Local\\ünïcødé ☃", 501, "/fml3zrvzhydmtdcnvxsmffggnpx7k"),
        ] {
            assert_eq!(Name::parse(name).unwrap().short_name(uid), want, "{name}");
        }
    }

    /// Short names fit macOS's limit and are distinct across scopes, users and many names,
    /// including names that differ only past the 31st character.
    #[test]
    fn short_names_fit_and_differ() {
        let mut seen = std::collections::HashSet::new();
        let long = "x".repeat(250);
        for i in 0..20_000u32 {
            for (scope, uid) in [("Local\\", 0), ("Local\\", 1), ("Global\\", 0)] {
                let name = Name::parse(&format!("{scope}{long}{i}")).unwrap();
                let short = name.short_name(uid);
                assert_eq!(short.len(), Name::SHORT_NAME_LEN);
                assert!(short.len() <= 31);
                assert!(short.starts_with(if scope == "Global\\" { "/fmg" } else { "/fml" }));
                assert!(short[4..]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
                assert!(seen.insert(short), "{name} collides");
            }
        }
        // Only a Local name depends on the user.
        let global = Name::parse("Global\\g").unwrap();
        assert_eq!(global.short_name(0), global.short_name(7));
        let local = Name::parse("Local\\g").unwrap();
        assert_ne!(local.short_name(0), local.short_name(7));
        // The longest names are hashed like any other.
        let longest = Name::parse(&"é".repeat(42)).unwrap();
        assert_eq!(longest.short_name(0).len(), Name::SHORT_NAME_LEN);
    }

    #[test]
    fn file_names_round_trip() {
        for base in [
            "SampleMap",
            "a/b",
            ".",
            "..",
            ".hidden",
            "a.b",
            "100%",
            "sp ace",
            "ünïcødé ☃",
            "tab\there",
            "%41",
        ] {
            for scope in [Scope::Local, Scope::Global] {
                let name = Name::parse(&format!("{}{base}", scope.prefix())).unwrap();
                let file = name.file_name();
                assert!(!file.contains('/') && !file.starts_with('.'), "{file}");
                assert!(file.len() <= Name::MAX_ENCODED_LEN);
                assert_eq!(Name::from_file_name(scope, &file), Some(name), "{base:?}");
            }
        }
        assert_eq!(Name::parse("a/b").unwrap().file_name(), "a%2Fb");
        assert_eq!(Name::parse("..").unwrap().file_name(), "%2E.");
        // Files that filemap would never make are not names.
        for foreign in ["%41", "a b", ".x", "%zz", "%4", "a%2f"] {
            assert_eq!(
                Name::from_file_name(Scope::Local, foreign),
                None,
                "{foreign}"
            );
        }
    }
}
