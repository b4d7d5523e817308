//! Namespace directories: one per user for `Local\`, one for `Global\`, under a root.
//!
//! ```text
//! <root>/                 mode 1777 (like /tmp), owned by root (or by you)
//! <root>/global/          mode 1777, owned by root (or by you)
//! <root>/local-<uid>/     mode 0700, owned by <uid>
//! ```
//!
//! A directory that others share must be owned by root: its owner could rename or replace
//! every entry in it, sticky bit or not. Only your own directories are trusted besides
//! root's. Root's `filemap init` takes over shared directories that another user made.
//!
//! Every directory is opened with `O_NOFOLLOW | O_DIRECTORY` and checked with `fstat`
//! before use. A directory that fails a check is an [`Error::Insecure`] and is never used.
//!
//! There is no namespace lock: the lifetime protocol locks object files only (see
//! `object.rs`), so that another user, who can open a shared directory, cannot freeze it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::process::geteuid;

use super::fork::PerGeneration;
use crate::{Error, Kind, Name, Namespace, Result, Scope};

/// An open, checked namespace directory.
#[derive(Debug)]
pub(crate) struct NsDir {
    fd: OwnedFd,
    /// The namespace root, as the cache knows it.
    root: PathBuf,
    path: PathBuf,
    scope: Scope,
    /// The uid that owns the objects in this directory (`Local\`), or `None` (`Global\`).
    owner: Option<u32>,
    /// The effective uid that opened and checked it (the cache's key, with root and scope).
    checked_for: u32,
}

impl NsDir {
    fn is(&self, root: &Path, scope: Scope, uid: u32) -> bool {
        self.scope == scope && self.checked_for == uid && self.root == root
    }
}

/// A handful of entries (one per root, scope and effective uid in use): a list, searched
/// without building a key, is cheaper per open than a hash map.
type Cache = Mutex<Vec<Arc<NsDir>>>;

