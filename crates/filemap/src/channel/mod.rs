//! Named message channels: a stream (one producer, one consumer) of byte or plain-data
//! messages in a bounded ring in shared memory.
//!
//! A [`Stream`] is a named object like a mapping or a mutex: the same namespace, names,
//! lifetime (it goes with its last handle), permissions and kind collisions. Its two ends
//! are *roles* that one handle at a time may play: [`Stream::sender`] makes the
//! producer, [`Stream::receiver`] the consumer.
//!
//! - **Crash safety.** A producer killed in the middle of a message never exposes it: a
//!   message becomes visible only when it is whole. When a peer dies, even by SIGKILL, the
//!   other side gets [`Error::Disconnected`] (with `died: true`) within
//!   [`LIVENESS_PERIOD`](Stream::LIVENESS_PERIOD) once nothing is left to do, and a new
//!   peer may take the dead one's place at once. A consumer that dies while reading a
//!   message leaves it in the ring: the next consumer reads it again (at-least-once).
//! - **Sound access.** Received messages are read in place through [`Message`] (copies
//!   and raw pointers, like [`View`](crate::View)); loans are written through [`Loan`].
//!   No safe `&[u8]` ever points into memory that another process may write.
//! - **No allocation** per message: [`Sender::send`], [`Receiver::recv`] and the loans copy
//!   straight between the caller's memory and the ring.
//! - **Waiting** follows the [`WaitStrategy`]: busy polling, spinning then sleeping on a
//!   futex (the default), or sleeping at once.
//!
//! The layout is documented in `docs/channels.md`, for other languages.

pub(crate) mod algo;
mod kinds;
pub(crate) mod mem;
pub(crate) mod rpc;
pub(crate) mod seqlock;

pub use kinds::{
    Broadcast, Latest, LatestReader, LatestWriter, Publisher, Replier, RequestReply, RpcClient,
    RpcServer, SlotLoan, Subscriber, Ticket,
};

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use algo::WaitStrategy;
use algo::{Consumer, Frame, Geometry, Producer, Reserved, Ring, CLOSED, CONNECTED, KIND_STREAM};

use crate::sync::algo::Parker;
use crate::sys::{self, Disposition};

/// The role bytes of a stream's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn index(self) -> u16 {
        match self {
            Role::Producer => 0,
            Role::Consumer => 1,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}
use crate::{Error, Name, Options, Result};

/// A stream's capacity when none is given: 1 MiB.
pub const DEFAULT_CAPACITY: u32 = 1 << 20;

/// Plain-old-data message types: every bit pattern valid, no padding, no pointers
/// (`bytemuck::Pod`), and aligned to at most 8 bytes.
pub trait Plain: bytemuck::Pod {}
impl<T: bytemuck::Pod> Plain for T {}

/// The fingerprint of a message type that a typed channel records: its size, alignment and
/// a 64-bit FNV-1a hash of its Rust type name. Two programs must name the type alike
/// (the same path) to share a typed channel.
fn type_of<T: Plain>() -> (u32, u32, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (
        std::mem::size_of::<T>() as u32,
        std::mem::align_of::<T>() as u32,
        h,
    )
}

impl Options {
    /// Creates a stream channel of `capacity` bytes (a power of two, 64 B to 1 GiB) that
    /// carries byte messages of up to `max_message` bytes (at most `capacity - 8`), failing
    /// if a live stream has the name.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`], [`Error::KindMismatch`] for another kind of object,
    /// [`Error::InvalidArgument`] for a bad capacity or message size, and the errors of
    /// [`Options::create`].
    pub fn create_stream(&self, name: &str, capacity: u32, max_message: u32) -> Result<Stream> {
        Stream::make(
            self,
            name,
            bytes_geometry(capacity, max_message),
            Disposition::CreateNew,
        )
    }

    /// Opens the live stream under `name`, or creates it as [`Options::create_stream`]
    /// does. An existing stream keeps its own capacity and message size.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_stream`], except `AlreadyExists`.
    pub fn open_or_create_stream(
        &self,
        name: &str,
        capacity: u32,
        max_message: u32,
    ) -> Result<Stream> {
        Stream::make(
            self,
            name,
            bytes_geometry(capacity, max_message),
            Disposition::OpenOrCreate,
        )
    }

    /// Opens the live stream under `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::KindMismatch`], [`Error::PermissionDenied`] (a stream
    /// needs read-write access), [`Error::Corrupt`] for a control page that is not a valid
    /// channel of this version.
    pub fn open_stream(&self, name: &str) -> Result<Stream> {
        let name = Name::parse(name)?;
        let inner = sys::Channel::open(
            self.namespace_ref(),
            &name,
            crate::Kind::Stream,
            crate::Access::ReadWrite,
        )?;
        Ok(Stream {
            inner: Arc::new(inner),
        })
    }

    /// Creates a stream of messages of type `T`, with room for `messages` of them, failing
    /// if a live stream has the name.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_stream`].
    pub fn create_stream_of<T: Plain>(&self, name: &str, messages: u32) -> Result<Stream> {
        Stream::make(
            self,
            name,
            typed_geometry::<T>(messages)?,
            Disposition::CreateNew,
        )
    }

    /// Opens the live stream of `T` under `name`, or creates it with room for `messages`.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_stream_of`] and [`Options::create_stream_of`].
    pub fn open_or_create_stream_of<T: Plain>(&self, name: &str, messages: u32) -> Result<Stream> {
        let s = Stream::make(
            self,
            name,
            typed_geometry::<T>(messages)?,
            Disposition::OpenOrCreate,
        )?;
        s.check_type::<T>()?;
        Ok(s)
    }

    /// Opens the live stream under `name`, which must carry messages of type `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] if it carries another type (or bytes); as for
    /// [`Options::open_stream`].
    pub fn open_stream_of<T: Plain>(&self, name: &str) -> Result<Stream> {
        let s = self.open_stream(name)?;
        s.check_type::<T>()?;
        Ok(s)
    }
}

fn bytes_geometry(capacity: u32, max_message: u32) -> Geometry {
    Geometry::untyped(KIND_STREAM, capacity, max_message, 0)
}

fn typed_geometry<T: Plain>(messages: u32) -> Result<Geometry> {
    let (size, align, hash) = type_of::<T>();
    if size == 0 || align > 8 {
        return Err(Error::InvalidArgument {
            what: format!(
                "a channel's message type must be 1 byte or more, aligned to at most 8 ({} is {size} bytes, aligned to {align})",
                std::any::type_name::<T>()
            ),
        });
    }
    let frame = u64::from(algo::frame_len(size));
    let capacity = (frame * u64::from(messages.max(1)))
        .max(u64::from(algo::MIN_CAPACITY))
        .next_power_of_two();
    if capacity > u64::from(algo::MAX_CAPACITY) {
        return Err(Error::InvalidArgument {
            what: format!(
                "{messages} messages of {size} bytes need a ring of {capacity} bytes; the largest is {}",
                algo::MAX_CAPACITY
            ),
        });
    }
    Ok(Geometry {
        kind: KIND_STREAM,
        capacity: capacity as u32,
        max_message: size,
        type_size: size,
        type_align: align,
        type_hash: hash,
        max_reply: 0,
    })
}

