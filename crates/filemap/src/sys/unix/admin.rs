//! Listing, inspecting, removing and collecting objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{Dir, FileType};

use super::dir::NsDir;
use super::object::{self, Inspect};
use crate::{Error, Name, ObjectInfo, Result, Scope};

fn dirs(root: &Path) -> Result<Vec<Arc<NsDir>>> {
    let mut out = Vec::new();
    for scope in [Scope::Local, Scope::Global] {
        if let Some(d) = NsDir::get(root, scope, false)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The names in one namespace directory, in order.
fn names_in(dir: &NsDir) -> Result<Vec<(Name, String)>> {
    let mut names = Vec::new();
    let entries = Dir::read_from(dir.fd())
        .map_err(|e| Error::io(format!("listing {}", dir.path().display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.path().display()), e))?;
        if entry.file_type() == FileType::Directory {
            continue;
        }
        let Ok(file_name) = entry.file_name().to_str() else {
            continue;
        };
        if let Some(name) = Name::from_file_name(dir.scope(), file_name) {
            names.push((name, file_name.to_owned()));
        }
    }
    names.sort_by(|a, b| a.0.base().cmp(b.0.base()));
    Ok(names)
}

fn info_of(dir: &NsDir, name: &Name, file_name: &str) -> Result<Option<ObjectInfo>> {
    let Inspect::Present {
        st,
        record,
        live,
        state,
    } = object::inspect(dir, name, file_name)?
    else {
        return Ok(None);
    };
    let holders = holders_of(st.st_dev, st.st_ino);
    let os_path = dir.path().join(file_name);
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
        holders,
        handles: None,
        os_path: Some(os_path),
        state,
    }))
}

pub(crate) fn init(root: &Path) -> Result<PathBuf> {
    let dir = NsDir::get(root, Scope::Global, true)?.expect("created");
    Ok(dir.path().to_path_buf())
}

pub(crate) fn list(root: &Path) -> Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    for dir in dirs(root)? {
        for (name, file_name) in names_in(&dir)? {
            if let Some(info) = info_of(&dir, &name, &file_name)? {
                out.push(info);
            }
        }
    }
    Ok(out)
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

pub(crate) fn gc(root: &Path) -> Result<Vec<Name>> {
    let mut removed = Vec::new();
    for dir in dirs(root)? {
        for (name, file_name) in names_in(&dir)? {
            // Objects we may not open (another user's, in Global\) are theirs to collect.
            match object::reclaim(&dir, &name, &file_name) {
                Ok(true) => removed.push(name),
                Ok(false) | Err(Error::PermissionDenied { .. }) | Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// The pids holding a `flock` on the file, from `/proc/locks` (empty if unavailable).
///
/// The pid is the one that took the lock; a holder's child that inherited the fd is not
/// listed. Only flock locks count: filemap takes no other kind. `/proc/locks` is read
/// piecewise by the kernel, so a read can miss entries while other locks come and go; it
/// is read until two reads agree (at most five times).
fn holders_of(dev: u64, ino: u64) -> Vec<u32> {
    let mut last = None;
    for _ in 0..5 {
        let Ok(text) = std::fs::read_to_string("/proc/locks") else {
            return Vec::new();
        };
        let pids = parse_locks(&text, dev, ino);
        if last.as_ref() == Some(&pids) {
            break;
        }
        last = Some(pids);
    }
    last.unwrap_or_default()
}

fn parse_locks(text: &str, dev: u64, ino: u64) -> Vec<u32> {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let mut pids: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            // "1: FLOCK  ADVISORY  READ 1234 00:1a:5678 0 EOF", or "1: -> FLOCK ..." for waiters.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&"FLOCK") {
                return None;
            }
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let mut id = fields.get(5)?.split(':');
            let maj = u32::from_str_radix(id.next()?, 16).ok()?;
            let min = u32::from_str_radix(id.next()?, 16).ok()?;
            let i: u64 = id.next()?.parse().ok()?;
            (maj == major && min == minor && i == ino).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}