/// The open namespace directories, one cache per fork generation (a child forked while
/// another thread held the cache's lock starts a cache of its own).
fn cache() -> &'static Cache {
    static CACHE: PerGeneration<Cache> = PerGeneration::new();
    CACHE.get()
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl NsDir {
    /// The namespace directory for `scope` under `root`, created if `create` is set.
    ///
    /// Returns `Ok(None)` if it does not exist and `create` is not set.
    pub(crate) fn get(root: &Path, scope: Scope, create: bool) -> Result<Option<Arc<NsDir>>> {
        let uid = geteuid().as_raw();
        let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
        // Not checked again here (a system call per operation): a directory that was
        // removed meanwhile (by `rm -rf` of the root, say) shows as a missing name or a
        // failed create, after which `refreshed` opens it again.
        if let Some(dir) = cache.iter().find(|d| d.is(root, scope, uid)) {
            return Ok(Some(dir.clone()));
        }
        let Some(root_fd) = open_root(root, create)? else {
            return Ok(None);
        };
        let (name, owner) = match scope {
            Scope::Local => (format!("local-{uid}"), Some(uid)),
            Scope::Global => ("global".to_owned(), None),
        };
        let path = root.join(&name);
        let fd = match open_dir_at(&root_fd, &name, &path)? {
            Some(fd) => fd,
            None if !create => return Ok(None),
            None => {
                let mode = match scope {
                    Scope::Local => 0o700,
                    Scope::Global => 0o1777,
                };
                make_dir_at(&root_fd, &name, &path, mode)?
            }
        };
        let st =
            fs::fstat(&fd).map_err(|e| Error::io(format!("checking {}", path.display()), e))?;
        match scope {
            Scope::Local => {
                if st.st_uid != uid {
                    return Err(insecure(
                        &path,
                        format!("it is owned by uid {}, not by you (uid {uid})", st.st_uid),
                    ));
                }
                if st.st_mode & 0o077 != 0 {
                    return Err(insecure(
                        &path,
                        format!(
                            "its mode is {:o}; a Local namespace must be 700",
                            st.st_mode & 0o7777
                        ),
                    ));
                }
            }
            Scope::Global => check_shared_dir(&path, &st, uid)?,
        }
        let dir = Arc::new(NsDir {
            fd,
            root: root.to_path_buf(),
            path,
            scope,
            owner,
            checked_for: uid,
        });
        cache.push(dir.clone());
        Ok(Some(dir))
    }

    /// If this directory has been removed since it was opened, the one that stands in its
    /// place now (made if `create` is set; `None` if there is none): the caller tries
    /// again there. `None` too if it is still in place.
    pub(crate) fn refreshed(&self, create: bool) -> Result<Option<Arc<NsDir>>> {
        match fs::fstat(&self.fd) {
            Ok(st) if st.st_nlink > 0 => return Ok(None),
            _ => {}
        }
        {
            let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|d| !std::ptr::eq(Arc::as_ptr(d), self));
        }
        NsDir::get(&self.root, self.scope, create)
    }

    /// The directory in which to create `name`, made if need be.
    pub(crate) fn for_create(ns: &Namespace, name: &Name) -> Result<Arc<NsDir>> {
        let root = ns.root_now();
        NsDir::get(&root, name.scope(), true)?.ok_or_else(|| {
            Error::io(
                format!("opening the namespace under {}", root.display()),
                Errno::NOENT,
            )
        })
    }

    /// The directory in which to open `name`; if it does not exist, neither does the name.
    pub(crate) fn for_open(ns: &Namespace, name: &Name, kind: Kind) -> Result<Arc<NsDir>> {
        NsDir::get(&ns.root_now(), name.scope(), false)?.ok_or_else(|| Error::NotFound {
            name: name.to_string(),
            kind: Some(kind),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn scope(&self) -> Scope {
        self.scope
    }

    /// The uid that must own every object here, for a `Local\` namespace.
    pub(crate) fn owner(&self) -> Option<u32> {
        self.owner
    }
}

fn insecure(path: &Path, reason: String) -> Error {
    Error::Insecure {
        path: path.to_path_buf(),
        reason,
    }
}

/// Opens (and with `create`, makes) the root directory and checks it.
pub(crate) fn open_root(root: &Path, create: bool) -> Result<Option<OwnedFd>> {
    if !root.is_absolute() {
        return Err(Error::InvalidArgument {
            what: format!(
                "the namespace root {} is not an absolute path",
                root.display()
            ),
        });
    }
    let uid = geteuid().as_raw();
    let fd = match open_dir_at(&CWD, root, root)? {
        Some(fd) => fd,
        None if !create => return Ok(None),
        None => make_dir_at(&CWD, root, root, 0o1777)?,
    };
    let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {}", root.display()), e))?;
    check_shared_dir(root, &st, uid)?;
    Ok(Some(fd))
}

/// The rules for the root and the `Global\` directory, which several users share.
fn check_shared_dir(path: &Path, st: &fs::Stat, uid: u32) -> Result<()> {
    let mode = st.st_mode & 0o7777;
    // Whoever owns a directory can rename and replace everything in it, sticky bit or not:
    // only root and you are trusted with that.
    if st.st_uid != 0 && st.st_uid != uid {
        return Err(insecure(
            path,
            format!(
                "it is owned by {}, which is neither root nor you; root can take it over with `filemap init`",
                super::user::describe(st.st_uid)
            ),
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(insecure(path, format!("its mode {mode:o} lets others replace entries (it needs the sticky bit, like /tmp); root can fix it with `filemap init`")));
    }
    Ok(())
}

/// What root's `init` did, besides making sure that the directories exist.
#[derive(Debug, Default)]
pub(crate) struct Repairs {
    /// What it changed, in plain words.
    pub(crate) done: Vec<String>,
    /// What a person must remove, with the command.
    pub(crate) to_remove: Vec<String>,
}

/// Root takes over the shared directories under `root` that another user made (owner
/// root, mode 1777), through the opened directory itself, so that nothing can be swapped in
/// between. It never removes anything: what it cannot repair, it names.
pub(crate) fn repair(root: &Path) -> Result<Repairs> {
    let mut repairs = Repairs::default();
    let Some(root_fd) = take_over(&CWD, root, root, &mut repairs)? else {
        return Ok(repairs);
    };
    let global = root.join("global");
    take_over(&root_fd, "global", &global, &mut repairs)?;
    // Another user's `local-<uid>` would be refused by that user: say what to remove.
    let entries = fs::Dir::read_from(&root_fd)
        .map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = file_name
            .strip_prefix("local-")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = root.join(&file_name);
        let Ok(st) = fs::statat(&root_fd, entry.file_name(), fs::AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let what = if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            "not a directory".to_owned()
        } else if st.st_uid != owner {
            format!("owned by {}", super::user::describe(st.st_uid))
        } else {
            continue;
        };
        repairs.to_remove.push(format!(
            "{} is {what}, not the Local namespace of {}: remove it with `rm -r {}`",
            Name::printable(&path.to_string_lossy()),
            super::user::describe(owner),
            Name::printable(&path.to_string_lossy())
        ));
    }
    Ok(repairs)
}

/// Makes an existing directory root's, mode 1777. `None` if it does not exist.
fn take_over<P: rustix::path::Arg + Copy>(
    at: &impl AsFd,
    name: P,
    path: &Path,
    repairs: &mut Repairs,
) -> Result<Option<OwnedFd>> {
    let shown = Name::printable(&path.to_string_lossy()).into_owned();
    let fd = match open_dir_at(at, name, path) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Ok(None),
        Err(Error::Insecure { .. }) => {
            return Err(insecure(
                path,
                format!("it is not a directory (or it is a symlink); remove it with `rm {shown}`, then run `filemap init` again"),
            ))
        }
        Err(e) => return Err(e),
    };
    let st = fs::fstat(&fd).map_err(|e| Error::io(format!("checking {shown}"), e))?;
    if st.st_uid != 0 || st.st_gid != 0 {
        fs::fchown(
            &fd,
            Some(rustix::process::Uid::ROOT),
            Some(rustix::process::Gid::ROOT),
        )
        .map_err(|e| Error::io(format!("taking over {shown}"), e))?;
        if st.st_uid != 0 {
            repairs.done.push(format!(
                "took over {shown}, which was owned by {}",
                super::user::describe(st.st_uid)
            ));
        }
    }
    let mode = st.st_mode & 0o7777;
    if mode != 0o1777 {
        fs::fchmod(&fd, Mode::from_raw_mode(0o1777))
            .map_err(|e| Error::io(format!("setting the mode of {shown}"), e))?;
        repairs
            .done
            .push(format!("set the mode of {shown} to 1777 (it was {mode:o})"));
    }
    Ok(Some(fd))
}

fn open_dir_at<P: rustix::path::Arg>(
    at: &impl AsFd,
    name: P,
    path: &Path,
) -> Result<Option<OwnedFd>> {
    match fs::openat(at, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => Err(insecure(
            path,
            "it is not a directory (or it is a symlink)".into(),
        )),
        Err(Errno::ACCESS) => Err(Error::denied(format!("cannot open {}", path.display()))),
        Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
    }
}

/// `mkdir` that tolerates losing a race, then sets the exact mode on a directory we made.
fn make_dir_at<P: rustix::path::Arg + Copy>(
    at: &impl AsFd,
    name: P,
    path: &Path,
    mode: u32,
) -> Result<OwnedFd> {
    let made = match fs::mkdirat(at, name, Mode::from_raw_mode(mode & 0o777)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(Errno::ACCESS) => {
            return Err(Error::denied(format!("cannot create {}", path.display())))
        }
        Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
    };
    let fd = open_dir_at(at, name, path)?
        .ok_or_else(|| Error::io(format!("opening {}", path.display()), Errno::NOENT))?;
    if made {
        let st =
            fs::fstat(&fd).map_err(|e| Error::io(format!("checking {}", path.display()), e))?;
        // The umask may have cleared bits; a directory that someone swapped in between
        // mkdir and open is not ours and is left alone (the checks reject it if need be).
        if st.st_uid == geteuid().as_raw()
            && FileType::from_raw_mode(st.st_mode) == FileType::Directory
        {
            fs::fchmod(&fd, Mode::from_raw_mode(mode))
                .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
        }
    }
    Ok(fd)
}