/// A handle to a named stream channel. Its roles come from it:
/// [`sender`](Stream::sender) and [`receiver`](Stream::receiver).
pub struct Stream {
    inner: Arc<sys::Channel>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("name", self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// How long a waiting side may take to notice that its peer died, at most: a sleeping
    /// side wakes up by itself every 50 ms, and a side that polls asks the kernel every
    /// 10 ms.
    pub const LIVENESS_PERIOD: Duration = algo::LIVENESS_PERIOD.saturating_add(CHECK_EVERY);

    fn make(opts: &Options, name: &str, g: Geometry, disposition: Disposition) -> Result<Stream> {
        let name = Name::parse(name)?;
        g.check().map_err(|what| Error::InvalidArgument { what })?;
        let copts = opts.create_options()?;
        let inner = sys::Channel::create(opts.namespace_ref(), &name, copts, disposition, g)?;
        Ok(Stream {
            inner: Arc::new(inner),
        })
    }

    /// [`Options::create_stream`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_stream`].
    pub fn create(name: &str, capacity: u32, max_message: u32) -> Result<Stream> {
        Options::new().create_stream(name, capacity, max_message)
    }

    /// [`Options::open_or_create_stream`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_or_create_stream`].
    pub fn open_or_create(name: &str, capacity: u32, max_message: u32) -> Result<Stream> {
        Options::new().open_or_create_stream(name, capacity, max_message)
    }

    /// [`Options::open_stream`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_stream`].
    pub fn open(name: &str) -> Result<Stream> {
        Options::new().open_stream(name)
    }

    fn check_type<T: Plain>(&self) -> Result<()> {
        let g = self.inner.geometry();
        let (size, align, hash) = type_of::<T>();
        if (g.type_size, g.type_align, g.type_hash) != (size, align, hash) {
            let found = if g.type_size == 0 {
                "byte messages".to_string()
            } else {
                format!(
                    "messages of {} bytes, aligned to {}, type hash {:#x}",
                    g.type_size, g.type_align, g.type_hash
                )
            };
            return Err(Error::Incompatible {
                name: self.name().to_string(),
                reason: format!(
                    "it carries {found}, not {} ({size} bytes, aligned to {align}, type hash {hash:#x})",
                    std::any::type_name::<T>()
                ),
            });
        }
        Ok(())
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.inner.name()
    }

    /// Whether the channel was there already (`ERROR_ALREADY_EXISTS`): `false` if this
    /// handle created it.
    pub fn already_existed(&self) -> bool {
        !self.inner.created()
    }

    /// Where the channel lives in the file system (Linux).
    pub fn os_path(&self) -> PathBuf {
        self.inner.os_path()
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> u32 {
        self.inner.geometry().capacity
    }

    /// The largest message in bytes.
    pub fn max_message(&self) -> u32 {
        self.inner.geometry().max_message
    }

    /// Messages sent and not yet given back by the consumer. It gives the room of the
    /// messages it received back in batches (every 256 messages, a quarter of the ring,
    /// or when it runs out of messages), so a message received in the middle of a backlog
    /// counts until then.
    pub fn queued(&self) -> u64 {
        self.inner.ring().queued()
    }

    /// Whether the channel has a producer now.
    pub fn producer_state(&self) -> Peer {
        self.peer(Role::Producer)
    }

    /// Whether the channel has a consumer now.
    pub fn consumer_state(&self) -> Peer {
        self.peer(Role::Consumer)
    }

    fn peer(&self, role: Role) -> Peer {
        let ctl = self.inner.ring().ctl;
        let word = match role {
            Role::Producer => &ctl.producer,
            Role::Consumer => &ctl.consumer,
        };
        match word.load(Acquire) {
            CLOSED => Peer::Closed,
            CONNECTED if self.inner.role_alive(role.index()) => Peer::Connected,
            CONNECTED => Peer::Died,
            _ => Peer::Absent,
        }
    }

    /// Becomes the channel's producer.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another live handle (in any process) is the producer;
    /// [`Error::Corrupt`] if the ring's state is impossible.
    pub fn sender(&self) -> Result<Sender> {
        let claim = self.inner.claim(Role::Producer.index(), "producer")?;
        let ring = self.inner.ring();
        let producer = Producer::attach(&ring).map_err(|e| corrupt(&self.inner, e))?;
        let ctl = ring.ctl;
        ctl.producer_pid.store(std::process::id(), Relaxed);
        // A producer that died asleep left its flag up: the consumer would wake nobody
        // with every release.
        ctl.tx_waiting.store(0, Relaxed);
        ctl.producer.store(CONNECTED, Release);
        Ok(Sender {
            chan: self.inner.clone(),
            producer,
            liveness: Liveness::default(),
            strategy: WaitStrategy::SpinThenPark,
            _claim: claim,
        })
    }

    /// Becomes the channel's consumer.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another live handle is the consumer; [`Error::Corrupt`].
    pub fn receiver(&self) -> Result<Receiver> {
        let claim = self.inner.claim(Role::Consumer.index(), "consumer")?;
        let ring = self.inner.ring();
        let consumer = Consumer::attach(&ring).map_err(|e| corrupt(&self.inner, e))?;
        let ctl = ring.ctl;
        ctl.consumer_pid.store(std::process::id(), Relaxed);
        // A consumer that died asleep left its flag up: the producer would wake nobody
        // with every message.
        ctl.rx_waiting.store(0, Relaxed);
        ctl.consumer.store(CONNECTED, Release);
        Ok(Receiver {
            chan: self.inner.clone(),
            consumer,
            liveness: Liveness::default(),
            strategy: WaitStrategy::SpinThenPark,
            _claim: claim,
        })
    }
}

/// One side of a channel, as the other sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// No one has played the role yet.
    Absent,
    /// Someone plays it now.
    Connected,
    /// The last one closed its end cleanly.
    Closed,
    /// The last one died (a crash, or `kill -9`) without closing its end.
    Died,
}

/// Refuses a channel end that this process inherited through `fork`: its role is still the
/// parent's (the role belongs to the open file description, which parent and child share),
/// and two processes playing one role would overwrite each other's messages or share out
/// what each should get whole.
#[inline]
pub(crate) fn usable(claim: &sys::Claim, chan: &sys::Channel) -> Result<()> {
    if claim.inherited() {
        return Err(inherited_end(chan));
    }
    Ok(())
}

#[cold]
#[inline(never)]
pub(crate) fn inherited_end(chan: &sys::Channel) -> Error {
    Error::InvalidArgument {
        what: format!(
            "this end of {} was made before this process forked, and its role stays with the parent; make the end in the child instead (and not in the parent)",
            chan.name()
        ),
    }
}

#[cold]
fn corrupt(chan: &sys::Channel, e: algo::RingError) -> Error {
    Error::Corrupt {
        path: chan.os_path(),
        reason: e.to_string(),
    }
}

/// Why a [`Sender::try_send`] did not send; the message comes back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The ring has no room for it now.
    Full(T),
    /// The consumer is gone and the ring is full: no one will make room.
    Disconnected(T, Error),
    /// Any other error (a message too large, a corrupt channel).
    Failed(Error),
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the channel is full"),
            TrySendError::Disconnected(_, e) | TrySendError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for TrySendError<T> {}

/// The producer of a stream. Dropping it closes its end cleanly: the consumer receives
/// what is queued, then [`Error::Disconnected`] with `died: false`.
pub struct Sender {
    chan: Arc<sys::Channel>,
    producer: Producer,
    liveness: Liveness,
    strategy: WaitStrategy,
    _claim: sys::Claim,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("name", self.chan.name())
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// Room for one message in the ring, to be written in place and then sent with
/// [`Loan::commit`]. Dropped without a commit, nothing is sent.
pub struct Loan<'a> {
    chan: &'a Arc<sys::Channel>,
    producer: &'a mut Producer,
    // A copy, made with the loan, as a `Message` keeps one: each of `write_at` and
    // `commit` made the ring anew from `chan`.
    ring: Ring<'a>,
    reserved: Reserved,
}

impl fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan").field("len", &self.len()).finish()
    }
}

