//! Named objects as files on tmpfs, with Windows lifetime semantics.
//!
//! This is the protocol of `shared/design/namespace-on-linux.md`, checked by
//! `shared/design/namespace.pml`:
//!
//! - Every holder of an object keeps one open file description of its file with
//!   `flock(LOCK_SH)`. The kernel drops the lock when the last fd of it closes, also when
//!   the process dies by SIGKILL.
//! - Every change to the set of names, and every liveness test, happens under the
//!   namespace lock (see [`NsDir::lock`]).
//! - **create**: the file is built unnamed (`O_TMPFILE`): storage reserved, data and record
//!   written, `LOCK_SH` taken. Under the namespace lock it gets its name with `linkat`, which
//!   fails if the name exists. No one can see a half-made object, and a creator that dies
//!   early leaves nothing behind.
//! - **open**: under the lock, `LOCK_EX|LOCK_NB` on the existing file. If that succeeds,
//!   nobody holds it: it is stale (its holders died), so it is unlinked and the name is free.
//!   Otherwise `LOCK_SH|LOCK_NB`, which cannot fail, since exclusive locks are only ever
//!   taken under the namespace lock that we hold.
//! - **close** (drop of the last handle or view in this process): under the lock,
//!   `LOCK_EX|LOCK_NB`; if it succeeds we were the last holder anywhere, and the name is
//!   unlinked if it still names our file.
//! - **persistent** objects skip the staleness test and the unlink on close; only `rm`
//!   removes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{self, AtFlags, FallocateFlags, FileType, FlockOperation, Mode, OFlags, CWD};
use rustix::io::{self as rio, Errno};
use rustix::process::getpid;

use super::dir::{NsDir, NsGuard};
use crate::layout::{Record, RECORD_LEN, RECORD_USED};
use crate::sys::Disposition;
use crate::{Error, Kind, Name, Result};

/// A holder's reference to a named object: its file, open and share-locked.
#[derive(Debug)]
pub(crate) struct Entry {
    dir: Arc<NsDir>,
    name: Name,
    file_name: String,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    /// The owner, group and permission bits of the object file.
    uid: u32,
    gid: u32,
    mode: u32,
    record: Record,
}

