//! Named objects as files on tmpfs, with Windows lifetime semantics.
//!
//! The protocol is modelled in `docs/namespace.pml`, which CI checks with spin. Its locks
//! are OFD record locks on the object file itself (`lock.rs`), never on a directory, so
//! that another user can block no more than the objects that they may open (issue 9):
//!
//! - Every holder of an object keeps one open file description of its file with a read
//!   lock on its own byte of the [`HOLDERS`] range (`lock::holder_byte`). The kernel drops it when the last descriptor of that
//!   description closes, also when the process dies by SIGKILL.
//! - **create**: the file is built unnamed (`O_TMPFILE`): storage reserved, data and record
//!   written, read lock taken. Then it gets its name with `linkat`, which fails if the name
//!   exists; then the object under the name is examined as an open does (and removed if it
//!   is stale), and the link is tried again. No one can see a half-made object, and a
//!   creator that dies early leaves nothing behind.
//! - **open**: open the file by name, take the read lock, and check that the name still
//!   points at this file (it may have been removed and reused between the open and the
//!   lock). If another description locks the range too (`F_OFD_GETLK`), the object is
//!   live.
//!   Otherwise it is stale (its holders are gone): it is removed, and the name looked at
//!   again.
//! - **remove** (a stale object, or our own at the last close): convert our read lock to a
//!   write lock on the whole range, which succeeds only if nobody else holds the object, in one step; then
//!   take the write lock on the [`UNLINK`] byte, check that the name still points at the
//!   file, and unlink it. Both write locks need a descriptor open for writing: a reader
//!   that is the last holder leaves a stale object, which every opener treats as absent
//!   and the next writer, `gc` or create removes.
//! - **close**: the removal above; if it does not happen (others hold the object), give the
//!   read lock up explicitly, and try the removal once more holding nothing (two holders
//!   closing at once would otherwise each find the other and both leave it stale). Closing alone is not enough: a child that
//!   another thread is spawning has a copy of the descriptor until it runs `exec`, and the
//!   lock would live on in it, to be found by the last holder's removal. An open that fails
//!   on a live object lets go the same way.
//! - **rm** takes the [`UNLINK`] lock of whatever the name points at, too.
//! - **persistent** objects skip the staleness test and the removal at close; only `rm`
//!   removes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{self, AtFlags, FallocateFlags, FileType, Mode, OFlags, CWD};
use rustix::io::{self as rio, Errno};
use rustix::process::getpid;

