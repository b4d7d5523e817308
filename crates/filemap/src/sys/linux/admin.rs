//! Listing, inspecting, removing and collecting objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self, AtFlags, Dir, FileType};
use rustix::io::Errno;

use super::dir::NsDir;
use rustix::fs::OFlags;

use super::lock;
use super::object;
use crate::layout::Record;
use crate::{Error, Name, ObjectInfo, Refused, Result, Scope};

fn dirs(root: &Path) -> Result<Vec<Arc<NsDir>>> {
    let mut out = Vec::new();
    for scope in [Scope::Local, Scope::Global] {
        if let Some(d) = NsDir::get(root, scope, false)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// One entry of a namespace directory.
enum Found {
    /// A regular file with one name that stands for an object's name.
    Object(Name, String),
    /// Anything else: never opened, never removed, reported.
    Refused(Refused),
}

/// The entries of one namespace directory, objects in name order. Every entry is looked at
/// with `lstat` first, so that nothing odd is ever opened.
fn entries_in(dir: &NsDir) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let entries = Dir::read_from(dir.fd())
        .map_err(|e| Error::io(format!("listing {}", dir.path().display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.path().display()), e))?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let os_path = dir.path().join(std::ffi::OsStr::from_bytes(raw));
        let st = match fs::statat(dir.fd(), entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue, // gone meanwhile
            Err(e) => return Err(Error::io(format!("checking {}", os_path.display()), e)),
        };
        let file_name = std::str::from_utf8(raw).ok();
        let mut name = file_name.and_then(|f| Name::from_file_name(dir.scope(), f));
        let mut unreadable = None;
        let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
        // A hashed file name: the name is in the file.
        if let Some(f) = file_name.filter(|f| regular && Name::is_hashed_file_name(f)) {
            match object::name_in_file(dir, f) {
                Ok(Some(n)) => name = Some(n),
                Ok(None) => continue, // gone meanwhile
                Err(Error::PermissionDenied { what }) => unreadable = Some(what),
                Err(Error::Insecure { reason, .. } | Error::Corrupt { reason, .. }) => {
                    unreadable = Some(reason)
                }
                Err(e) => unreadable = Some(e.to_string()),
            }
        }
        let reason = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile if unreadable.is_some() => unreadable,
            FileType::RegularFile if name.is_none() => Some("not a filemap file name".to_owned()),
            FileType::RegularFile if st.st_nlink > 1 => Some(format!(
                "a file with {} names (hard links), so another name may stand for the same object",
                st.st_nlink
            )),
            FileType::RegularFile => None,
            FileType::Directory => Some("a directory".to_owned()),
            FileType::Symlink => Some("a symlink".to_owned()),
            FileType::Fifo => Some("a FIFO".to_owned()),
            FileType::Socket => Some("a socket".to_owned()),
            FileType::CharacterDevice | FileType::BlockDevice => Some("a device".to_owned()),
            FileType::Unknown => Some("of an unknown file type".to_owned()),
        };
        found.push(match (reason, name) {
            (None, Some(name)) => Found::Object(name, String::from_utf8_lossy(raw).into_owned()),
            (reason, name) => Found::Refused(Refused {
                os_path,
                name,
                owner_uid: Some(st.st_uid),
                mode: Some(st.st_mode & 0o7777),
                reason: reason.unwrap_or_default(),
            }),
        });
    }
    found.sort_by(|a, b| match (a, b) {
        (Found::Object(a, _), Found::Object(b, _)) => a.base().cmp(b.base()),
        (Found::Object(..), Found::Refused(_)) => std::cmp::Ordering::Less,
        (Found::Refused(_), Found::Object(..)) => std::cmp::Ordering::Greater,
        (Found::Refused(a), Found::Refused(b)) => a.os_path.cmp(&b.os_path),
    });
    Ok(found)
}

/// An object file that failed its checks when looked at closer.
fn refused(dir: &NsDir, name: &Name, file_name: &str, e: &Error) -> Refused {
    let os_path = dir.path().join(file_name);
    let st = fs::statat(dir.fd(), file_name, AtFlags::SYMLINK_NOFOLLOW).ok();
    let reason = match e {
        Error::Insecure { reason, .. } | Error::Corrupt { reason, .. } => reason.clone(),
        e => e.to_string(),
    };
    Refused {
        os_path,
        name: Some(name.clone()),
        owner_uid: st.as_ref().map(|st| st.st_uid),
        mode: st.as_ref().map(|st| st.st_mode & 0o7777),
        reason,
    }
}

/// One object's information, holders included (read from the object's own locks).
fn info_of(dir: &NsDir, name: &Name, file_name: &str) -> Result<Option<ObjectInfo>> {
    let Inspect::Present {
        st,
        record,
        holders,
        state,
    } = inspect(dir, name, file_name)?
    else {
        return Ok(None);
    };
    let os_path = dir.path().join(file_name);
    let (live, handles, pids) = match holders {
        Some(h) => (Some(h.live), Some(h.handles), h.pids),
        None => (None, None, Vec::new()),
    };
    Ok(Some(ObjectInfo {
        name: name.clone(),
        kind: record.map(|r| r.kind),
        size: record.map(|r| r.size),
        owner_uid: Some(st.st_uid),
        mode: Some(st.st_mode & 0o7777),
        live,
        persistent: record.is_some_and(|r| r.persistent()),
        file_backed: record.is_some_and(|r| r.file_backed()),
        creator_pid: record.map(|r| r.creator_pid),
        created: record.map(|r| UNIX_EPOCH + Duration::from_nanos(r.created_ns)),
        holders: pids,
        handles,
        os_path: Some(os_path),
        state,
    }))
}