impl Loan<'_> {
    /// The message's length.
    #[inline]
    pub fn len(&self) -> usize {
        self.reserved.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.reserved.len == 0
    }

    /// Writes `data` at `offset` in the message.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if it does not fit in the loan.
    #[inline]
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        write_within(&self.ring, self.reserved, offset, data)
    }

    /// The message's first byte, for writing in place (for instance by a decoder or a
    /// `read(2)`). It stays valid until the loan is committed or dropped; other processes
    /// that may open the channel can write these bytes too, so never make a reference to
    /// them that you rely on.
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ring.at(self.reserved.offset)
    }

    /// Sends the message.
    #[inline(always)]
    pub fn commit(self) {
        self.producer.commit(&self.ring, self.reserved);
        self.producer.publish(&self.ring, self.chan.parker());
    }

    /// Ends the borrow of the sender but keeps the room: for callers that cannot hold the
    /// borrow across calls (a binding to another language, a state machine). Send the
    /// message with [`Sender::commit_detached`].
    ///
    /// ```no_run
    /// # fn main() -> filemap::Result<()> {
    /// # let stream = filemap::Options::new().open_stream("Local\\Frames")?;
    /// let mut tx = stream.sender()?;
    /// let mut pending = tx.loan(4096)?.detach(); // `tx` is free again
    /// pending.write_at(0, b"header")?; // ... filled later, by other code
    /// tx.commit_detached(pending)?; // refused if `tx` sent anything meanwhile
    /// # Ok(())
    /// # }
    /// ```
    pub fn detach(self) -> DetachedLoan {
        DetachedLoan {
            chan: Arc::clone(self.chan),
            reserved: self.reserved,
            tail: self.producer.position(),
            sent: self.producer.sent(),
        }
    }
}

/// Room for one message, as a [`Loan`] gives, without a borrow of its [`Sender`]
/// ([`Loan::detach`]). It keeps the channel mapped, so [`as_mut_ptr`](Self::as_mut_ptr)
/// stays valid for as long as it lives. [`Sender::commit_detached`] sends it, as long as the
/// sender sent nothing meanwhile (a send, or a commit of another loan, may write over its
/// room, and makes it stale). Dropped without a commit, nothing is sent.
pub struct DetachedLoan {
    chan: Arc<sys::Channel>,
    reserved: Reserved,
    /// The producer's position and count when the room was reserved: the room is still
    /// ours while both are unchanged (room only grows while the producer stays put).
    tail: u32,
    sent: u64,
}

impl fmt::Debug for DetachedLoan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedLoan")
            .field("name", self.chan.name())
            .field("len", &self.len())
            .finish()
    }
}

impl DetachedLoan {
    /// The message's length.
    pub fn len(&self) -> usize {
        self.reserved.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.reserved.len == 0
    }

    /// Writes `data` at `offset` in the message.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if it does not fit in the loan.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        write_within(&self.chan.ring(), self.reserved, offset, data)
    }

    /// The message's first byte, for writing in place, as [`Loan::as_mut_ptr`]. It stays
    /// valid (mapped) for as long as this value lives; after a commit, or once the loan is
    /// stale, the bytes may belong to another message.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.chan.ring().at(self.reserved.offset)
    }
}

#[inline]
fn check_range(offset: usize, len: usize, size: usize) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(out_of_range(offset, len, size));
    }
    Ok(())
}

/// Writes `data` at `offset` in the room `r` reserved in `ring` (a loan's). The room is
/// inside the ring, so this copies; an error, not a panic, otherwise (see `Ring::write`).
#[inline(always)]
fn write_within(ring: &Ring<'_>, r: Reserved, offset: usize, data: &[u8]) -> Result<()> {
    let len = r.len as usize;
    check_range(offset, data.len(), len)?;
    match ring.write(r.offset + offset as u32, data) {
        true => Ok(()),
        false => Err(out_of_range(offset, data.len(), len)),
    }
}

/// Copies `buf.len()` bytes from `offset` in the message of frame `f` (a received
/// message's). The frame is inside the ring, so this copies; an error, not a panic,
/// otherwise (see `Ring::read`).
#[inline(always)]
fn read_within(ring: &Ring<'_>, f: Frame, offset: usize, buf: &mut [u8]) -> Result<()> {
    let len = f.len as usize;
    check_range(offset, buf.len(), len)?;
    match ring.read(f.offset + offset as u32, buf) {
        true => Ok(()),
        false => Err(out_of_range(offset, buf.len(), len)),
    }
}

/// Copies `msg` into the room `r` reserved in `ring`. A reservation is inside the ring, so
/// this copies; an error, not a panic, otherwise (see `Ring::write`).
#[inline(always)]
fn write_reserved(ring: &Ring<'_>, r: Reserved, msg: &[u8]) -> Result<()> {
    match ring.write(r.offset, msg) {
        true => Ok(()),
        false => Err(out_of_range(
            r.offset as usize,
            msg.len(),
            ring.geometry.capacity as usize,
        )),
    }
}

#[cold]
fn out_of_range(offset: usize, len: usize, size: usize) -> Error {
    Error::OutOfRange {
        offset: offset as u64,
        len: len as u64,
        size: size as u64,
    }
}

