//! Administration: `list` reads the kernel's object directories (this session's
//! `\Sessions\N\BaseNamedObjects` and `\BaseNamedObjects`), and describes each object as
//! `info` does; `info` and `kind` open one name. Names cannot be removed: the kernel
//! destroys an object with its last handle, and nothing goes stale.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::mapping::*;
use super::object::*;
use super::sync::*;
use crate::{Error, Kind, Name, ObjectInfo, Refused, Result, Scope};

fn not_found(name: &Name) -> Error {
    Error::NotFound {
        name: name.to_string(),
        kind: None,
    }
}

pub(crate) fn init(_: &Path) -> Result<(PathBuf, Vec<String>, Vec<String>)> {
    Err(Error::Unsupported {
        what: "init (Windows has no namespace directories to set up)",
    })
}

/// Every mapping, channel, mutex, semaphore and event in this session's `Local\`
/// directory and in `Global\`, each described as [`info`] describes it, sorted by name
/// within each. Windows' own objects and other programs' are listed too: the namespace is
/// theirs as well. The events and semaphores that are part of a listed channel
/// (`NAME:filemap-role-N`, `NAME:filemap-wait-OFFSET`) are not objects of their own. An
/// object that others may not inspect is listed with its kind only; one whose name filemap
/// cannot take (not valid Unicode) is refused.
pub(crate) fn list(root: &Path) -> Result<(Vec<ObjectInfo>, Vec<Refused>)> {
    let (local, global) = named_object_directories();
    let (mut objects, mut refused) = (Vec::new(), Vec::new());
    for (dir, scope) in [(Some(local), Scope::Local), (global, Scope::Global)] {
        let Some(dir) = dir else { continue };
        let entries = match directory_entries(&dir) {
            Ok(entries) => entries,
            // `Global\` may be closed to us; our own session's directory may not.
            Err(e) if scope == Scope::Global => {
                refused.push(refusal(dir.as_str(), None, format!("cannot list it: {e}")));
                continue;
            }
            Err(e) => return Err(Error::io(format!("listing {dir}"), e)),
        };
        let mut found = Vec::new();
        for (base, type_name) in entries {
            let kind = match String::from_utf16_lossy(&type_name).as_str() {
                "Section" => Kind::Mapping,
                "Event" => Kind::Event,
                "Mutant" => Kind::Mutex,
                "Semaphore" => Kind::Semaphore,
                _ => continue,
            };
            let parsed = String::from_utf16(&base)
                .map_err(|_| "its name is not valid Unicode".to_owned())
                .and_then(|b| {
                    Name::parse(&format!("{}{b}", scope.prefix())).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(name) => found.push((name, kind)),
                Err(reason) => {
                    let path = format!("{dir}\\{}", String::from_utf16_lossy(&base));
                    refused.push(refusal(&path, None, reason));
                }
            }
        }
        // Sections first: the channels among them tell which events and semaphores are
        // their parts, which are then neither inspected nor listed.
        found.sort_by_key(|(_, kind)| *kind != Kind::Mapping);
        let (mut infos, mut channels) = (Vec::new(), HashSet::new());
        for (name, kind) in found {
            if kind != Kind::Mapping && part_of_channel(name.base(), &channels) {
                continue;
            }
            match info(root, &name) {
                Ok(i) => {
                    if matches!(
                        i.kind,
                        Some(Kind::Stream | Kind::Broadcast | Kind::Latest | Kind::RequestReply)
                    ) {
                        channels.insert(name.base().to_owned());
                    }
                    infos.push(i);
                }
                // Gone since the directory was read.
                Err(Error::NotFound { .. }) => {}
                Err(Error::PermissionDenied { .. }) => infos.push(bare(name, kind)),
                Err(e) => refused.push(refusal(
                    &format!("{dir}\\{}", name.base()),
                    Some(name),
                    e.to_string(),
                )),
            }
        }
        infos.sort_by(|a, b| a.name.base().cmp(b.name.base()));
        objects.extend(infos);
    }
    Ok((objects, refused))
}

/// Whether `base` names a role event or wait semaphore of one of `channels`.
fn part_of_channel(base: &str, channels: &HashSet<String>) -> bool {
    [(":filemap-role-", 10), (":filemap-wait-", 16)]
        .iter()
        .any(|&(marker, radix)| {
            base.rfind(marker).is_some_and(|at| {
                let number = &base[at + marker.len()..];
                !number.is_empty()
                    && number.chars().all(|c| c.is_digit(radix))
                    && channels.contains(&base[..at])
            })
        })
}

fn refusal(path: &str, name: Option<Name>, reason: String) -> Refused {
    Refused {
        os_path: PathBuf::from(path),
        name,
        owner_uid: None,
        mode: None,
        reason,
    }
}

/// What is known of any live object: its name and kind (all that `list` gives of one that
/// we may not open to inspect).
fn bare(name: Name, kind: Kind) -> ObjectInfo {
    ObjectInfo {
        name,
        kind: Some(kind),
        size: None,
        owner_uid: None,
        mode: None,
        live: Some(true),
        persistent: false,
        file_backed: false,
        creator_pid: None,
        created: None,
        holders: Vec::new(),
        handles: None,
        os_path: None,
        state: None,
    }
}

/// What Windows tells of a named object: its kind, a mapping's size (and, for one
/// that filemap made, its creator and creation time), a synchronization object's
/// state, and how many handles are open to it (its holders' pids only from [`holders`]).
pub(crate) fn info(_: &Path, name: &Name) -> Result<ObjectInfo> {
    let (kind, handle) = inspect(name)?;
    let mut info = bare(name.clone(), kind);
    info.handles = basic_information(handle.0).map(|i| i.HandleCount.saturating_sub(1));
    match kind {
        Kind::Mapping | Kind::Stream | Kind::Broadcast | Kind::Latest | Kind::RequestReply => {
            let section =
                Section::map(handle.0).map_err(|code| object_error(code, name, kind, "reading"))?;
            let record = section.record();
            info.size = Some(section.size(record.as_ref()));
            if kind != Kind::Mapping {
                info.state =
                    super::channel::read_state(name, &section, section.size(record.as_ref()));
            }
            if let Some(r) = record {
                info.file_backed = r.file_backed();
                info.creator_pid = Some(r.creator_pid);
                let since_epoch = Duration::from_nanos(r.created_ns);
                info.created = (r.created_ns != 0).then(|| UNIX_EPOCH + since_epoch);
            }
        }
        _ => info.state = sync_state(kind, handle.0),
    }
    Ok(info)
}

/// The processes that hold `name` (see [`object::holders`](super::object::holders) for
/// how, and what that costs).
pub(crate) fn holders(_: &Path, name: &Name) -> Result<Vec<u32>> {
    let (_, handle) = inspect(name)?;
    Ok(super::object::holders(handle.0))
}

/// The kind of `name` and a handle to inspect it with, from the probe that finds the kind.
fn inspect(name: &Name) -> Result<(Kind, Handle)> {
    let (kind, handle) = probe(name).ok_or_else(|| not_found(name))?;
    let handle = handle.ok_or_else(|| {
        Error::denied(format!(
            "{name} exists, but its security does not allow inspecting it"
        ))
    })?;
    Ok((kind, handle))
}

pub(crate) fn kind(_: &Path, name: &Name) -> Result<Kind> {
    kind_holding(name).ok_or_else(|| not_found(name))
}
pub(crate) fn remove(_: &Path, _: &Name) -> Result<()> {
    Err(Error::Unsupported {
        what: "removing a name (Windows destroys an object with its last handle, and only then)",
    })
}
/// Nothing goes stale on Windows: the kernel destroys an object with its last handle.
pub(crate) fn gc(_: &Path) -> Result<(Vec<Name>, Vec<crate::Refused>, Vec<crate::Refused>)> {
    Ok((Vec::new(), Vec::new(), Vec::new()))
}