/// What a new object looks like.
#[derive(Debug)]
pub(crate) struct NewObject<'a> {
    pub(crate) kind: Kind,
    pub(crate) flags: u32,
    /// The size recorded for openers.
    pub(crate) size: u64,
    /// The bytes of the data area to reserve (rounded up to 4096 by the record).
    pub(crate) data_len: u64,
    /// Initial contents of the data area, from offset 0.
    pub(crate) init: &'a [u8],
    /// File mode bits (owner, group and others).
    pub(crate) mode: u32,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Entry {
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn record(&self) -> &Record {
        &self.record
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    /// The object file's device and inode: the object's identity in this process.
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The object file's owner (its creator), group and permission bits.
    pub(crate) fn owner(&self) -> (u32, u32, u32) {
        (self.uid, self.gid, self.mode)
    }

    /// The object's file.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join(&self.file_name)
    }

    /// Creates an object, or with [`Disposition::OpenOrCreate`] opens a live one of the same
    /// kind. Returns the entry and whether it was created.
    ///
    /// `prepare` runs on the new, still unnamed file after its storage is reserved and
    /// before anyone can open it: synchronization objects initialise their state there.
    pub(crate) fn create(
        dir: Arc<NsDir>,
        name: &Name,
        new: &NewObject<'_>,
        disposition: Disposition,
        prepare: &mut dyn FnMut(&OwnedFd) -> Result<()>,
    ) -> Result<(Entry, bool)> {
        let display = name.to_string();
        let data_len = Record::data_len_for(new.data_len).ok_or_else(|| Error::InvalidSize {
            what: format!("{} bytes is too large", new.data_len),
        })?;
        let total = data_len
            .checked_add(RECORD_LEN)
            .ok_or_else(|| Error::InvalidSize {
                what: format!("{} bytes is too large", new.data_len),
            })?;
        if total > i64::MAX as u64 {
            return Err(Error::InvalidSize {
                what: format!("{} bytes is too large", new.data_len),
            });
        }

        // 1. Build the object without a name, outside the namespace lock.
        let fd = match fs::openat(
            dir.fd(),
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(new.mode),
        ) {
            Ok(fd) => fd,
            Err(Errno::ACCESS) => {
                return Err(Error::denied(format!(
                    "cannot create objects in {}",
                    dir.path().display()
                )))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("creating an object file in {}", dir.path().display()),
                    e,
                ))
            }
        };
        reserve(&fd, total).map_err(|e| match e {
            Errno::NOSPC | Errno::FBIG => Error::NoSpace {
                name: display.clone(),
                size: new.data_len,
            },
            e => Error::io(format!("reserving {total} bytes for {display}"), e),
        })?;
        let record = Record {
            kind: new.kind,
            flags: new.flags,
            creator_pid: getpid().as_raw_pid() as u32,
            size: new.size,
            data_len,
            created_ns: now_ns(),
        };
        write_all_at(&fd, new.init, 0)
            .map_err(|e| Error::io(format!("initialising {display}"), e))?;
        prepare(&fd)?;
        write_all_at(&fd, &record.encode(), data_len)
            .map_err(|e| Error::io(format!("initialising {display}"), e))?;
        fs::flock(&fd, FlockOperation::NonBlockingLockShared)
            .map_err(|e| Error::io(format!("locking {display}"), e))?;
        let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {display}"), e))?;
        // The umask may have cleared bits that were asked for.
        if st.st_mode & 0o7777 != new.mode {
            fs::fchmod(&fd, Mode::from_raw_mode(new.mode))
                .map_err(|e| Error::io("setting the mode of a new object", e))?;
        }

        // 2. Publish it under the namespace lock, unless a live object holds the name.
        //    The link is tried first: it fails if the name is taken, and then the holder
        //    of the name is examined (and removed if stale, after which we try again).
        let file_name = name.file_name();
        let guard = dir.lock()?;
        // Under the lock nobody following the protocol can take the name between our tries;
        // the bound only guards against processes that do not.
        for attempt in 0.. {
            match link_unnamed(&fd, &dir, &file_name) {
                Ok(()) => break,
                Err(Errno::EXIST) if attempt < 3 => {}
                Err(Errno::EXIST) => {
                    return Err(Error::io(
                        format!("publishing {display}: the name keeps reappearing"),
                        Errno::EXIST,
                    ))
                }
                Err(e) => return Err(Error::io(format!("publishing {display}"), e)),
            }
            if let Some(existing) =
                find_live(&dir, &guard, name, &file_name, OFlags::RDWR, Some(new.kind))?
            {
                if disposition == Disposition::CreateNew {
                    return Err(Error::AlreadyExists {
                        name: display,
                        kind: new.kind,
                    });
                }
                let entry = existing.into_entry(dir.clone(), name.clone(), file_name)?;
                drop(guard);
                return Ok((entry, false));
            }
            // The name was stale (now removed) or vanished: link again.
        }
        drop(guard);
        Ok((
            Entry {
                dir,
                name: name.clone(),
                file_name,
                fd,
                dev: st.st_dev,
                ino: st.st_ino,
                uid: st.st_uid,
                gid: st.st_gid,
                mode: new.mode,
                record,
            },
            true,
        ))
    }

    /// Opens a live object of `kind`, read-only or read-write.
    pub(crate) fn open(dir: Arc<NsDir>, name: &Name, kind: Kind, writable: bool) -> Result<Entry> {
        let file_name = name.file_name();
        let flags = if writable {
            OFlags::RDWR
        } else {
            OFlags::RDONLY
        };
        let guard = dir.lock()?;
        match find_live(&dir, &guard, name, &file_name, flags, Some(kind))? {
            Some(found) => {
                let entry = found.into_entry(dir.clone(), name.clone(), file_name)?;
                drop(guard);
                Ok(entry)
            }
            None => Err(Error::NotFound {
                name: name.to_string(),
                kind: Some(kind),
            }),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // If the lock cannot be taken there is nothing safe to do but close: the object
        // then looks stale to the next opener, who removes it.
        let Ok(guard) = self.dir.lock() else { return };
        if !self.record.persistent()
            && fs::flock(&self.fd, FlockOperation::NonBlockingLockExclusive).is_ok()
        {
            // We were the last holder. Unlink the name only if it is still ours: `rm` may
            // have removed it and someone may have created a new object since.
            if let Ok(st) = fs::statat(self.dir.fd(), &self.file_name, AtFlags::SYMLINK_NOFOLLOW) {
                if st.st_dev == self.dev && st.st_ino == self.ino {
                    let _ = fs::unlinkat(self.dir.fd(), &self.file_name, AtFlags::empty());
                }
            }
        }
        drop(guard);
    }
}