impl Sender {
    /// How a blocking send waits for room.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.chan.name()
    }

    /// The largest message in bytes.
    pub fn max_message(&self) -> usize {
        self.chan.geometry().max_message as usize
    }

    /// Sends `msg`, waiting for room until `deadline`; `false` if it passed first (no
    /// error value is made for that here: a `try_send` on a full ring allocates nothing).
    #[inline(always)]
    fn send_by(&mut self, msg: &[u8], deadline: Option<Instant>) -> Result<bool> {
        let Some(r) = self.reserve_by(msg.len(), deadline)? else {
            return Ok(false);
        };
        let chan = &*self.chan;
        let ring = chan.ring();
        write_reserved(&ring, r, msg)?;
        self.producer.commit(&ring, r);
        self.producer.publish(&ring, chan.parker());
        Ok(true)
    }

    /// Sends every message of `msgs` in order, making them visible to the consumer in
    /// batches (one release store and wake-up check per batch, not per message), waiting
    /// for room as long as it takes. Returns how many were sent.
    ///
    /// # Errors
    ///
    /// As for [`Sender::send`]; the messages before the failing one are sent.
    pub fn send_all<'m>(&mut self, msgs: impl IntoIterator<Item = &'m [u8]>) -> Result<usize> {
        let chan = &*self.chan;
        usable(&self._claim, chan)?;
        let ring = chan.ring();
        let max = chan.geometry().max_message as usize;
        let mut n = 0;
        let mut msgs = msgs.into_iter();
        let result = (|| {
            loop {
                // The messages that fit before `limit`, their position in a register.
                let (ready, rest) = self.producer.fill_ready(&ring, &mut msgs);
                n += ready;
                let Some(msg) = rest else {
                    return Ok(());
                };
                if msg.len() > max {
                    return Err(too_large(chan, msg.len()));
                }
                let r = match self
                    .producer
                    .try_reserve(&ring, msg.len() as u32, chan.parker())
                    .map_err(|e| corrupt(chan, e))?
                {
                    Some(r) => r,
                    None => {
                        // Full: let the consumer have what we have, then wait.
                        self.producer.publish(&ring, chan.parker());
                        reserve(
                            chan,
                            &self._claim,
                            &mut self.producer,
                            &mut self.liveness,
                            self.strategy,
                            msg.len(),
                            None,
                        )?
                        .ok_or_else(|| no_room(chan))?
                    }
                };
                write_reserved(&ring, r, msg)?;
                self.producer.commit(&ring, r);
                n += 1;
            }
        })();
        self.producer.publish(&ring, chan.parker());
        result.map(|()| n)
    }

    /// Sends `msg`, waiting for room as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::Disconnected`] if the ring is full and the
    /// consumer closed its end or died; [`Error::Corrupt`]; [`Error::InvalidArgument`] in
    /// a child forked after this end was made (the role is still the parent's).
    #[inline(always)]
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        match self.send_by(msg, None)? {
            true => Ok(()),
            false => Err(no_room(&self.chan)),
        }
    }

    /// Sends `msg`, waiting for room up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Sender::send`].
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        match self.send_by(msg, Instant::now().checked_add(timeout))? {
            true => Ok(()),
            false => Err(no_room(&self.chan)),
        }
    }

    /// Sends `msg` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] with the message if there is no room;
    /// [`TrySendError::Disconnected`] if there is none and the consumer is gone.
    pub fn try_send<'m>(&mut self, msg: &'m [u8]) -> Result<(), TrySendError<&'m [u8]>> {
        match self.send_by(msg, Some(Instant::now())) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TrySendError::Full(msg)),
            Err(e @ Error::Disconnected { .. }) => Err(TrySendError::Disconnected(msg, e)),
            Err(e) => Err(TrySendError::Failed(e)),
        }
    }

    /// Sends a value of a typed channel.
    ///
    /// # Errors
    ///
    /// As for [`Sender::send`].
    // Always inlined, as `send` is: the value's size is then known when compiling, and its
    // copy is a few moves instead of a call to `memcpy`.
    #[inline(always)]
    pub fn send_value<T: Plain>(&mut self, value: &T) -> Result<()> {
        self.send(bytemuck::bytes_of(value))
    }

    /// Sends a value of a typed channel, waiting for room up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Sender::send`].
    pub fn send_value_timeout<T: Plain>(&mut self, value: &T, timeout: Duration) -> Result<()> {
        self.send_timeout(bytemuck::bytes_of(value), timeout)
    }

    /// Sends a value of a typed channel if there is room now.
    ///
    /// # Errors
    ///
    /// As for [`Sender::try_send`], with the value given back.
    pub fn try_send_value<T: Plain>(&mut self, value: &T) -> Result<(), TrySendError<T>> {
        self.try_send(bytemuck::bytes_of(value))
            .map_err(|e| match e {
                TrySendError::Full(_) => TrySendError::Full(*value),
                TrySendError::Disconnected(_, e) => TrySendError::Disconnected(*value, e),
                TrySendError::Failed(e) => TrySendError::Failed(e),
            })
    }

    /// Lends room for a message of `len` bytes, waiting as long as it takes; write it in
    /// place and [`commit`](Loan::commit) it.
    ///
    /// # Errors
    ///
    /// As for [`Sender::send`].
    #[inline(always)]
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>> {
        self.loan_by(len, None)
    }

    /// Lends room for `len` bytes, waiting until `deadline`: the work of
    /// [`loan`](Self::loan) and [`loan_timeout`](Self::loan_timeout).
    #[inline(always)]
    fn loan_by(&mut self, len: usize, deadline: Option<Instant>) -> Result<Loan<'_>> {
        let Some(reserved) = self.reserve_by(len, deadline)? else {
            return Err(no_room(&self.chan));
        };
        Ok(Loan {
            chan: &self.chan,
            producer: &mut self.producer,
            ring: self.chan.ring(),
            reserved,
        })
    }

    /// Room for `len` bytes: the fast path (room now) inlined into the caller, so that
    /// the reservation stays in registers (a `Reserved` passed through memory costs a
    /// stall behind the ring's stores); waiting is out of line.
    #[inline(always)]
    fn reserve_by(&mut self, len: usize, deadline: Option<Instant>) -> Result<Option<Reserved>> {
        let chan = &*self.chan;
        let fast = match len <= chan.geometry().max_message as usize && !self._claim.inherited() {
            true => self
                .producer
                .try_reserve(&chan.ring(), len as u32, chan.parker()),
            false => Ok(None),
        };
        match fast {
            Ok(Some(r)) => Ok(Some(r)),
            _ => reserve(
                chan,
                &self._claim,
                &mut self.producer,
                &mut self.liveness,
                self.strategy,
                len,
                deadline,
            ),
        }
    }

    /// Lends room for a message of `len` bytes, waiting for room up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Sender::send`].
    pub fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<Loan<'_>> {
        self.loan_by(len, Instant::now().checked_add(timeout))
    }

    /// Lends room for a message of `len` bytes if there is room now (`None` if not).
    ///
    /// # Errors
    ///
    /// As for [`Sender::send`].
    pub fn try_loan(&mut self, len: usize) -> Result<Option<Loan<'_>>> {
        Ok(self
            .reserve_by(len, Some(Instant::now()))?
            .map(|reserved| Loan {
                chan: &self.chan,
                producer: &mut self.producer,
                ring: self.chan.ring(),
                reserved,
            }))
    }

    /// Sends the message of a loan that [`Loan::detach`] detached from this sender.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (and nothing is sent) if the loan came from another
    /// sender, or is stale: this sender sent a message since it was made. As for
    /// [`Sender::send`] in a child forked after this end was made.
    pub fn commit_detached(&mut self, loan: DetachedLoan) -> Result<()> {
        let chan = &*self.chan;
        usable(&self._claim, chan)?;
        if !Arc::ptr_eq(&loan.chan, &self.chan) {
            return Err(Error::InvalidArgument {
                what: format!(
                    "this loan is of another sender than this one of {}",
                    chan.name()
                ),
            });
        }
        if loan.tail != self.producer.position() || loan.sent != self.producer.sent() {
            return Err(Error::InvalidArgument {
                what: format!(
                    "this loan of {} is stale: the sender sent a message after the loan was made, which may have written over its room",
                    chan.name()
                ),
            });
        }
        let ring = chan.ring();
        self.producer.commit(&ring, loan.reserved);
        self.producer.publish(&ring, chan.parker());
        Ok(())
    }

    /// Closes the producer's end (as dropping the sender does).
    pub fn close(self) {}
}

fn too_large(chan: &sys::Channel, len: usize) -> Error {
    Error::MessageTooLarge {
        name: chan.name().to_string(),
        len,
        max: chan.geometry().max_message as usize,
    }
}

/// How often a waiting side asks the kernel whether its peer still lives (a system call),
/// at most, when it is not about to sleep anyway.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// When a side last asked whether its peer lives: the question costs a system call, so a
/// side that polls an empty (or full) ring asks at most every [`CHECK_EVERY`].
#[derive(Debug, Default)]
struct Liveness {
    next: Option<Instant>,
    /// Set by a look from outside (`wait_any`) that found the peer dead: the next check is
    /// due at once.
    found_dead: std::sync::atomic::AtomicBool,
}

