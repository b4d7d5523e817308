//! Channels where the backend has none yet (Windows for now, and every target without a
//! backend): creating or opening one returns `Error::Unsupported`.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use crate::channel::algo::{Geometry, Ring};
use crate::sync::algo::{Parked, Parker};
use crate::sys::{CreateOptions, Disposition};
use crate::{Error, Name, Namespace, Result};

#[derive(Debug)]
enum Never {}

fn unsupported<T>() -> Result<T> {
    Err(Error::Unsupported {
        what: "channels (only the Linux backend has them so far)",
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

#[derive(Debug)]
pub(crate) struct Channel(Never);

#[derive(Debug)]
pub(crate) struct Claim(Never);

/// Never parks: no channel can exist to park on.
#[derive(Debug)]
pub(crate) struct NoParker;

impl Parker for NoParker {
    fn park(&self, _: &AtomicU32, _: u32, _: Option<Instant>) -> Parked {
        Parked::Woken
    }
    fn park_any(&self, _: &[(&AtomicU32, u32)], _: Option<Instant>) -> Parked {
        Parked::Woken
    }
    fn unpark(&self, _: &AtomicU32, _: u32) {}
}

pub(crate) const PARKER: NoParker = NoParker;

impl Channel {
    pub(crate) fn create(
        _: &Namespace,
        _: &Name,
        _: CreateOptions,
        _: Disposition,
        _: Geometry,
    ) -> Result<Channel> {
        unsupported()
    }
    pub(crate) fn open(_: &Namespace, _: &Name) -> Result<Channel> {
        unsupported()
    }
    pub(crate) fn name(&self) -> &Name {
        match self.0 {}
    }
    pub(crate) fn created(&self) -> bool {
        match self.0 {}
    }
    pub(crate) fn os_path(&self) -> std::path::PathBuf {
        match self.0 {}
    }
    pub(crate) fn geometry(&self) -> Geometry {
        match self.0 {}
    }
    pub(crate) fn ring(&self) -> Ring<'_> {
        match self.0 {}
    }
    pub(crate) fn claim(&self, _: Role) -> Result<Claim> {
        match self.0 {}
    }
    pub(crate) fn role_alive(&self, _: Role) -> bool {
        match self.0 {}
    }
}