/// An existing object file that somebody holds, opened and checked but not yet locked.
pub(crate) struct Found {
    pub(crate) fd: OwnedFd,
    pub(crate) record: Record,
    pub(crate) st: fs::Stat,
}

impl Found {
    /// Takes `LOCK_SH`; the caller holds the namespace lock.
    fn into_entry(self, dir: Arc<NsDir>, name: Name, file_name: String) -> Result<Entry> {
        match fs::flock(&self.fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(Error::io(
                    format!(
                    "opening {name}: a process outside the filemap protocol locks it exclusively"
                ),
                    Errno::WOULDBLOCK,
                ))
            }
            Err(e) => return Err(Error::io(format!("locking {name}"), e)),
        }
        Ok(Entry {
            dir,
            name,
            file_name,
            fd: self.fd,
            dev: self.st.st_dev,
            ino: self.st.st_ino,
            uid: self.st.st_uid,
            gid: self.st.st_gid,
            mode: self.st.st_mode & 0o7777,
            record: self.record,
        })
    }
}

/// What is under a name, as far as the caller is allowed to see.
pub(crate) enum Inspect {
    Missing,
    /// An object file: its record, and whether somebody holds it (`None`: not known,
    /// because it could not be opened).
    Present {
        st: fs::Stat,
        record: Option<Record>,
        live: Option<bool>,
        state: Option<crate::SyncState>,
    },
}

/// Opens the object file of a name and checks that it is a regular file, owned as the
/// namespace requires, with a valid record.
pub(crate) fn open_checked(
    dir: &NsDir,
    name: &Name,
    file_name: &str,
    flags: OFlags,
) -> Result<Option<(OwnedFd, fs::Stat, Record)>> {
    let path = || dir.path().join(file_name);
    let fd = match fs::openat(
        dir.fd(),
        file_name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(Error::Insecure {
                path: path(),
                reason: "it is a symlink".into(),
            })
        }
        Err(Errno::ACCESS) | Err(Errno::PERM) => {
            let how = if flags.contains(OFlags::RDWR) {
                "read-write"
            } else {
                "reading"
            };
            return Err(Error::denied(format!(
                "{name} exists, but its permissions do not allow opening it for {how}"
            )));
        }
        Err(e) => return Err(Error::io(format!("opening {name}"), e)),
    };
    let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {name}"), e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::Insecure {
            path: path(),
            reason: "it is not a regular file".into(),
        });
    }
    match st.st_nlink {
        // Unlinked between our open and fstat: the name is free now.
        0 => return Ok(None),
        1 => {}
        // A hard link made by someone else: the object would answer to a second name that
        // its creator never chose, and outlive the removal of the first.
        n => {
            return Err(Error::Insecure {
                path: path(),
                reason: format!(
                    "it has {n} names (hard links), so another name may stand for the same object"
                ),
            })
        }
    }
    if let Some(owner) = dir.owner() {
        if st.st_uid != owner {
            return Err(Error::Insecure {
                path: path(),
                reason: format!("it is owned by uid {}, not by uid {owner}", st.st_uid),
            });
        }
    }
    let record = read_record(&fd, st.st_size as u64).map_err(|reason| Error::Corrupt {
        path: path(),
        reason,
    })?;
    Ok(Some((fd, st, record)))
}