impl Liveness {
    fn due(&mut self) -> bool {
        if self.found_dead.swap(false, Relaxed) {
            return true;
        }
        let now = Instant::now();
        if self.next.is_some_and(|n| now < n) {
            return false;
        }
        self.next = now.checked_add(CHECK_EVERY);
        true
    }
}

/// Why the stream's peer in `role` will do nothing more, if so (see [`gone`]).
fn peer_gone(chan: &sys::Channel, role: Role, liveness: &mut Liveness) -> Option<Error> {
    let ctl = chan.ring().ctl;
    let state = match role {
        Role::Producer => &ctl.producer,
        Role::Consumer => &ctl.consumer,
    };
    gone(chan, state, role.index(), role.word(), liveness)
}

/// Why the side with state word `state`, playing `role` (`peer` in messages), will do
/// nothing more, if so: it closed its end, or died. A clean close is seen at once; a death
/// when the liveness check is due.
fn gone(
    chan: &sys::Channel,
    state: &crate::atomic::AtomicU32,
    role: u16,
    peer: &'static str,
    liveness: &mut Liveness,
) -> Option<Error> {
    let died = match state.load(Acquire) {
        CLOSED => false,
        CONNECTED if liveness.due() && !chan.role_alive(role) => true,
        _ => return None,
    };
    Some(Error::Disconnected {
        name: chan.name().to_string(),
        peer,
        died,
    })
}

/// The error for a role (which writes to the channel) asked of a handle opened read-only.
#[cold]
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
pub(crate) fn read_only(name: &Name) -> Error {
    Error::denied(format!(
        "{name} is open read-only here, and this role would write to it"
    ))
}

/// The timeout error for `what` on `chan` (out of line: built only when it is returned,
/// so that the paths that wait, and `try_` calls that find nothing, allocate nothing).
#[cold]
#[inline(never)]
pub(crate) fn timed_out(chan: &sys::Channel, what: &str) -> Error {
    Error::Timeout {
        what: format!("{what} on the channel {}", chan.name()),
    }
}

fn no_room(chan: &sys::Channel) -> Error {
    timed_out(chan, "room")
}

/// What becomes of a message of another size for a typed receive of a stream or a
/// subscriber.
const PASSED_OVER: &str = "it was passed over";

/// `what` (a message, value) of `len` bytes, longer than the caller's buffer of `room`, and
/// `then`: what becomes of it.
#[cold]
#[inline(never)]
fn does_not_fit(chan: &sys::Channel, what: &str, len: usize, room: usize, then: &str) -> Error {
    Error::InvalidArgument {
        what: format!(
            "{what} in {} has {len} bytes, more than the buffer's {room}; {then}",
            chan.name()
        ),
    }
}

fn no_message(chan: &sys::Channel) -> Error {
    timed_out(chan, "a message")
}

/// Reserves room for `len` bytes, waiting until `deadline` (`Some(now)`: not at all);
/// `None` if the deadline passed first.
#[inline(never)]
fn reserve(
    chan: &sys::Channel,
    claim: &sys::Claim,
    producer: &mut Producer,
    liveness: &mut Liveness,
    strategy: WaitStrategy,
    len: usize,
    deadline: Option<Instant>,
) -> Result<Option<Reserved>> {
    usable(claim, chan)?;
    if len > chan.geometry().max_message as usize {
        return Err(too_large(chan, len));
    }
    let ring = chan.ring();
    loop {
        if let Some(r) = producer
            .try_reserve(&ring, len as u32, chan.parker())
            .map_err(|e| corrupt(chan, e))?
        {
            return Ok(Some(r));
        }
        if let Some(e) = peer_gone(chan, Role::Consumer, liveness) {
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d)
            || !producer.wait(&ring, strategy, chan.parker(), deadline)
        {
            return Ok(None);
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self._claim.inherited() {
            // A forked child's copy: the channel end is still its parent's.
            return;
        }
        let ring = self.chan.ring();
        ring.ctl.producer.store(CLOSED, Release);
        std::sync::atomic::fence(SeqCst);
        self.chan.parker().unpark(&ring.ctl.tail, u32::MAX);
    }
}

/// The consumer of a stream. Dropping it closes its end cleanly.
pub struct Receiver {
    chan: Arc<sys::Channel>,
    consumer: Consumer,
    liveness: Liveness,
    strategy: WaitStrategy,
    _claim: sys::Claim,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("name", self.chan.name())
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// A received message, read in place in the ring. Dropping it gives its room back to the
/// producer.
pub struct Message<'a> {
    chan: &'a Arc<sys::Channel>,
    // A copy, made with the message: a ring made from `chan` at each read measured 40 ns
    // slower per 64 B round trip (docs/BENCHMARKS.md, 2026-11-28).
    ring: Ring<'a>,
    frame: Frame,
    /// The consumer to give the frame back through on drop (`None` inside a batch, which
    /// gives all of its frames back at once).
    consumer: Option<&'a mut Consumer>,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("len", &self.len()).finish()
    }
}

impl Message<'_> {
    /// The message's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.frame.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.frame.len == 0
    }

    /// Copies `buf.len()` bytes from `offset` in the message.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if they are not inside the message.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        read_within(&self.ring, self.frame, offset, buf)
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.append_to(&mut v);
        v
    }

    /// Appends the message to `buf` (no allocation once `buf` has room).
    pub fn append_to(&self, buf: &mut Vec<u8>) {
        self.ring.append_to(self.frame.offset, self.len(), buf);
    }

    /// Leaves the message first in the channel, as if it had not been received: the next
    /// receive returns it again (as `MSG_PEEK` does for a socket). For a caller that finds,
    /// say, that it has no room for the message yet.
    pub fn keep(mut self) {
        self.consumer = None;
    }

    /// The message's first byte, for reading in place. It stays valid while the message
    /// lives; another process that may open the channel could write these bytes, so never
    /// make a reference to them that you rely on.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ring.at(self.frame.offset)
    }

    /// Ends the borrow of the receiver but leaves the message unconsumed, first in the
    /// channel: for callers that cannot hold the borrow across calls (a binding to another
    /// language). [`Receiver::consume_detached`] consumes it once it has been read.
    ///
    /// ```no_run
    /// # fn main() -> filemap::Result<()> {
    /// # let stream = filemap::Options::new().open_stream("Local\\Frames")?;
    /// let mut rx = stream.receiver()?;
    /// let msg = rx.recv()?.detach(); // `rx` is free again; the message stays first
    /// let mut head = [0u8; 6];
    /// msg.read_at(0, &mut head)?; // ... read later, in place
    /// rx.consume_detached(msg)?; // now the producer may write over it
    /// # Ok(())
    /// # }
    /// ```
    pub fn detach(mut self) -> DetachedMessage {
        let at = self.consumer.take().map(|c| (c.position(), c.consumed()));
        DetachedMessage {
            chan: Arc::clone(self.chan),
            frame: self.frame,
            at,
        }
    }
}

