//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::Kind;

/// A specialized [`Result`](std::result::Result) for filemap operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in filemap.
///
/// Every variant carries enough context to print a one-line message that says what is
/// wrong in plain words: `no mapping named Local\SampleMap`, not `ENOENT`.
///
/// The variants follow the Windows error codes that the model defines:
///
/// | Windows                      | filemap                    |
/// |------------------------------|----------------------------|
/// | `ERROR_FILE_NOT_FOUND`       | [`Error::NotFound`]        |
/// | `ERROR_ALREADY_EXISTS`       | [`Error::AlreadyExists`]   |
/// | `ERROR_INVALID_HANDLE`       | [`Error::KindMismatch`]    |
/// | `ERROR_ACCESS_DENIED`        | [`Error::PermissionDenied`]|
/// | `ERROR_INVALID_NAME`         | [`Error::InvalidName`]     |
/// | `ERROR_FILENAME_EXCED_RANGE` | [`Error::NameTooLong`]     |
/// | `WAIT_TIMEOUT`               | [`Error::Timeout`]         |
/// | `ERROR_TOO_MANY_POSTS`       | [`Error::TooManyPosts`]    |
/// | `ERROR_NOT_OWNER`            | [`Error::NotOwner`]        |
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The name does not follow the grammar (`Local\NAME`, `Global\NAME` or `NAME`).
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The name is longer than the limit documented in [`Name`](crate::Name).
    NameTooLong {
        /// The name as given.
        name: String,
        /// Its length in UTF-16 code units, prefix included (a bare name counts `Local\`).
        len: usize,
        /// The limit, [`Name::MAX_LEN`](crate::Name::MAX_LEN).
        max: usize,
    },
    /// No object of this name exists (or the last one was closed by every holder).
    NotFound {
        /// The full name, with its prefix.
        name: String,
        /// The kind that was asked for, if any.
        kind: Option<Kind>,
    },
    /// An exclusive create found a live object of the same kind under this name.
    AlreadyExists {
        /// The full name, with its prefix.
        name: String,
        /// The kind of the existing object.
        kind: Kind,
    },
    /// The name is held by an object of another kind (Windows' `ERROR_INVALID_HANDLE`).
    KindMismatch {
        /// The full name, with its prefix.
        name: String,
        /// The kind that was asked for.
        expected: Kind,
        /// The kind that holds the name.
        found: Kind,
    },
    /// The operating system, the object's permissions or the mapping's protection do not
    /// allow the requested access.
    PermissionDenied {
        /// What was refused, in plain words.
        what: String,
    },
    /// A size of zero, or one that does not fit the address space.
    InvalidSize {
        /// What is wrong with it.
        what: String,
    },
    /// A view or an access that falls outside the mapping or the view.
    OutOfRange {
        /// Offset of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// Size of the mapping or view that it must fit in.
        size: u64,
    },
    /// An atomic access at an offset that is not aligned for its type.
    Unaligned {
        /// The offset, relative to the start of the view.
        offset: u64,
        /// The alignment the type needs.
        align: u64,
    },
    /// An argument other than a name, size or offset is wrong (for example a file mode).
    InvalidArgument {
        /// What is wrong.
        what: String,
    },
    /// A namespace directory or an object file is not what filemap requires (owned by
    /// another user, a symlink, writable by others...). It is never used.
    Insecure {
        /// The path that was refused.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// An object file exists but is damaged or was not made by filemap (bad record, or
    /// truncated by a peer).
    Corrupt {
        /// The path of the object file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// There is not enough space to reserve the object's storage.
    NoSpace {
        /// The full name, or the path, of the object.
        name: String,
        /// The number of bytes that could not be reserved.
        size: u64,
    },
    /// A wait ended because its timeout passed (Windows' `WAIT_TIMEOUT`). A "try" is a wait
    /// with a zero timeout.
    Timeout {
        /// What was waited for.
        what: String,
    },
    /// Releasing a semaphore would pass its maximum count; nothing changed (Windows'
    /// `ERROR_TOO_MANY_POSTS`).
    TooManyPosts {
        /// The semaphore.
        name: String,
        /// Its count when the release was refused.
        count: u32,
        /// Its maximum count.
        max: u32,
        /// How much was to be released.
        release: u32,
    },
    /// Releasing a mutex that this thread does not own (Windows' `ERROR_NOT_OWNER`).
    NotOwner {
        /// The mutex.
        name: String,
    },
    /// A channel's role is taken: it already has a live producer (or consumer). Like
    /// Windows' `ERROR_PIPE_BUSY`.
    Busy {
        /// The channel.
        name: String,
        /// The role asked for: `"producer"` or `"consumer"`.
        role: &'static str,
    },
    /// The other side of a channel is gone, and nothing is left to receive (or no one will
    /// ever receive what would be sent). Like Windows' `ERROR_BROKEN_PIPE`.
    Disconnected {
        /// The channel.
        name: String,
        /// The side that is gone: `"producer"` or `"consumer"`.
        peer: &'static str,
        /// Whether it died (a crash, or `kill -9`) rather than closing the channel.
        died: bool,
    },
    /// A message is larger than the channel allows.
    MessageTooLarge {
        /// The channel.
        name: String,
        /// The message's length in bytes.
        len: usize,
        /// The channel's largest message.
        max: usize,
    },
    /// A channel exists under the name, but not as asked for: another message type or
    /// layout.
    Incompatible {
        /// The channel.
        name: String,
        /// What differs.
        reason: String,
    },
    /// The operation is not available on this platform.
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },
    /// Any other operating-system error, with what filemap was doing.
    Io {
        /// What filemap was doing.
        context: String,
        /// The error from the operating system.
        source: io::Error,
    },
}