use super::dir::NsDir;
use super::fork::Made;
use super::lock::{self, Slot, Span, HOLDERS, REMOVE, UNLINK};
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
    /// The slot of this process whose byte our read lock is on (see `lock.rs`).
    _slot: Slot,
    /// Whether a duplicate of `fd` was handed out ([`Entry::dup_fd`]): the description,
    /// and with it our locks, may then outlive `fd`, so dropping gives the locks up
    /// explicitly.
    exported: std::sync::atomic::AtomicBool,
    /// The fork generation this handle was made in (see `fork.rs`).
    made: Made,
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
    /// Size the file without reserving its storage (pages come at first touch).
    pub(crate) sparse: bool,
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

    /// Whether this is a copy that a forked child inherited (see `fork.rs`): its closing
    /// leaves everything to the parent.
    pub(crate) fn inherited(&self) -> bool {
        self.made.inherited()
    }

    /// A duplicate of the holder's descriptor (the same description, locks included, for as
    /// long as this entry lives; dropping the entry gives the locks up explicitly).
    pub(crate) fn dup_fd(&self) -> Result<OwnedFd> {
        self.exported
            .store(true, std::sync::atomic::Ordering::Relaxed);
        rio::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| Error::io("duplicating the mapping's descriptor", e))
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
        // Formatted only for an error: an allocation per create otherwise.
        let display = name;
        let data_len = Record::data_len_for(new.data_len).ok_or_else(|| Error::InvalidSize {
            what: format!("{} bytes is too large", new.data_len),
        })?;
        // A name too long for a file name is kept in the file, between data and record.
        let stored_name: &[u8] = if name.is_hashed() {
            name.base().as_bytes()
        } else {
            &[]
        };
        let name_len = stored_name.len() as u32;
        let total = data_len
            .checked_add(Record::name_area_for(name_len))
            .and_then(|n| n.checked_add(RECORD_LEN))
            .ok_or_else(|| Error::InvalidSize {
                what: format!("{} bytes is too large", new.data_len),
            })?;
        if total > i64::MAX as u64 {
            return Err(Error::InvalidSize {
                what: format!("{} bytes is too large", new.data_len),
            });
        }

        // 1. Build the object without a name.
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
            // Out of inodes (tmpfs's nr_inodes): as full as out of bytes.
            Err(Errno::NOSPC) | Err(Errno::DQUOT) => {
                return Err(Error::NoSpace {
                    name: name.to_string(),
                    size: new.data_len,
                })
            }
            // Anything else may mean that the directory was removed since we opened it
            // (tmpfs says ENOENT then, ext4 EPERM): if so, try its successor; if it is
            // still there, the error means what it says.
            Err(e) => match dir.refreshed(true)? {
                Some(fresh) => return Entry::create(fresh, name, new, disposition, prepare),
                None => {
                    return Err(Error::io(
                        format!("creating an object file in {}", dir.path().display()),
                        e,
                    ))
                }
            },
        };
        let sized = if new.sparse {
            fs::ftruncate(&fd, total)
        } else {
            reserve(&fd, total)
        };
        sized.map_err(|e| match e {
            Errno::NOSPC | Errno::FBIG => Error::NoSpace {
                name: name.to_string(),
                size: new.data_len,
            },
            e => Error::io(format!("reserving {total} bytes for {display}"), e),
        })?;
        let pid = getpid().as_raw_pid() as u32;
        let record = Record {
            kind: new.kind,
            flags: new.flags,
            creator_pid: pid,
            size: new.size,
            data_len,
            created_ns: now_ns(),
            name_len,
        };
        // A sparse file gets its pages here, so a full file system shows up now.
        let init_err = |e| match e {
            Errno::NOSPC => Error::NoSpace {
                name: name.to_string(),
                size: new.data_len,
            },
            e => Error::io(format!("initialising {display}"), e),
        };
        write_all_at(&fd, new.init, 0).map_err(init_err)?;
        prepare(&fd)?;
        write_all_at(&fd, stored_name, data_len).map_err(init_err)?;
        write_all_at(&fd, &record.encode(), total - RECORD_LEN).map_err(init_err)?;
        let slot = Slot::take();
        let byte = lock::holder_byte(pid, slot.get());
        if !lock::try_read(&fd, byte).map_err(|e| Error::io(format!("locking {display}"), e))? {
            return Err(Error::io(format!("locking {display}"), Errno::AGAIN));
        }
        let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {display}"), e))?;
        // The umask may have cleared bits that were asked for.
        if st.st_mode & 0o7777 != new.mode {
            fs::fchmod(&fd, Mode::from_raw_mode(new.mode))
                .map_err(|e| Error::io("setting the mode of a new object", e))?;
        }

        // 2. Publish it, unless a live object holds the name. The link is tried first: it
        //    fails if the name is taken, and then the object under the name is examined
        //    (and removed if stale, after which we try again).
        let file_name = name.file_name();
        let mut pace = Pace::default();
        loop {
            if !pace.look() {
                return Err(keeps_changing(&name.to_string()));
            }
            match link_unnamed(&fd, &dir, &file_name) {
                Ok(()) => break,
                Err(Errno::EXIST) => {}
                // The directory was removed since we opened it: start again in its
                // successor (this file, never named, goes with its descriptor).
                Err(Errno::NOENT) => {
                    if let Some(fresh) = dir.refreshed(true)? {
                        return Entry::create(fresh, name, new, disposition, prepare);
                    }
                    return Err(Error::io(format!("publishing {display}"), Errno::NOENT));
                }
                Err(e) => return Err(Error::io(format!("publishing {display}"), e)),
            }
            match attach(&dir, name, &file_name, OFlags::RDWR, Some(new.kind))? {
                Attached::Live(existing) => {
                    if disposition == Disposition::CreateNew {
                        existing.let_go();
                        return Err(Error::AlreadyExists {
                            name: name.to_string(),
                            kind: new.kind,
                        });
                    }
                    return Ok((existing.into_entry(dir.clone(), name.clone(), file_name), false));
                }
                // The name vanished, or its stale object was removed: link again.
                Attached::Missing => {}
                Attached::Stuck { owner } => {
                    return Err(Error::denied(format!(
                        "{display} is held by a stale object of {} that you may not remove; its owner or root can (`filemap gc`)",
                        super::user::describe(owner)
                    )))
                }
            }
        }
        Ok((
            Entry {
                dir,
                name: name.clone(),
                file_name,
                fd,
                dev: st.st_dev,
                ino: st.st_ino,
                _slot: slot,
                uid: st.st_uid,
                gid: st.st_gid,
                mode: new.mode,
                record,
                exported: Default::default(),
                made: Made::now(),
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
        let not_found = || Error::NotFound {
            name: name.to_string(),
            kind: Some(kind),
        };
        match attach(&dir, name, &file_name, flags, Some(kind))? {
            Attached::Live(found) => Ok(found.into_entry(dir.clone(), name.clone(), file_name)),
            // Not in a directory that was removed since we opened it: look in its successor.
            Attached::Missing => match dir.refreshed(false)? {
                Some(fresh) => Entry::open(fresh, name, kind, writable),
                None => Err(not_found()),
            },
            // A stale object is no object, also when we may not remove it.
            Attached::Stuck { .. } => Err(not_found()),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.inherited() {
            // A copy that a forked child inherited: the description, and our lock on it,
            // are its parent's hold, which the parent gives up when it closes its own copy.
            // Only the descriptor goes.
            return;
        }
        // The last holder anywhere removes the name, if it may. A reader cannot take the
        // write lock: the object is then stale, and the next opener that may write it
        // removes it. A duplicate handed out (`dup_fd`) keeps the description open: its
        // locks would outlive this holder and keep the name alive (or a removed file
        // write-locked), so they go explicitly too.
        let mut unlock = self.exported.load(std::sync::atomic::Ordering::Relaxed);
        if !self.record.persistent() {
            let id = StatId {
                dev: self.dev,
                ino: self.ino,
            };
            let read_only =
                || fs::fcntl_getfl(&self.fd).is_ok_and(|fl| fl & OFlags::RWMODE != OFlags::RDWR);
            match remove_stale(&self.dir, &self.file_name, &self.fd, id) {
                Ok(Removal::Done) => {}
                // A read-only holder: one that may write the file removes it all the same
                // (giving our lock up first).
                Ok(Removal::NotAllowed) if read_only() => {
                    let _ = remove_as_writer(&self.dir, &self.name, &self.file_name, &self.fd, id);
                }
                // Others held it a moment ago. Two last holders that close at once each
                // find the other still there, and both left the object stale (CI caught
                // `filemap send` and `recv --follow` ending together). So give our lock up
                // and look once more, holding nothing: of two such closers, the one that
                // looks last finds nobody and removes the object.
                Ok(Removal::Busy) => {
                    lock::unlock(&self.fd, lock::ALL);
                    let _ = remove_stale(&self.dir, &self.file_name, &self.fd, id);
                }
                // Others hold it (or we may not remove it): our lock must go now, not when
                // the description closes. A child that another thread is spawning right now
                // has a copy of our descriptor until it runs `exec`; our lock would live on
                // in it, and the last holder, closing meanwhile, would find us still there
                // and leave the name (and its memory) behind as a stale object.
                _ => unlock = true,
            }
        }
        if unlock {
            lock::unlock(&self.fd, lock::ALL);
        }
    }
}

/// A live object, opened, checked and read-locked: a holder's reference in the making.
pub(crate) struct Found {
    pub(crate) fd: OwnedFd,
    pub(crate) record: Record,
    pub(crate) st: fs::Stat,
    slot: Slot,
}

impl Found {
    /// Gives up the holder's lock we took, and closes: what a handle does when it closes
    /// while others hold the object (see `Drop for Entry`).
    fn let_go(self) {
        lock::unlock(&self.fd, lock::ALL);
    }

    fn into_entry(self, dir: Arc<NsDir>, name: Name, file_name: String) -> Entry {
        Entry {
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
            _slot: self.slot,
            exported: Default::default(),
            made: Made::now(),
        }
    }
}

/// How often an open, create or removal looks at a name that keeps changing under it, at
/// most (see [`Pace`]).
const MAX_TRIES: u32 = 1000;

/// Paces the looks of a loop at a name that keeps changing under it: other processes
/// creating and removing it, or a remover that holds the name's locks while it waits for
/// a CPU. The first look comes at once, the next 100 after yielding the CPU, and the rest
/// after 1 ms each: [`MAX_TRIES`] looks, about a second in all. A count of looks alone,
/// without sleeps, ran out within milliseconds on a loaded machine while a preempted
/// remover held the locks (the churn test in `tests/multiprocess.rs` failed in CI).
#[derive(Debug, Default)]
struct Pace(u32);

impl Pace {
    /// Waits before the next look, if it is not the first; `false` when the looks are used
    /// up.
    fn look(&mut self) -> bool {
        self.0 += 1;
        match self.0 {
            1 => {}
            2..=101 => std::thread::yield_now(),
            n if n <= MAX_TRIES => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => return false,
        }
        true
    }
}

fn keeps_changing(display: &str) -> Error {
    Error::io(
        format!("opening {display}: the name keeps changing"),
        Errno::AGAIN,
    )
}

/// A file's identity.
#[derive(Debug, Clone, Copy)]
struct StatId {
    dev: u64,
    ino: u64,
}

/// Whether the name still points at the file `id`.
fn still_named(dir: &NsDir, file_name: &str, id: StatId) -> Result<bool> {
    match fs::statat(dir.fd(), file_name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(st.st_dev == id.dev && st.st_ino == id.ino),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::io(
            format!("checking {}", dir.path().join(file_name).display()),
            e,
        )),
    }
}

/// What is under a name when an open or create looks.
pub(crate) enum Attached {
    /// A live object (or a persistent one), now read-locked by us.
    Live(Found),
    /// No object: nothing there, or a stale object that was just removed.
    Missing,
    /// A stale object that we may not remove (we may not write it, or unlink it).
    Stuck { owner: u32 },
}

/// The open half of the protocol (see the module documentation): opens the object under
/// `name` with `flags`, takes a holder's read lock, and checks that the name still points
/// at it. A stale object is removed if we may, and the name looked at again.
fn attach(
    dir: &NsDir,
    name: &Name,
    file_name: &str,
    flags: OFlags,
    kind: Option<Kind>,
) -> Result<Attached> {
    let mut pace = Pace::default();
    while pace.look() {
        let Some(fd) = open_object(dir, name, file_name, flags)? else {
            return Ok(Attached::Missing);
        };
        let locking = |e| Error::io(format!("locking {name}"), e);
        let slot = Slot::take();
        let byte = lock::holder_byte(getpid().as_raw_pid() as u32, slot.get());
        let locked = lock::try_read(&fd, byte);
        // Checked after the lock: it may have been removed (and the name reused) between
        // our open and our lock. Then it has no link left: filemap never renames an object
        // file, and refuses one with a second link, so a file with its one link is still
        // the one under the name. (This fstat also does the checks of any open.)
        let Some((st, record)) = check_object(dir, name, file_name, &fd)? else {
            continue;
        };
        if !locked.map_err(locking)? {
            // Someone is removing it right now (or a writer outside the protocol blocks
            // it): look again in a moment.
            continue;
        }
        let id = StatId {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        let live = record.persistent() || lock::others_lock(&fd, HOLDERS).map_err(locking)?;
        if live {
            if let Some(kind) = kind {
                if record.kind != kind {
                    // Let go of our lock as a closing handle does (see `Drop for Entry`).
                    lock::unlock(&fd, lock::ALL);
                    return Err(Error::KindMismatch {
                        name: name.to_string(),
                        expected: kind,
                        found: record.kind,
                    });
                }
            }
            return Ok(Attached::Live(Found {
                fd,
                record,
                st,
                slot,
            }));
        }
        // Stale: its holders are gone (closed or killed). Remove it, and look again.
        match remove_stale(dir, file_name, &fd, id)? {
            Removal::Done => continue,
            // Live again (or being removed): let go of our lock as a closing handle does.
            Removal::Busy => {
                lock::unlock(&fd, lock::ALL);
                continue;
            }
            Removal::NotAllowed if flags.contains(OFlags::RDWR) => {
                return Ok(Attached::Stuck { owner: st.st_uid })
            }
            Removal::NotAllowed => match remove_as_writer(dir, name, file_name, &fd, id)? {
                Removal::Done | Removal::Busy => continue,
                Removal::NotAllowed => return Ok(Attached::Stuck { owner: st.st_uid }),
            },
        }
    }
    Err(keeps_changing(&name.to_string()))
}

/// How a removal ended.
enum Removal {
    /// The name no longer points at the file (we unlinked it, or someone else did).
    Done,
    /// Someone else holds it (it is live again), or is unlinking it now.
    Busy,
    /// We may not: our descriptor is read-only, or the directory forbids the unlink.
    NotAllowed,
}

/// Removes the object open as `fd` (which holds its read lock, or nothing) if nobody else
/// holds it: converts to the write lock on the holders' byte, takes the unlink byte, and
/// unlinks the name if it still points at the file. Every caller closes `fd` right after,
/// which drops its locks.
fn remove_stale(dir: &NsDir, file_name: &str, fd: &OwnedFd, id: StatId) -> Result<Removal> {
    // Both write locks in one call: the unlink byte sits right before the holders' range.
    if let Some(cannot) = write_lock(dir, file_name, fd, REMOVE)? {
        return Ok(cannot);
    }
    unlink_if_named(dir, file_name, id)
}

/// Takes the write lock on `byte` of the file `fd`; `Some` says why we cannot (someone
/// else locks it, or `fd` is read-only).
fn write_lock(dir: &NsDir, file_name: &str, fd: &OwnedFd, span: Span) -> Result<Option<Removal>> {
    match lock::try_write(fd, span) {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(Removal::Busy)),
        Err(Errno::BADF) => Ok(Some(Removal::NotAllowed)),
        Err(e) => Err(Error::io(
            format!("locking {}", dir.path().join(file_name).display()),
            e,
        )),
    }
}

/// [`remove_stale`] for a file that we hold through the read-only `fd` (whose read lock
/// we give up): through a descriptor open for writing, if we may have one.
fn remove_as_writer(
    dir: &NsDir,
    name: &Name,
    file_name: &str,
    fd: &OwnedFd,
    id: StatId,
) -> Result<Removal> {
    lock::unlock(fd, HOLDERS);
    match open_checked(dir, name, file_name, OFlags::RDWR) {
        Ok(Some((writer, st, _))) if st.st_dev == id.dev && st.st_ino == id.ino => {
            remove_stale(dir, file_name, &writer, id)
        }
        // The name moved on meanwhile.
        Ok(_) => Ok(Removal::Busy),
        Err(Error::PermissionDenied { .. }) => Ok(Removal::NotAllowed),
        Err(e) => Err(e),
    }
}

/// Unlinks the name if it still points at the file `fd`, holding the unlink byte until the
/// caller closes `fd`.
fn unlink_locked(dir: &NsDir, file_name: &str, fd: &OwnedFd, id: StatId) -> Result<Removal> {
    if let Some(cannot) = write_lock(dir, file_name, fd, UNLINK)? {
        return Ok(cannot);
    }
    unlink_if_named(dir, file_name, id)
}

/// Unlinks the name if it still points at the file `id`; the caller holds its unlink byte.
fn unlink_if_named(dir: &NsDir, file_name: &str, id: StatId) -> Result<Removal> {
    let path = || dir.path().join(file_name);
    if !still_named(dir, file_name, id)? {
        return Ok(Removal::Done);
    }
    match fs::unlinkat(dir.fd(), file_name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(Removal::Done),
        // A sticky directory, and another user's file: theirs to remove.
        Err(Errno::PERM) | Err(Errno::ACCESS) => Ok(Removal::NotAllowed),
        Err(e) => Err(Error::io(format!("removing {}", path().display()), e)),
    }
}

/// Opens the object file of a name and checks that it is a regular file, owned as the
/// namespace requires, with a valid record.
pub(crate) fn open_checked(
    dir: &NsDir,
    name: &Name,
    file_name: &str,
    flags: OFlags,
) -> Result<Option<(OwnedFd, fs::Stat, Record)>> {
    let Some(fd) = open_object(dir, name, file_name, flags)? else {
        return Ok(None);
    };
    Ok(check_object(dir, name, file_name, &fd)?.map(|(st, record)| (fd, st, record)))
}

/// Opens the file under `file_name`, which may be anything: [`check_object`] looks at it.
fn open_object(
    dir: &NsDir,
    name: &Name,
    file_name: &str,
    flags: OFlags,
) -> Result<Option<OwnedFd>> {
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
    Ok(Some(fd))
}

/// Checks an opened object file: a regular file with one link (`None` if it has none: it
/// was removed), owned as the namespace requires, with a valid record, and for a hashed
/// file name the name asked for.
fn check_object(
    dir: &NsDir,
    name: &Name,
    file_name: &str,
    fd: &OwnedFd,
) -> Result<Option<(fs::Stat, Record)>> {
    let path = || dir.path().join(file_name);
    let st = fs::fstat(fd).map_err(|e| Error::io(format!("checking {name}"), e))?;
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
    let record = read_record(fd, st.st_size as u64).map_err(|reason| Error::Corrupt {
        path: path(),
        reason,
    })?;
    // A hashed file name stands for the name stored in the file, and for no other.
    if name.is_hashed() || record.name_len != 0 {
        let stored = read_stored_name(fd, &record).map_err(|reason| Error::Corrupt {
            path: path(),
            reason,
        })?;
        if stored.as_deref() != Some(name.base()) {
            return Err(Error::Insecure {
                path: path(),
                reason: match stored {
                    Some(other) => format!(
                        "its record names another object ({}{})",
                        name.scope().prefix(),
                        Name::printable(&abbreviated(&other))
                    ),
                    None => "its file name is hashed, but it stores no name".into(),
                },
            });
        }
    }
    Ok(Some((st, record)))
}

/// The name stored in an object file (the part after the prefix), if it has one.
pub(crate) fn read_stored_name(
    fd: &OwnedFd,
    record: &Record,
) -> std::result::Result<Option<String>, String> {
    if record.name_len == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; record.name_len as usize];
    let mut done = 0;
    while done < buf.len() {
        match rio::pread(fd, &mut buf[done..], record.data_len + done as u64) {
            Ok(0) => return Err("it shrank while being read".into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(format!("reading its stored name: {e}")),
        }
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| "its stored name is not UTF-8".into())
}

/// The name that an object file with a hashed file name stands for, read from the file:
/// `None` if the file is gone. The file must be a regular file with one link, and the name
/// must hash to the file name.
pub(crate) fn name_in_file(dir: &NsDir, file_name: &str) -> Result<Option<Name>> {
    let path = || dir.path().join(file_name);
    let fd =
        match fs::openat(
            dir.fd(),
            file_name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::ACCESS) | Err(Errno::PERM) => return Err(Error::denied(
                "its name, too long for a file name, is stored in the file, which you may not read",
            )),
            Err(e) => return Err(Error::io(format!("opening {}", path().display()), e)),
        };
    let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {}", path().display()), e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::Insecure {
            path: path(),
            reason: "it is not a regular file".into(),
        });
    }
    let corrupt = |reason| Error::Corrupt {
        path: path(),
        reason,
    };
    let record = read_record(&fd, st.st_size as u64).map_err(corrupt)?;
    let base = read_stored_name(&fd, &record)
        .map_err(corrupt)?
        .ok_or_else(|| corrupt("its file name is hashed, but it stores no name".into()))?;
    let name = Name::parse(&format!("{}{base}", dir.scope().prefix()))
        .map_err(|e| corrupt(format!("its stored name is not valid: {e}")))?;
    if name.file_name() != file_name {
        return Err(Error::Insecure {
            path: path(),
            reason: "its stored name does not hash to its file name".into(),
        });
    }
    Ok(Some(name))
}