/// A received message that is not consumed yet, without a borrow of its [`Receiver`]
/// ([`Message::detach`]). It keeps the channel mapped, so [`as_ptr`](Self::as_ptr) stays
/// valid for as long as it lives; the producer leaves the message's bytes alone until
/// [`Receiver::consume_detached`] consumes it. Dropped unconsumed, the message stays
/// first in the channel, as [`Message::keep`] leaves it.
pub struct DetachedMessage {
    chan: Arc<sys::Channel>,
    frame: Frame,
    /// The consumer's position and count when the message was received: it is still the
    /// next message while both are unchanged.
    at: Option<(u32, u64)>,
}

impl fmt::Debug for DetachedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedMessage")
            .field("name", self.chan.name())
            .field("len", &self.len())
            .finish()
    }
}

impl DetachedMessage {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.frame.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.frame.len == 0
    }

    /// Copies `buf.len()` bytes from `offset` in the message.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if they are not inside the message.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        read_within(&self.chan.ring(), self.frame, offset, buf)
    }

    /// The message's first byte, for reading in place, as [`Message::as_ptr`]. It stays
    /// valid (mapped) for as long as this value lives; once the message is consumed, the
    /// bytes may belong to another message.
    pub fn as_ptr(&self) -> *const u8 {
        self.chan.ring().at(self.frame.offset)
    }
}

impl Drop for Message<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            // The room goes back in batches (a store on the producer's side of the cache
            // per message costs about as much as the rest of a small message), and
            // whenever the ring runs empty (in `next`).
            if c.consume(self.frame) {
                release(self.chan, c, self.frame.len);
            }
        }
    }
}

/// Gives a consumer's frames back (out of line: once per batch, not per message).
#[inline(never)]
fn release(chan: &sys::Channel, c: &mut Consumer, len: u32) {
    c.release_after(len, &chan.ring(), chan.parker());
}

impl Receiver {
    /// What [`wait_any`](crate::wait_any) looks at and sleeps on.
    pub(crate) fn readiness(&self) -> Readiness<'_> {
        Readiness {
            chan: &self.chan,
            liveness: Some(&self.liveness),
            side: Side::Stream {
                head: self.consumer.position(),
            },
        }
    }

    /// How a blocking receive waits for a message.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.chan.name()
    }

    /// The next message's frame, waiting until `deadline`; `None` if it passed first (no
    /// error value is made for that here: a `try_recv` on an empty ring allocates
    /// nothing).
    #[inline(always)]
    fn frame(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>> {
        let chan = &*self.chan;
        // The fast path (a frame is ready), inlined into the caller; waiting is out of line.
        let fast = match self._claim.inherited() {
            false => self.consumer.try_peek(&chan.ring()),
            true => Ok(None),
        };
        let frame = match fast {
            Ok(Some(frame)) => frame,
            _ => match next(
                chan,
                &self._claim,
                &mut self.consumer,
                &mut self.liveness,
                self.strategy,
                deadline,
            )? {
                Some(frame) => frame,
                None => return Ok(None),
            },
        };
        Ok(Some(frame))
    }

    /// The message in `frame`, which [`frame`](Self::frame) returned.
    #[inline(always)]
    fn message(&mut self, frame: Frame) -> Message<'_> {
        Message {
            chan: &self.chan,
            ring: self.chan.ring(),
            frame,
            consumer: Some(&mut self.consumer),
        }
    }

    /// Consumes a message that [`Message::detach`] detached from this receiver.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (and nothing is consumed) if the message came from
    /// another receiver, or is stale: this receiver consumed a message since it was
    /// received (the detached one among them, received again). As for [`Receiver::recv`]
    /// in a child forked after this end was made.
    pub fn consume_detached(&mut self, m: DetachedMessage) -> Result<()> {
        let chan = &*self.chan;
        usable(&self._claim, chan)?;
        if !Arc::ptr_eq(&m.chan, &self.chan) {
            return Err(Error::InvalidArgument {
                what: format!(
                    "this message is of another receiver than this one of {}",
                    chan.name()
                ),
            });
        }
        if m.at != Some((self.consumer.position(), self.consumer.consumed())) {
            return Err(Error::InvalidArgument {
                what: format!(
                    "this message of {} is stale: the receiver consumed a message after it was received",
                    chan.name()
                ),
            });
        }
        if self.consumer.consume(m.frame) {
            release(chan, &mut self.consumer, m.frame.len);
        }
        Ok(())
    }

    /// Receives the next message, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the producer has closed its end (or died) and every
    /// message it sent has been received; [`Error::Corrupt`]; [`Error::InvalidArgument`]
    /// in a child forked after this end was made (the role is still the parent's).
    // Always inlined: as a call, the message is returned through memory and dropped
    // through another call (64 B one way fell from about 200 to 72 M msg/s).
    #[inline(always)]
    pub fn recv(&mut self) -> Result<Message<'_>> {
        match self.frame(None)? {
            Some(frame) => Ok(self.message(frame)),
            None => Err(no_message(&self.chan)),
        }
    }

    /// Receives the next message into `buf`, waiting as long as it takes, and returns its
    /// length: the copy of [`recv`](Self::recv) + [`Message::read_at`], without a message
    /// value in between.
    ///
    /// That makes it the cheaper copy in a function whose `?` converts filemap's error
    /// into another type: in `rx.recv()?.read_at(0, buf)?` the message lives across the
    /// conversion, a call that may unwind, so the compiler keeps the whole message in
    /// memory for the unwinding, a store per field and message (64 B in one thread: 6.3
    /// ns against 4.7 without the conversion, while `recv_into` costs 4.8 and about the
    /// same with it; `benches/hot_path.rs`, docs/BENCHMARKS.md).
    ///
    /// A message longer than `buf` is not received: it stays first in the channel, and the
    /// error states its length, so that a larger buffer can take it (as `ReadFile` on a
    /// message-mode pipe does, with `ERROR_MORE_DATA`, but without a partial read).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the message does not fit `buf`; as for
    /// [`Receiver::recv`].
    #[inline(always)]
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let frame = match self.frame(None)? {
            Some(frame) => frame,
            None => return Err(no_message(&self.chan)),
        };
        let len = frame.len as usize;
        let Some(dst) = buf.get_mut(..len) else {
            let then = "it stays in the channel";
            return Err(does_not_fit(
                &self.chan,
                "the next message",
                len,
                buf.len(),
                then,
            ));
        };
        // The frame is inside the ring (`try_peek` checked it), so this copies; an error,
        // not a panic, otherwise (see `Ring::read`).
        let ring = self.chan.ring();
        if !ring.read(frame.offset, dst) {
            return Err(out_of_range(
                frame.offset as usize,
                len,
                ring.geometry.capacity as usize,
            ));
        }
        if self.consumer.consume(frame) {
            release(&self.chan, &mut self.consumer, frame.len);
        }
        Ok(len)
    }

    /// Receives the next message, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Receiver::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>> {
        match self.frame(Instant::now().checked_add(timeout))? {
            Some(frame) => Ok(self.message(frame)),
            None => Err(no_message(&self.chan)),
        }
    }

    /// Receives the next message if there is one (`None` if the ring is empty).
    ///
    /// # Errors
    ///
    /// As for [`Receiver::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Message<'_>>> {
        Ok(self
            .frame(Some(Instant::now()))?
            .map(|frame| self.message(frame)))
    }

    /// Receives up to `max` messages at once, waiting for the first as long as it takes,
    /// and hands each to `f` in order; their room goes back to the producer together,
    /// after the last (one release store and wake-up check per batch), and every 256
    /// messages in a longer batch (so that a consumer killed in a batch leaves no more
    /// messages to receive again than one that receives them one by one). Returns how
    /// many.
    ///
    /// For small messages, keep what `f` may fail with rather than drop each result: a
    /// `let _ = m.read_at(..)` calls the error's drop for every message, which cost 64 B
    /// messages a tenth of their rate (docs/BENCHMARKS.md).
    ///
    /// ```no_run
    /// # fn main() -> filemap::Result<()> {
    /// # let stream = filemap::Options::new().open_stream("Local\\Ticks")?;
    /// # let mut rx = stream.receiver()?;
    /// let (mut buf, mut failed) = ([0u8; 64], None);
    /// let n = rx.recv_batch(256, |m| {
    ///     if let Err(e) = m.read_at(0, &mut buf[..m.len().min(64)]) {
    ///         failed = Some(e);
    ///     }
    /// })?;
    /// if let Some(e) = failed {
    ///     return Err(e);
    /// }
    /// # let _ = n;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Receiver::recv`].
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&Message<'_>)) -> Result<usize> {
        let chan = &*self.chan;
        let ring = chan.ring();
        let frame = next(
            chan,
            &self._claim,
            &mut self.consumer,
            &mut self.liveness,
            self.strategy,
            None,
        )?
        .ok_or_else(|| no_message(chan))?;
        // One message, whose frame changes: `f` takes a reference, so a message made anew
        // for each frame was written out to the stack whole every time.
        let mut msg = Message {
            chan: &self.chan,
            ring,
            frame,
            consumer: None,
        };
        f(&msg);
        let _ = self.consumer.consume(frame);
        let mut n = 1;
        // The last frame's length: what a flowing consumer compares the producer's
        // progress with (`tail_moves_soon`).
        let mut last = frame.len;
        loop {
            // Room goes back at the end of the batch (below), and inside a long one only
            // every RELEASE_BATCH messages, which bounds what a consumer killed in it
            // leaves to be received again.
            if self.consumer.batch_done() {
                release(chan, &mut self.consumer, last);
            }
            if n >= max {
                break;
            }
            let ready = self.consumer.take_ready(&ring, max - n, |fr| {
                msg.frame = fr;
                last = fr.len;
                f(&msg);
            });
            n += ready;
            if ready > 0 {
                continue;
            }
            // At the last `tail` seen, or at a skip frame: the slow path.
            match self
                .consumer
                .try_peek(&ring)
                .map_err(|e| corrupt(chan, e))?
            {
                Some(fr) => {
                    msg.frame = fr;
                    last = fr.len;
                    f(&msg);
                    let _ = self.consumer.consume(fr);
                    n += 1;
                }
                None => break,
            }
        }
        self.consumer.release_after(last, &ring, chan.parker());
        Ok(n)
    }

    /// Receives a value of a typed channel.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] if the message is not the size of `T` (it is passed over: the
    /// next receive gets the message after it); as for [`Receiver::recv`].
    // Always inlined, as `recv` is (see there), and without a message value (as
    // `recv_into`): the size is then known when compiling, and the copy is a few moves
    // into the value's registers. Through `recv` and `read_at`, a `[u64; 8]` (every word
    // used) cost 9.0 ns to receive in one thread; this way, 4.7 (benches/hot_path.rs,
    // docs/BENCHMARKS.md).
    #[inline(always)]
    pub fn recv_value<T: Plain>(&mut self) -> Result<T> {
        match self.value_by(None)? {
            Some(value) => Ok(value),
            None => Err(no_message(&self.chan)),
        }
    }

    /// Receives a value of a typed channel, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Receiver::recv_value`].
    pub fn recv_value_timeout<T: Plain>(&mut self, timeout: Duration) -> Result<T> {
        match self.value_by(Instant::now().checked_add(timeout))? {
            Some(value) => Ok(value),
            None => Err(no_message(&self.chan)),
        }
    }

    /// Receives a value of a typed channel if there is one (`None` if the ring is empty).
    ///
    /// # Errors
    ///
    /// As for [`Receiver::recv_value`].
    pub fn try_recv_value<T: Plain>(&mut self) -> Result<Option<T>> {
        self.value_by(Some(Instant::now()))
    }

    /// The next message as a value of `T`, waiting until `deadline`; `None` if it passed
    /// first.
    #[inline(always)]
    fn value_by<T: Plain>(&mut self, deadline: Option<Instant>) -> Result<Option<T>> {
        let frame = match self.frame(deadline)? {
            Some(frame) => frame,
            None => return Ok(None),
        };
        let mut value = T::zeroed();
        let bytes = bytemuck::bytes_of_mut(&mut value);
        if frame.len as usize != bytes.len() {
            // Passed over, so that the next receive goes on with the next message.
            if self.consumer.consume(frame) {
                release(&self.chan, &mut self.consumer, frame.len);
            }
            let len = frame.len as usize;
            return Err(not_a_value::<T>(&self.chan, "message", len, PASSED_OVER));
        }
        // Inside the ring, as in `recv_into`.
        let ring = self.chan.ring();
        if !ring.read(frame.offset, bytes) {
            return Err(out_of_range(
                frame.offset as usize,
                bytes.len(),
                ring.geometry.capacity as usize,
            ));
        }
        if self.consumer.consume(frame) {
            release(&self.chan, &mut self.consumer, frame.len);
        }
        Ok(Some(value))
    }

    /// Closes the consumer's end (as dropping the receiver does).
    pub fn close(self) {}
}

