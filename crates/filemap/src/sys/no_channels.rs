//! Channels on targets without a backend: creating or opening one returns
//! `Error::Unsupported`.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use crate::channel::algo::{Geometry, Ring};
use crate::sync::algo::{Parked, Parker};
use crate::sys::{CreateOptions, Disposition};
use crate::{Error, Name, Namespace, Result};

#[derive(Debug, Clone, Copy)]
enum Never {}

fn unsupported<T>() -> Result<T> {
    Err(Error::Unsupported {
        what: "channels (this platform has no backend)",
    })
}

#[derive(Debug)]
pub(crate) struct Channel(Never);

#[derive(Debug)]
pub(crate) struct Claim(Never);

impl Claim {
    pub(crate) fn inherited(&self) -> bool {
        match self.0 {}
    }

    pub(crate) fn made(&self) -> Made {
        match self.0 {}
    }
}

/// A fork generation; no channel exists here to have one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Made(Never);

impl Made {
    pub(crate) fn inherited(self) -> bool {
        match self.0 {}
    }
}

/// Never parks: no channel can exist to park on.
#[derive(Debug)]
pub(crate) struct NoParker;

impl Parker for NoParker {
    fn park(&self, _: &AtomicU32, _: u32, _: Option<Instant>) -> Parked {
        Parked::Woken
    }
    fn park_any(&self, _: &crate::sync::algo::Words<'_>, _: Option<Instant>) -> Parked {
        Parked::Woken
    }
    fn unpark(&self, _: &AtomicU32, _: u32) {}
}

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
    pub(crate) fn open(
        _: &Namespace,
        _: &Name,
        _: crate::Kind,
        _: crate::Access,
    ) -> Result<Channel> {
        unsupported()
    }
    pub(crate) fn writable(&self) -> bool {
        match self.0 {}
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
    pub(crate) fn parker(&self) -> &NoParker {
        match self.0 {}
    }
    pub(crate) fn ring(&self) -> Ring<'_> {
        match self.0 {}
    }
    pub(crate) fn slots(&self) -> crate::channel::seqlock::Slots<'_> {
        match self.0 {}
    }
    pub(crate) fn clients(&self) -> crate::channel::rpc::Clients<'_> {
        match self.0 {}
    }
    pub(crate) fn claim(&self, _: u16, _: &'static str) -> Result<Claim> {
        match self.0 {}
    }
    pub(crate) fn claim_any(
        &self,
        _: std::ops::Range<u16>,
        _: &'static str,
    ) -> Result<(u16, Claim)> {
        match self.0 {}
    }
    pub(crate) fn role_alive(&self, _: u16) -> bool {
        match self.0 {}
    }
}