pub(crate) fn read_record(fd: &OwnedFd, file_len: u64) -> std::result::Result<Record, String> {
    if file_len < RECORD_LEN {
        return Err(format!("it is only {file_len} bytes long"));
    }
    let mut buf = [0u8; RECORD_USED];
    let mut done = 0;
    while done < buf.len() {
        match rio::pread(fd, &mut buf[done..], file_len - RECORD_LEN + done as u64) {
            Ok(0) => return Err("it shrank while being read".into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(format!("reading its record: {e}")),
        }
    }
    Record::decode(&buf, file_len)
}

/// Is anybody holding this object? Probes with `LOCK_EX|LOCK_NB` and releases at once.
/// The caller holds the namespace lock.
pub(crate) fn is_held(fd: &OwnedFd) -> Result<bool> {
    match fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            let _ = fs::flock(fd, FlockOperation::Unlock);
            Ok(false)
        }
        Err(Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(Error::io("testing whether an object is in use", e)),
    }
}

/// Under the namespace lock: the live object under `name`, if any. A stale one (nobody
/// holds it, not persistent) is removed on the way. With `kind`, an object of another kind
/// is a [`Error::KindMismatch`].
pub(crate) fn find_live(
    dir: &NsDir,
    _guard: &NsGuard<'_>,
    name: &Name,
    file_name: &str,
    flags: OFlags,
    kind: Option<Kind>,
) -> Result<Option<Found>> {
    let Some((fd, st, record)) = open_checked(dir, name, file_name, flags)? else {
        return Ok(None);
    };
    if !record.persistent() && !is_held(&fd)? {
        // Its holders are gone (closed or killed): reclaim the storage now.
        match fs::unlinkat(dir.fd(), file_name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::io(format!("removing the stale object {name}"), e)),
        }
        return Ok(None);
    }
    if let Some(kind) = kind {
        if record.kind != kind {
            return Err(Error::KindMismatch {
                name: name.to_string(),
                expected: kind,
                found: record.kind,
            });
        }
    }
    Ok(Some(Found { fd, record, st }))
}