/// The error for `what` (a message, value, request or reply) of `len` bytes where a value
/// of `T` was expected, and `then`: what became of it (out of line: the per-message paths
/// only branch to it).
#[cold]
#[inline(never)]
fn not_a_value<T>(chan: &sys::Channel, what: &str, len: usize, then: &str) -> Error {
    Error::Incompatible {
        name: chan.name().to_string(),
        reason: format!(
            "a {what} of {len} bytes came where a {} of {} bytes was expected; {then}",
            std::any::type_name::<T>(),
            std::mem::size_of::<T>()
        ),
    }
}

/// A channel's receiving side inside [`wait_any`](crate::wait_any): "signalled" means that
/// its receive would not wait (a message, value, request or reply is there, or the writer
/// has gone, so that it would return [`Error::Disconnected`]). Nothing is consumed: the
/// caller receives after the wait.
// `pub` only because the backends' `WaitRef` is; the module is private, so it is never
// nameable outside the crate.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
pub struct Readiness<'a> {
    chan: &'a sys::Channel,
    /// The receiving side's liveness checks (`None` for a server: clients come and go).
    liveness: Option<&'a Liveness>,
    side: Side<'a>,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
enum Side<'a> {
    /// A stream receiver whose next frame is at `head`.
    Stream { head: u32 },
    /// A broadcast subscriber whose next message is number `seen`, or a latest-value reader
    /// whose last value read is version `seen`, with its sleeping bit: ready once
    /// `published` moves past it.
    Slots { seen: u64, bit: u64 },
    /// A request/reply client in `slot`, ready once the state word reads `reply` (or with
    /// no request `pending`); `seen` keeps the word as read before the last look.
    Client {
        slot: u32,
        reply: u32,
        pending: bool,
        seen: &'a crate::atomic::AtomicU32,
    },
    /// A request/reply server; `seen` keeps the doorbell as read before the last look for
    /// requests, which is what a sleep waits to change.
    Server { seen: &'a crate::atomic::AtomicU32 },
}