/// Makes the shared directories; run by root, also takes over the ones another user made.
/// Returns the `Global\` directory, what was repaired, and what a person must remove.
pub(crate) fn init(root: &Path) -> Result<(PathBuf, Vec<String>, Vec<String>)> {
    let repairs = if rustix::process::geteuid().is_root() {
        super::dir::repair(root)?
    } else {
        Default::default()
    };
    let dir = NsDir::get(root, Scope::Global, true)?.expect("created");
    Ok((dir.path().to_path_buf(), repairs.done, repairs.to_remove))
}

/// Every object, and every entry that is not one. One entry never fails the listing.
pub(crate) fn list(root: &Path) -> Result<(Vec<ObjectInfo>, Vec<Refused>)> {
    let (mut objects, mut refused_entries) = (Vec::new(), Vec::new());
    for dir in dirs(root)? {
        for found in entries_in(&dir)? {
            match found {
                Found::Object(name, file_name) => match info_of(&dir, &name, &file_name) {
                    Ok(Some(found)) => objects.push(found),
                    Ok(None) => {}
                    Err(e) => refused_entries.push(refused(&dir, &name, &file_name, &e)),
                },
                Found::Refused(r) => refused_entries.push(r),
            }
        }
    }
    Ok((objects, refused_entries))
}

/// The pids of the processes that hold `name`: what `info` gives.
pub(crate) fn holders(root: &Path, name: &Name) -> Result<Vec<u32>> {
    info(root, name).map(|i| i.holders)
}

pub(crate) fn info(root: &Path, name: &Name) -> Result<ObjectInfo> {
    let not_found = || Error::NotFound {
        name: name.to_string(),
        kind: None,
    };
    let dir = NsDir::get(root, name.scope(), false)?.ok_or_else(not_found)?;
    info_of(&dir, name, &name.file_name())?.ok_or_else(not_found)
}

pub(crate) fn kind(root: &Path, name: &Name) -> Result<crate::Kind> {
    let info = info(root, name)?;
    info.kind.ok_or_else(|| {
        Error::denied(format!(
            "{} exists, but its permissions do not allow reading it",
            info.name
        ))
    })
}

pub(crate) fn remove(root: &Path, name: &Name) -> Result<()> {
    let dir = NsDir::get(root, name.scope(), false)?.ok_or_else(|| Error::NotFound {
        name: name.to_string(),
        kind: None,
    })?;
    object::remove(&dir, name)
}

/// Removes the stale objects, and corrupt object files that nobody holds; entries that are
/// not objects are left alone and reported.
pub(crate) fn gc(root: &Path) -> Result<(Vec<Name>, Vec<Refused>, Vec<Refused>)> {
    let (mut removed, mut corrupt, mut refused_entries) = (Vec::new(), Vec::new(), Vec::new());
    for dir in dirs(root)? {
        for found in entries_in(&dir)? {
            let (name, file_name) = match found {
                Found::Object(name, file_name) => (name, file_name),
                Found::Refused(r) => {
                    refused_entries.push(r);
                    continue;
                }
            };
            // Objects we may not open (another user's, in Global\) are theirs to collect.
            match object::reclaim(&dir, &name, &file_name) {
                Ok(true) => removed.push(name),
                Ok(false) | Err(Error::PermissionDenied { .. }) => {}
                // A truncated object would otherwise stay forever: nobody can open it.
                Err(e @ Error::Corrupt { .. }) => {
                    let entry = refused(&dir, &name, &file_name, &e);
                    match object::remove_corrupt(&dir, &file_name) {
                        Ok(true) => corrupt.push(entry),
                        Ok(false) | Err(_) => refused_entries.push(entry),
                    }
                }
                Err(e) => refused_entries.push(refused(&dir, &name, &file_name, &e)),
            }
        }
    }
    Ok((removed, corrupt, refused_entries))
}

/// What is under a name, as far as the caller is allowed to see.
// Returned once per object and matched at once: not worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inspect {
    Missing,
    /// An object file: its record, and who holds it (`None`: not known, because it could
    /// not be opened).
    Present {
        st: fs::Stat,
        record: Option<Record>,
        holders: Option<lock::Holders>,
        state: Option<crate::SyncState>,
    },
}

/// Looks at a name without changing anything (for listings).
pub(crate) fn inspect(dir: &NsDir, name: &Name, file_name: &str) -> Result<Inspect> {
    match object::open_checked(dir, name, file_name, OFlags::RDONLY) {
        Ok(None) => Ok(Inspect::Missing),
        Ok(Some((fd, st, record))) => {
            // We hold no lock: every lock in the holders' range is a holder's (or a
            // remover's, for an instant).
            let holders =
                lock::holders(&fd).map_err(|e| Error::io(format!("checking {name}"), e))?;
            let state = match record.kind {
                crate::Kind::Stream
                | crate::Kind::Broadcast
                | crate::Kind::Latest
                | crate::Kind::RequestReply => super::channel::read_state(&fd, record.size),
                kind => super::sync::read_state(&fd, kind),
            };
            Ok(Inspect::Present {
                st,
                record: Some(record),
                holders: Some(holders),
                state,
            })
        }
        // Another user's object that we may not read: it is there, nothing more is known.
        // (A file that is not a valid object is an error, which listings report.)
        Err(Error::PermissionDenied { .. }) => {
            match fs::statat(dir.fd(), file_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(Inspect::Present {
                    st,
                    record: None,
                    holders: None,
                    state: None,
                }),
                Err(Errno::NOENT) => Ok(Inspect::Missing),
                Err(e) => Err(Error::io(format!("checking {name}"), e)),
            }
        }
        Err(e) => Err(e),
    }
}