/// Looks at a name without changing anything (for listings).
pub(crate) fn inspect(dir: &NsDir, name: &Name, file_name: &str) -> Result<Inspect> {
    let _guard = dir.lock()?;
    match open_checked(dir, name, file_name, OFlags::RDONLY) {
        Ok(None) => Ok(Inspect::Missing),
        Ok(Some((fd, st, record))) => {
            let live = is_held(&fd)?;
            let state = super::sync::read_state(&fd, record.kind);
            Ok(Inspect::Present {
                st,
                record: Some(record),
                live: Some(live),
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
                    live: None,
                    state: None,
                }),
                Err(Errno::NOENT) => Ok(Inspect::Missing),
                Err(e) => Err(Error::io(format!("checking {name}"), e)),
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes a stale object under `name`. Returns whether something was removed.
pub(crate) fn reclaim(dir: &NsDir, name: &Name, file_name: &str) -> Result<bool> {
    let guard = dir.lock()?;
    let before = fs::statat(dir.fd(), file_name, AtFlags::SYMLINK_NOFOLLOW).ok();
    let _ = find_live(dir, &guard, name, file_name, OFlags::RDONLY, None)?;
    let after = fs::statat(dir.fd(), file_name, AtFlags::SYMLINK_NOFOLLOW).ok();
    Ok(before.is_some() && after.is_none())
}

/// Removes a name, live or not (`rm`). Holders keep their object until they close it.
pub(crate) fn remove(dir: &NsDir, name: &Name) -> Result<()> {
    let file_name = name.file_name();
    let _guard = dir.lock()?;
    match fs::unlinkat(dir.fd(), &file_name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT) => Err(Error::NotFound {
            name: name.to_string(),
            kind: None,
        }),
        Err(Errno::ACCESS) | Err(Errno::PERM) => {
            Err(Error::denied(format!("{name} belongs to another user")))
        }
        Err(e) => Err(Error::io(format!("removing {name}"), e)),
    }
}

/// `posix_fallocate`: reserve the storage now, so that a full tmpfs is an error here and
/// not a SIGBUS later. File systems without `fallocate` get `ftruncate`.
pub(crate) fn reserve(fd: &OwnedFd, len: u64) -> std::result::Result<(), Errno> {
    loop {
        match fs::fallocate(fd, FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP) => return fs::ftruncate(fd, len),
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn write_all_at(
    fd: &OwnedFd,
    mut data: &[u8],
    mut offset: u64,
) -> std::result::Result<(), Errno> {
    while !data.is_empty() {
        match rio::pwrite(fd, data, offset) {
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Gives an `O_TMPFILE` file a name; fails with `EEXIST` if the name is taken.
fn link_unnamed(fd: &OwnedFd, dir: &NsDir, file_name: &str) -> std::result::Result<(), Errno> {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match fs::linkat(
        CWD,
        proc_path.as_str(),
        dir.fd(),
        file_name,
        AtFlags::SYMLINK_FOLLOW,
    ) {
        // Without /proc, AT_EMPTY_PATH does the same (it needs CAP_DAC_READ_SEARCH).
        Err(Errno::NOENT) => fs::linkat(fd.as_fd(), "", dir.fd(), file_name, AtFlags::EMPTY_PATH),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, Namespace, Options, Scope};

    /// The kind marker: a name held by another kind is refused both ways. (The other kinds
    /// get public types with the synchronization objects; here one is made directly.)
    #[test]
    fn kind_collisions_both_ways() {
        let root = std::path::PathBuf::from(format!(
            "/dev/shm/filemap-unit-kinds-{}",
            std::process::id()
        ));
        let ns = Namespace::at(&root);
        let dir = NsDir::get(&root, Scope::Local, true).unwrap().unwrap();
        let name = Name::parse("Local\\held").unwrap();
        let new = NewObject {
            kind: Kind::Event,
            flags: 0,
            size: 8,
            data_len: 8,
            init: &[],
            mode: 0o600,
        };
        let (event, created) = Entry::create(
            dir.clone(),
            &name,
            &new,
            Disposition::CreateNew,
            &mut |_| Ok(()),
        )
        .unwrap();
        assert!(created);
        let mut opts = Options::new();
        opts.namespace(ns.clone());
        for result in [
            opts.open("Local\\held", Access::Read).map(|_| ()),
            opts.create("Local\\held", 8).map(|_| ()),
            opts.open_or_create("Local\\held", 8).map(|_| ()),
        ] {
            match result {
                Err(e @ Error::KindMismatch { .. }) => {
                    assert_eq!(e.to_string(), "Local\\held is an event, not a mapping")
                }
                other => panic!("{other:?}"),
            }
        }
        drop(event);
        // And the other way: a mapping's name cannot be taken by an event.
        let mapping = opts.create("Local\\held", 8).unwrap();
        match Entry::create(
            dir.clone(),
            &name,
            &new,
            Disposition::OpenOrCreate,
            &mut |_| Ok(()),
        ) {
            Err(Error::KindMismatch {
                expected: Kind::Event,
                found: Kind::Mapping,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match Entry::open(dir, &name, Kind::Event, true) {
            Err(Error::KindMismatch {
                expected: Kind::Event,
                found: Kind::Mapping,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        drop(mapping);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