/// The first 48 characters of `s`, and "…" if there are more.
fn abbreviated(s: &str) -> String {
    match s.char_indices().nth(48) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
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

/// Removes a stale object under `name`. Returns whether something was removed.
pub(crate) fn reclaim(dir: &NsDir, name: &Name, file_name: &str) -> Result<bool> {
    let Some((fd, st, record)) = open_checked(dir, name, file_name, OFlags::RDWR)? else {
        return Ok(false);
    };
    if record.persistent() {
        return Ok(false);
    }
    remove_unheld(dir, file_name, &fd, &st)
}

/// Removes the file open as `fd` (on which we hold no lock) if nobody holds it: the write
/// lock then succeeds only if no other description locks it. Whether it is gone.
fn remove_unheld(dir: &NsDir, file_name: &str, fd: &OwnedFd, st: &fs::Stat) -> Result<bool> {
    let id = StatId {
        dev: st.st_dev,
        ino: st.st_ino,
    };
    Ok(
        matches!(remove_stale(dir, file_name, fd, id)?, Removal::Done)
            && !still_named(dir, file_name, id)?,
    )
}

/// Removes a corrupt object file (one whose record failed its checks) if nobody holds it:
/// a regular file with one link, owned by the caller, under the removal protocol's locks.
/// Returns whether it was removed.
pub(crate) fn remove_corrupt(dir: &NsDir, file_name: &str) -> Result<bool> {
    let fd = match fs::openat(
        dir.fd(),
        file_name,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(_) => return Ok(false),
    };
    let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {file_name}"), e))?;
    // Only your own: root's gc removes no other user's file, whatever it holds.
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_nlink != 1
        || st.st_uid != rustix::process::geteuid().as_raw()
    {
        return Ok(false);
    }
    remove_unheld(dir, file_name, &fd, &st)
}

/// Removes a name, live or not (`rm`). Holders keep their object until they close it.
pub(crate) fn remove(dir: &NsDir, name: &Name) -> Result<()> {
    let file_name = name.file_name();
    let not_found = || Error::NotFound {
        name: name.to_string(),
        kind: None,
    };
    let mut pace = Pace::default();
    while pace.look() {
        // A regular object file: take its unlink lock, so that a remover of the same file
        // cannot unlink whatever comes under the name after us.
        let fd = match fs::openat(
            dir.fd(),
            &file_name,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => return Err(not_found()),
            // Not a file we may open for writing (another user's, or not a regular file):
            // the unlink itself says whether we may.
            Err(_) => None,
        };
        let id = match &fd {
            Some(fd) => {
                let st = fs::fstat(fd).map_err(|e| Error::io(format!("checking {name}"), e))?;
                if name.is_hashed() {
                    // Only the object that the long name stands for.
                    let stored = read_record(fd, st.st_size as u64)
                        .and_then(|record| read_stored_name(fd, &record));
                    if stored.as_ref().ok().and_then(|s| s.as_deref()) != Some(name.base()) {
                        return Err(Error::Insecure {
                            path: dir.path().join(&file_name),
                            reason: "it does not store the name it stands for".into(),
                        });
                    }
                }
                Some(StatId {
                    dev: st.st_dev,
                    ino: st.st_ino,
                })
            }
            None => None,
        };
        let result = match (&fd, id) {
            (Some(fd), Some(id)) => match unlink_locked(dir, &file_name, fd, id)? {
                Removal::Done => Ok(()),
                // A remover is at it (an instant), or someone holds the byte: look again
                // in a moment, up to about a second in all.
                Removal::Busy => continue,
                Removal::NotAllowed => {
                    // Let go of the unlink byte now, not when the descriptor closes (see
                    // `Drop for Entry`: a spawning thread's copy would keep it).
                    lock::unlock(fd, UNLINK);
                    Err(Errno::PERM)
                }
            },
            _ => fs::unlinkat(dir.fd(), &file_name, AtFlags::empty()),
        };
        return match result {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => Err(not_found()),
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                Err(Error::denied(format!("{name} belongs to another user")))
            }
            Err(e) => Err(Error::io(format!("removing {name}"), e)),
        };
    }
    Err(Error::io(
        format!("removing {name}: another process keeps it busy (a process that may read it can hold it)"),
        Errno::BUSY,
    ))
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
    use std::sync::atomic::{AtomicBool, Ordering};
    // Linux 6.10 and later let whoever opened an O_TMPFILE file link it with AT_EMPTY_PATH;
    // before, that needs CAP_DAC_READ_SEARCH and says ENOENT, and /proc/self/fd does it
    // (a longer path walk). Remembered once it is known not to work.
    static NO_EMPTY_PATH: AtomicBool = AtomicBool::new(false);
    if !NO_EMPTY_PATH.load(Ordering::Relaxed) {
        match fs::linkat(fd.as_fd(), "", dir.fd(), file_name, AtFlags::EMPTY_PATH) {
            Err(Errno::NOENT) | Err(Errno::PERM) => {}
            other => return other,
        }
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let linked = fs::linkat(
        CWD,
        proc_path.as_str(),
        dir.fd(),
        file_name,
        AtFlags::SYMLINK_FOLLOW,
    );
    // If /proc worked where AT_EMPTY_PATH did not, AT_EMPTY_PATH is not allowed here.
    if linked.is_ok() {
        NO_EMPTY_PATH.store(true, Ordering::Relaxed);
    }
    linked
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
            sparse: false,
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
