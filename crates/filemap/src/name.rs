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
/// A name may have up to [`Name::MAX_LEN`] (32,766) UTF-16 code units, prefix included:
/// the longest that Windows' `UNICODE_STRING` holds. Windows itself does not refuse a longer
/// name but silently cuts it to that length, so that two different long names would open
/// the same object; filemap refuses it with [`Error::NameTooLong`] on every platform. (A
/// code unit is one character for most text; a character outside the Basic Multilingual
/// Plane, such as an emoji, takes two.) On Windows the kernel may refuse a name a few dozen
/// units shorter than the limit, once it has expanded `Local\` or `Global\` to its object
/// directory; that is `NameTooLong` too.
///
/// # File names on Linux
///
/// The part after the prefix is percent-encoded into one file name: ASCII letters, digits,
/// `-`, `_` and `.` stay as they are, except a `.` in first position; every other byte is
/// written `%XX` in upper-case hex. `Local\Sample Map` is stored as `Sample%20Map`,
/// `Local\a/b` as `a%2Fb`, `Local\..` as `%2E.`. The encoding is one-to-one, so listings
/// show the original names, and no name can become `.`, `..` or a hidden file.
///
/// A name whose encoding is longer than [`Name::MAX_ENCODED_LEN`] (255 bytes, Linux's
/// `NAME_MAX`) gets a *hashed* file name instead: the encoding of the name's first
/// characters (up to 160 bytes of it), then `~`, then 40 characters of lower-case base32
/// of `SHA-256("filemap long name v1" NUL base)`. The percent-encoding never writes `~`, so
/// the two forms cannot meet. The object's record keeps the whole name, and every open,
/// `info`, `ls`, `rm` and `gc` reads it from there and refuses a file whose stored name is
/// not the one asked for. A plain ASCII name of up to 255 characters is never hashed.
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
    /// The longest encoded file name, in bytes (Linux's `NAME_MAX`). Longer names get a
    /// hashed file name (see "File names on Linux").
    pub const MAX_ENCODED_LEN: usize = 255;

    /// The longest name, prefix included, in UTF-16 code units: what a Windows
    /// `UNICODE_STRING` holds (0xfffc bytes).
    pub const MAX_LEN: usize = 32766;

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
        // Counted as Windows gets it: the full name, with the prefix of a bare name added.
        let len = scope.prefix().len() + base.encode_utf16().count();
        if len > Self::MAX_LEN {
            return Err(Error::NameTooLong {
                name: name.to_owned(),
                len,
                max: Self::MAX_LEN,
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

    /// The file name that stands for this name on Linux (see the type's documentation):
    /// percent-encoded, or hashed if that would be longer than [`Name::MAX_ENCODED_LEN`].
    pub fn file_name(&self) -> String {
        if encoded_len(&self.base) <= Self::MAX_ENCODED_LEN {
            return encode(&self.base);
        }
        // The longest run of whole characters whose encoding fits in the readable part.
        let mut cut = 0;
        for (i, c) in self.base.char_indices() {
            if encoded_len(&self.base[..i + c.len_utf8()]) > HASHED_PREFIX_LEN {
                break;
            }
            cut = i + c.len_utf8();
        }
        let digest = crate::sha256::digest(&[b"filemap long name v1\0", self.base.as_bytes()]);
        let mut out = encode(&self.base[..cut]);
        out.push('~');
        out.push_str(&base32(&digest, HASH_CHARS));
        out
    }

    /// Whether this name's file name is hashed, so that its object's record keeps the
    /// whole name.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn is_hashed(&self) -> bool {
        encoded_len(&self.base) > Self::MAX_ENCODED_LEN
    }

    /// Whether `file_name` has the form of a hashed file name: the name it stands for is
    /// then in the object's record (see "File names on Linux").
    pub fn is_hashed_file_name(file_name: &str) -> bool {
        let Some((prefix, hash)) = file_name.rsplit_once('~') else {
            return false;
        };
        hash.len() == HASH_CHARS
            && hash.bytes().all(|b| BASE32.contains(&b))
            && (prefix.is_empty() || decode(prefix).is_some_and(|p| encode(&p) == prefix))
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
        out.push_str(&base32(&digest, Self::SHORT_NAME_LEN - out.len()));
        out
    }

    /// The inverse of [`Name::file_name`]: the name that a file in a namespace directory
    /// stands for, or `None` if the file name is not one that filemap makes. A hashed file
    /// name (see [`Name::is_hashed_file_name`]) gives `None` too: its name is in the file.
    pub fn from_file_name(scope: Scope, file_name: &str) -> Option<Name> {
        let base = decode(file_name)?;
        let name = Name::parse(&format!("{}{base}", scope.prefix())).ok()?;
        // Only the canonical encoding is ours: `%41` for `A` is somebody else's file.
        (name.file_name() == file_name).then_some(name)
    }
}

/// The readable part of a hashed file name is at most this long, in bytes.
const HASHED_PREFIX_LEN: usize = 160;
/// The number of base32 characters of the hash in a hashed file name (200 bits).
const HASH_CHARS: usize = 40;

/// The percent-encoding of `base` (see "File names on Linux").
fn encode(base: &str) -> String {
    let mut out = String::with_capacity(base.len());
    for (i, &b) in base.as_bytes().iter().enumerate() {
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

/// The text that a percent-encoded file name stands for, if it is valid UTF-8 written with
/// filemap's alphabet (canonical or not).
fn decode(file_name: &str) -> Option<String> {
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
    String::from_utf8(out).ok()
}

/// `chars` characters of lower-case base32 from the leading bits of `bytes`, most
/// significant first.
fn base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    let (mut acc, mut bits) = (0u32, 0);
    let mut bytes = bytes.iter();
    while out.len() < chars {
        if bits < 5 {
            acc = (acc << 8) | u32::from(bytes.next().copied().unwrap_or(0));
            bits += 8;
        }
        bits -= 5;
        out.push(BASE32[((acc >> bits) & 31) as usize] as char);
    }
    out
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
        // The limit counts UTF-16 code units of the whole name, as Windows does.
        let max = Name::MAX_LEN;
        assert!(Name::parse(&format!("Local\\{}", "x".repeat(max - 6))).is_ok());
        assert!(Name::parse(&format!("Global\\{}", "x".repeat(max - 7))).is_ok());
        // A bare name counts the Local\ that it stands for.
        assert!(Name::parse(&"x".repeat(max - 6)).is_ok());
        for (long, len) in [
            (format!("Local\\{}", "x".repeat(max - 5)), max + 1),
            ("x".repeat(max - 5), max + 1),
            ("x".repeat(40_000), 40_006),
            // Outside the BMP: two code units each.
            ("😀".repeat(max / 2), 6 + max / 2 * 2),
        ] {
            match Name::parse(&long) {
                Err(e @ Error::NameTooLong { .. }) => {
                    let Error::NameTooLong { len: l, max: m, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!((*l, *m), (len, max));
                    // The message shows the start of the name only.
                    let msg = e.to_string();
                    assert!(msg.len() < 250, "{msg}");
                    assert!(msg.ends_with(&format!(
                        "…' is too long: {len} UTF-16 code units, the limit is {max}"
                    )));
                }
                other => panic!("{other:?}"),
            }
        }
        // Three-byte characters: one code unit each.
        assert!(Name::parse(&"é".repeat(max - 6)).is_ok());
    }

    #[test]
    fn long_names_get_hashed_file_names() {
        let plain = Name::parse(&"x".repeat(255)).unwrap();
        assert_eq!(plain.file_name(), "x".repeat(255));
        assert!(!plain.is_hashed());
        for base in [
            "x".repeat(256),
            "é".repeat(43), // 43 * 2 * 3 = 258 encoded bytes
            format!(".{}", "y".repeat(1000)),
            "z".repeat(Name::MAX_LEN - 6),
        ] {
            let name = Name::parse(&base).unwrap();
            assert!(name.is_hashed());
            let file = name.file_name();
            assert!(file.len() <= Name::MAX_ENCODED_LEN, "{}", file.len());
            assert!(!file.starts_with('.') && !file.contains('/'), "{file}");
            assert!(Name::is_hashed_file_name(&file), "{file}");
            assert_eq!(Name::from_file_name(Scope::Local, &file), None);
            // The readable part is the start of the name.
            let (prefix, _) = file.rsplit_once('~').unwrap();
            assert!(encode(&base).starts_with(prefix));
            assert!(prefix.len() <= HASHED_PREFIX_LEN && prefix.len() > 100);
        }
        // Names that share their first thousand characters still differ.
        let a = Name::parse(&format!("{}a", "s".repeat(1000))).unwrap();
        let b = Name::parse(&format!("{}b", "s".repeat(1000))).unwrap();
        assert_ne!(a.file_name(), b.file_name());
        // Pinned, as Python computes it:
        //   base64.b32encode(hashlib.sha256(b"filemap long name v1\0" + b"x" * 256)
        //                    .digest()).decode().lower()[:40]
        assert_eq!(
            Name::parse(&"x".repeat(256)).unwrap().file_name(),
            format!(
                "{}~fmbtyiggdzypug72dfp3lqmwugw3quud3tbi6pcg",
                "x".repeat(160)
            )
        );
        // Plain names are never taken for hashed ones, nor are near misses.
        for f in [
            "SampleMap",
            "a%7Eb",
            "x~short",
            "~",
            "%zz~aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(!Name::is_hashed_file_name(f), "{f}");
        }
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
