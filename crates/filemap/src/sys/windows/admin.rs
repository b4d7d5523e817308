//! Administration: Windows cannot list a session's objects, so only `info` and `kind`
//! of one name work.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::mapping::*;
use super::object::*;
use super::sync::*;
use crate::{Error, Kind, Name, ObjectInfo, Result};

fn not_found(name: &Name) -> Error {
    Error::NotFound {
        name: name.to_string(),
        kind: None,
    }
}

fn no_listing<T>() -> Result<T> {
    Err(Error::Unsupported {
        what: "listing or removing named objects (Windows cannot list a session's objects)",
    })
}

pub(crate) fn init(_: &Path) -> Result<(PathBuf, Vec<String>, Vec<String>)> {
    no_listing()
}
pub(crate) fn list(_: &Path) -> Result<(Vec<ObjectInfo>, Vec<crate::Refused>)> {
    no_listing()
}
/// What Windows tells of a named object: its kind, a mapping's size (and, for one
/// that filemap made, its creator and creation time), a synchronization object's
/// state, and how many handles are open to it.
pub(crate) fn info(_: &Path, name: &Name) -> Result<ObjectInfo> {
    // The probe that finds the kind also opens the handle to inspect it with.
    let (kind, handle) = probe(name).ok_or_else(|| not_found(name))?;
    let handle = handle.ok_or_else(|| {
        Error::denied(format!(
            "{name} exists, but its security does not allow inspecting it"
        ))
    })?;
    let mut info = ObjectInfo {
        name: name.clone(),
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
        handles: basic_information(handle.0).map(|i| i.HandleCount.saturating_sub(1)),
        os_path: None,
        state: None,
    };
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
pub(crate) fn kind(_: &Path, name: &Name) -> Result<Kind> {
    kind_holding(name).ok_or_else(|| not_found(name))
}
pub(crate) fn remove(_: &Path, _: &Name) -> Result<()> {
    no_listing()
}
/// Nothing goes stale on Windows: the kernel destroys an object with its last handle.
pub(crate) fn gc(_: &Path) -> Result<(Vec<Name>, Vec<crate::Refused>, Vec<crate::Refused>)> {
    Ok((Vec::new(), Vec::new(), Vec::new()))
}