#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
impl<'a> Readiness<'a> {
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn chan(&self) -> &'a sys::Channel {
        self.chan
    }

    /// The word that a sleeper sleeps on and the value it sleeps while: a stream's `tail`
    /// at our position, or a broadcast's `wake` (the low half of `published`) at our next
    /// number.
    pub(crate) fn word(&self) -> (&'a crate::atomic::AtomicU32, u32) {
        match self.side {
            Side::Stream { head } => (&self.chan.ring().ctl.tail, head),
            Side::Slots { seen, .. } => (&self.chan.slots().ctl.wake, seen as u32),
            Side::Server { seen } => (&self.chan.clients().ctl.doorbell, seen.load(Relaxed)),
            Side::Client { slot, seen, .. } => {
                (self.chan.clients().state(slot), seen.load(Relaxed))
            }
        }
    }

    /// Whether a receive would not wait.
    pub(crate) fn ready(&self) -> bool {
        let writer = match self.side {
            Side::Stream { head } => {
                let ctl = self.chan.ring().ctl;
                if ctl.tail.load(Acquire) != head {
                    return true;
                }
                (&ctl.producer, Role::Producer.index())
            }
            Side::Slots { seen, .. } => {
                let ctl = self.chan.slots().ctl;
                // Not equal (rather than greater): a writer that restarted from an older
                // number is followed by the receive, which then waits as usual.
                if ctl.published.load(Acquire) != seen {
                    return true;
                }
                (&ctl.producer, kinds::WRITER)
            }
            Side::Client {
                slot,
                reply,
                pending,
                seen,
            } => {
                let c = self.chan.clients();
                let s = c.state(slot).load(Acquire);
                seen.store(s, Relaxed);
                // Another generation in our slot is corrupt: the wait would not wait either.
                if !pending || s == reply || s >> 2 != reply >> 2 {
                    return true;
                }
                (&c.ctl.server, kinds::WRITER)
            }
            Side::Server { seen } => {
                let c = self.chan.clients();
                // Acquire, and before the look: a request posted after the look rings a
                // doorbell that no longer reads `seen`, so the sleep does not miss it.
                seen.store(c.ctl.doorbell.load(Acquire), Relaxed);
                return (0..c.count).any(|slot| c.state(slot).load(Acquire) & 3 == rpc::REQUEST);
            }
        };
        match writer.0.load(Acquire) {
            CLOSED => true,
            CONNECTED if !self.chan.role_alive(writer.1) => {
                // So that the receive after the wait says so at once.
                if let Some(l) = self.liveness {
                    l.found_dead.store(true, Relaxed);
                }
                true
            }
            _ => false,
        }
    }

    /// Raises our "may sleep" flag (a stream's `rx_waiting`, a subscriber's bit in
    /// `sleeping`), and fences as a sleeper does.
    pub(crate) fn begin_sleep(&self) {
        match self.side {
            Side::Stream { .. } => self.chan.ring().ctl.rx_waiting.store(1, Relaxed),
            // No bit (a reader of a read-only mapping): nothing to raise, and no fence to
            // order it; it looks again every `poll_ms`.
            Side::Slots { bit: 0, .. } => return,
            Side::Slots { bit, .. } => {
                self.chan.slots().ctl.sleeping.fetch_or(bit, Relaxed);
            }
            Side::Server { .. } => self.chan.clients().ctl.server_waiting.store(1, Relaxed),
            Side::Client { slot, .. } => self.chan.clients().client_waiting(slot).store(1, Relaxed),
        }
        self.chan.parker().fence_slow();
    }

    /// How often a sleeper must look again because nothing wakes it when a message comes:
    /// a reader without a sleeping bit (of a read-only mapping) polls. `None`: woken.
    pub(crate) fn poll_ms(&self) -> Option<u64> {
        match self.side {
            Side::Slots { bit: 0, .. } => Some(seqlock::READ_ONLY_POLL.as_millis() as u64),
            _ => None,
        }
    }

    pub(crate) fn end_sleep(&self) {
        match self.side {
            Side::Stream { .. } => self.chan.ring().ctl.rx_waiting.store(0, Relaxed),
            Side::Slots { bit: 0, .. } => {}
            Side::Slots { bit, .. } => {
                self.chan.slots().ctl.sleeping.fetch_and(!bit, Relaxed);
            }
            Side::Server { .. } => self.chan.clients().ctl.server_waiting.store(0, Relaxed),
            Side::Client { slot, .. } => self.chan.clients().client_waiting(slot).store(0, Relaxed),
        }
    }
}

/// The next frame, waiting until `deadline` (`Some(now)`: not at all); `None` if it passed
/// first.
#[inline(never)]
fn next(
    chan: &sys::Channel,
    claim: &sys::Claim,
    consumer: &mut Consumer,
    liveness: &mut Liveness,
    strategy: WaitStrategy,
    deadline: Option<Instant>,
) -> Result<Option<Frame>> {
    usable(claim, chan)?;
    let ring = chan.ring();
    let trying = deadline.is_some_and(|d| Instant::now() >= d);
    loop {
        if let Some(f) = consumer.try_peek(&ring).map_err(|e| corrupt(chan, e))? {
            return Ok(Some(f));
        }
        // A producer in full flow refills the ring within a few hundred nanoseconds: look
        // again for a moment before giving room back and checking on the producer (a store
        // on its side of the cache and a clock read), unless only trying or asked to park.
        if !trying && strategy != WaitStrategy::Park && consumer.tail_moves_soon(&ring) {
            continue;
        }
        // Empty: give back the room of what was read before waiting (or returning).
        consumer.release(&ring, chan.parker());
        if let Some(e) = peer_gone(chan, Role::Producer, liveness) {
            // It may have sent more before it went: look once more.
            if let Some(f) = consumer.try_peek(&ring).map_err(|e| corrupt(chan, e))? {
                return Ok(Some(f));
            }
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d)
            || !consumer.wait(&ring, strategy, chan.parker(), deadline)
        {
            return Ok(None);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self._claim.inherited() {
            // A forked child's copy: the channel end is still its parent's.
            return;
        }
        let ring = self.chan.ring();
        self.consumer.release(&ring, self.chan.parker());
        ring.ctl.consumer.store(CLOSED, Release);
        std::sync::atomic::fence(SeqCst);
        self.chan.parker().unpark(&ring.ctl.head, u32::MAX);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use crate::{Namespace, Options};

    /// A batch tells the consumer the length of its last frame, which the flowing state
    /// compares the producer's progress with, not the length of its first.
    #[test]
    #[cfg_attr(miri, ignore = "makes a real stream: files and shared memory")]
    fn a_batch_remembers_its_last_frame() {
        let root = std::path::PathBuf::from(format!(
            "/dev/shm/filemap-unit-batch-{}",
            std::process::id()
        ));
        struct Remove(std::path::PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _clean = Remove(root.clone());
        let mut opts = Options::new();
        opts.namespace(Namespace::at(&root));
        let s = opts.create_stream("Local\\batch", 1 << 12, 256).unwrap();
        let (mut tx, mut rx) = (s.sender().unwrap(), s.receiver().unwrap());
        tx.send_all([&[1u8; 8][..], &[2; 8], &[3; 200]]).unwrap();
        assert_eq!(rx.recv_batch(10, |_| {}).unwrap(), 3);
        assert_eq!(rx.consumer.last_frame(), super::algo::frame_len(200));
    }
}