impl Error {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    pub(crate) fn denied(what: impl Into<String>) -> Self {
        Error::PermissionDenied { what: what.into() }
    }

    /// The [`io::ErrorKind`] that best matches this error.
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::InvalidName { .. } | Error::NameTooLong { .. } => K::InvalidInput,
            Error::NotFound { .. } => K::NotFound,
            Error::AlreadyExists { .. } => K::AlreadyExists,
            Error::KindMismatch { .. } => K::InvalidInput,
            Error::PermissionDenied { .. } | Error::Insecure { .. } => K::PermissionDenied,
            Error::InvalidSize { .. }
            | Error::OutOfRange { .. }
            | Error::Unaligned { .. }
            | Error::InvalidArgument { .. } => K::InvalidInput,
            Error::Corrupt { .. } => K::InvalidData,
            Error::NoSpace { .. } => K::StorageFull,
            Error::Timeout { .. } => K::TimedOut,
            Error::TooManyPosts { .. } => K::InvalidInput,
            Error::NotOwner { .. } => K::PermissionDenied,
            Error::Busy { .. } => K::ResourceBusy,
            Error::Disconnected { .. } => K::BrokenPipe,
            Error::MessageTooLarge { .. } | Error::Incompatible { .. } => K::InvalidInput,
            Error::Unsupported { .. } => K::Unsupported,
            Error::Io { source, .. } => source.kind(),
        }
    }
}

impl fmt::Display for Error {
    /// One line in plain words. Control characters (from names, paths or records that
    /// someone else chose) are escaped, so a message can neither drive a terminal nor span
    /// two lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::name::escaped(&Raw(self).to_string()))
    }
}

/// The message before escaping.
struct Raw<'a>(&'a Error);

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::InvalidName { name, reason } => {
                write!(f, "invalid name '{name}': {reason}")
            }
            Error::NameTooLong { name, len, max } => {
                // The name itself may be tens of thousands of characters: its start will do.
                let shown = match name.char_indices().nth(40) {
                    Some((i, _)) => format!("{}…", &name[..i]),
                    None => name.clone(),
                };
                write!(
                    f,
                    "name '{shown}' is too long: {len} UTF-16 code units, the limit is {max}"
                )
            }
            Error::NotFound {
                name,
                kind: Some(kind),
            } => write!(f, "no {kind} named {name}"),
            Error::NotFound { name, kind: None } => write!(f, "no object named {name}"),
            Error::AlreadyExists { name, kind } => {
                write!(f, "{} named {name} already exists", kind.with_article())
            }
            Error::KindMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name} is {}, not {}",
                found.with_article(),
                expected.with_article()
            ),
            Error::PermissionDenied { what } => write!(f, "permission denied: {what}"),
            Error::InvalidSize { what } => write!(f, "invalid size: {what}"),
            Error::OutOfRange { offset, len, size } => write!(
                f,
                "range of {len} bytes at offset {offset} does not fit in {size} bytes"
            ),
            Error::Unaligned { offset, align } => {
                write!(f, "offset {offset} is not a multiple of {align}")
            }
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::Insecure { path, reason } => {
                write!(f, "refusing to use {}: {reason}", path.display())
            }
            Error::Corrupt { path, reason } => {
                write!(
                    f,
                    "{} is not a valid filemap object: {reason}",
                    path.display()
                )
            }
            Error::NoSpace { name, size } => {
                write!(f, "not enough space to reserve {size} bytes for {name}")
            }
            Error::Timeout { what } => write!(f, "timed out waiting for {what}"),
            Error::TooManyPosts {
                name,
                count,
                max,
                release,
            } => write!(
                f,
                "releasing {name} by {release} would pass its maximum count of {max} (it is {count}); nothing changed"
            ),
            Error::NotOwner { name } => write!(f, "this thread does not own the mutex {name}"),
            Error::Busy { name, role } => {
                write!(f, "the channel {name} already has a live {role}")
            }
            Error::Disconnected { name, peer, died } => {
                let how = if *died {
                    "died without closing it"
                } else {
                    "closed it"
                };
                write!(f, "the {peer} of the channel {name} {how}")
            }
            Error::MessageTooLarge { name, len, max } => write!(
                f,
                "a message of {len} bytes is larger than the channel {name} allows ({max} bytes)"
            ),
            Error::Incompatible { name, reason } => {
                write!(f, "the channel {name} is not the one asked for: {reason}")
            }
            Error::Unsupported { what } => write!(f, "not supported on this platform: {what}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}
