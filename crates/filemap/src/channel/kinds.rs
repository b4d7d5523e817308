//! The other channel kinds: broadcast, latest value and request/reply. Their algorithms
//! are in `seqlock.rs` and `rpc.rs`; this is their API, with the same rules as
//! [`Stream`](super::Stream): named objects, roles held by lock, peers' deaths noticed
//! within [`Stream::LIVENESS_PERIOD`](super::Stream::LIVENESS_PERIOD).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::algo::{
    wait_as, Geometry, CLOSED, CONNECTED, KIND_BROADCAST, KIND_LATEST, KIND_REQUEST_REPLY,
    MAX_CLIENTS,
};
use super::rpc;
use super::seqlock::{self, Slots};
use super::{timed_out, type_of, Liveness, Plain, WaitStrategy};
use crate::sync::algo::Parker;
use crate::sys::{self, Disposition};
use crate::{Access, Error, Kind, Name, Options, Result};

/// The role of the writer side (publisher, writer, server); readers, subscribers and
/// clients take the roles from 2 on.
pub(super) const WRITER: u16 = 0;
const FIRST_PEER: u16 = 2;

fn typed(mut g: Geometry, t: (u32, u32, u64)) -> Geometry {
    (g.type_size, g.type_align, g.type_hash) = t;
    g
}

fn make(opts: &Options, name: &str, g: Geometry, d: Disposition) -> Result<Arc<sys::Channel>> {
    let name = Name::parse(name)?;
    g.check().map_err(|what| Error::InvalidArgument { what })?;
    let copts = opts.create_options()?;
    Ok(Arc::new(sys::Channel::create(
        opts.namespace_ref(),
        &name,
        copts,
        d,
        g,
    )?))
}

fn open(opts: &Options, name: &str, kind: Kind, access: Access) -> Result<Arc<sys::Channel>> {
    let name = Name::parse(name)?;
    Ok(Arc::new(sys::Channel::open(
        opts.namespace_ref(),
        &name,
        kind,
        access,
    )?))
}

fn check_type<T: Plain>(chan: &sys::Channel) -> Result<()> {
    let g = chan.geometry();
    let (size, align, hash) = type_of::<T>();
    if (g.type_size, g.type_align, g.type_hash) != (size, align, hash) {
        return Err(Error::Incompatible {
            name: chan.name().to_string(),
            reason: format!(
                "it carries {}, not {} ({size} bytes, aligned to {align})",
                if g.type_size == 0 {
                    "byte messages".to_owned()
                } else {
                    format!(
                        "messages of {} bytes, aligned to {}",
                        g.type_size, g.type_align
                    )
                },
                std::any::type_name::<T>()
            ),
        });
    }
    Ok(())
}

fn corrupt(chan: &sys::Channel, what: &str) -> Error {
    Error::Corrupt {
        path: chan.os_path(),
        reason: format!("its shared state is impossible: {what}"),
    }
}

fn too_large(chan: &sys::Channel, len: usize, max: u32) -> Error {
    Error::MessageTooLarge {
        name: chan.name().to_string(),
        len,
        max: max as usize,
    }
}

macro_rules! handle_common {
    ($t:ident) => {
        impl $t {
            /// The channel's name.
            pub fn name(&self) -> &Name {
                self.inner.name()
            }

            /// Whether the channel was there already: `false` if this handle created it.
            pub fn already_existed(&self) -> bool {
                !self.inner.created()
            }

            /// Where the channel lives in the file system (Linux).
            pub fn os_path(&self) -> PathBuf {
                self.inner.os_path()
            }

            /// The largest message in bytes.
            pub fn max_message(&self) -> usize {
                self.inner.geometry().max_message as usize
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("name", self.inner.name())
                    .finish_non_exhaustive()
            }
        }
    };
}

// ------------------------------------------------------------------------------------
// Broadcast

/// A named broadcast channel: one publisher, up to 64 subscribers at a time, each of
/// which reads every message. The publisher never waits: a subscriber that falls more
/// than `slots` messages behind loses the oldest, and is told how many.
pub struct Broadcast {
    inner: Arc<sys::Channel>,
}

handle_common!(Broadcast);

impl Options {
    /// Creates a broadcast channel with `slots` message slots (a power of two, 2 to
    /// 65536) of up to `max_message` bytes (at most 16 MiB), failing if a live one has
    /// the name.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`], [`Error::KindMismatch`], [`Error::InvalidArgument`].
    pub fn create_broadcast(&self, name: &str, slots: u32, max_message: u32) -> Result<Broadcast> {
        let g = Geometry::untyped(KIND_BROADCAST, slots, max_message, 0);
        make(self, name, g, Disposition::CreateNew).map(|inner| Broadcast { inner })
    }

    /// Opens the live broadcast channel under `name`, or creates it.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_broadcast`], except `AlreadyExists`.
    pub fn open_or_create_broadcast(
        &self,
        name: &str,
        slots: u32,
        max_message: u32,
    ) -> Result<Broadcast> {
        let g = Geometry::untyped(KIND_BROADCAST, slots, max_message, 0);
        make(self, name, g, Disposition::OpenOrCreate).map(|inner| Broadcast { inner })
    }

    /// Opens the live broadcast channel under `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::KindMismatch`], [`Error::Corrupt`].
    pub fn open_broadcast(&self, name: &str) -> Result<Broadcast> {
        open(self, name, Kind::Broadcast, Access::ReadWrite).map(|inner| Broadcast { inner })
    }

    /// Opens the live broadcast channel under `name` read-only: it needs only read
    /// permission on the channel, and its subscribers can never write to it (a buggy one
    /// cannot corrupt what the others read). Such a subscriber takes no role: it does not
    /// count against the 64 (nor among the peers that `info` shows), and, as it cannot ask
    /// the publisher to wake it, it looks for new messages every millisecond while it
    /// waits (a read-write subscriber is woken at once).
    ///
    /// # Errors
    ///
    /// As for [`Options::open_broadcast`]; [`Error::PermissionDenied`] without read
    /// permission.
    pub fn open_broadcast_read_only(&self, name: &str) -> Result<Broadcast> {
        open(self, name, Kind::Broadcast, Access::Read).map(|inner| Broadcast { inner })
    }

    /// Creates a broadcast channel of messages of type `T`.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_broadcast`].
    pub fn create_broadcast_of<T: Plain>(&self, name: &str, slots: u32) -> Result<Broadcast> {
        let t = type_of::<T>();
        let g = typed(Geometry::untyped(KIND_BROADCAST, slots, t.0, 0), t);
        make(self, name, g, Disposition::CreateNew).map(|inner| Broadcast { inner })
    }

    /// Opens the live broadcast channel of `T` under `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for another message type; as for [`Options::open_broadcast`].
    pub fn open_broadcast_of<T: Plain>(&self, name: &str) -> Result<Broadcast> {
        let b = self.open_broadcast(name)?;
        check_type::<T>(&b.inner)?;
        Ok(b)
    }

    /// Opens the live broadcast channel of `T` under `name` read-only (see
    /// [`Options::open_broadcast_read_only`]).
    ///
    /// # Errors
    ///
    /// As for [`Options::open_broadcast_of`].
    pub fn open_broadcast_read_only_of<T: Plain>(&self, name: &str) -> Result<Broadcast> {
        let b = self.open_broadcast_read_only(name)?;
        check_type::<T>(&b.inner)?;
        Ok(b)
    }
}

impl Broadcast {
    /// The number of message slots.
    pub fn slots_len(&self) -> u32 {
        self.inner.geometry().capacity
    }

    /// Whether this handle opened the channel read-only (it can only subscribe).
    pub fn is_read_only(&self) -> bool {
        !self.inner.writable()
    }

    /// Becomes the channel's publisher.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another live handle publishes; [`Error::PermissionDenied`]
    /// for a handle opened read-only.
    pub fn publisher(&self) -> Result<Publisher> {
        let w = SlotWriter::claim(&self.inner, "publisher")?;
        Ok(Publisher {
            p: seqlock::Publisher::attach(&self.inner.slots()),
            w,
        })
    }

    /// Becomes a subscriber, from the next message published on.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when 64 subscribers are connected (read-only handles make
    /// subscribers that do not count).
    pub fn subscriber(&self) -> Result<Subscriber> {
        let (bit, claim) = claim_reader(&self.inner, "subscriber (all 64 are taken)")?;
        Ok(Subscriber {
            sub: seqlock::Subscriber::attach(&self.inner.slots()),
            chan: self.inner.clone(),
            bit,
            strategy: WaitStrategy::SpinThenPark,
            spin: super::algo::Spin::new(),
            liveness: Liveness::default(),
            carried: 0,
            _claim: claim,
        })
    }
}

/// The writing side of a broadcast or latest-value channel, as both kinds share it: the
/// role, the state word, the sweep of dead readers' sleeping bits, and the clean close.
struct SlotWriter {
    chan: Arc<sys::Channel>,
    sweep: Instant,
    _claim: sys::Claim,
}

impl SlotWriter {
    fn claim(chan: &Arc<sys::Channel>, what: &'static str) -> Result<SlotWriter> {
        let claim = chan.claim(WRITER, what)?;
        let ctl = chan.slots().ctl;
        ctl.producer_pid.store(std::process::id(), Relaxed);
        ctl.producer.store(CONNECTED, Release);
        Ok(SlotWriter {
            chan: chan.clone(),
            sweep: Instant::now(),
            _claim: claim,
        })
    }

    /// The slots, once `len` is known to fit (and the role is this process's own).
    fn slots_for(&self, len: usize) -> Result<Slots<'_>> {
        super::usable(&self._claim, &self.chan)?;
        let s = self.chan.slots();
        if len > s.max as usize {
            return Err(too_large(&self.chan, len, s.max));
        }
        Ok(s)
    }

    /// After each write: clear the sleeping bits of readers that died, at most every
    /// 100 ms (each costs a futex wake per message until cleared).
    fn sweep(&mut self) {
        let ctl = self.chan.slots().ctl;
        let bits = ctl.sleeping.load(Relaxed);
        if bits == 0 || self.sweep.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.sweep = Instant::now();
        for i in 0..64u16 {
            if bits & (1 << i) != 0 && !self.chan.role_alive(FIRST_PEER + i) {
                ctl.sleeping.fetch_and(!(1u64 << i), Relaxed);
            }
        }
    }
}

impl Drop for SlotWriter {
    fn drop(&mut self) {
        if self._claim.inherited() {
            // A forked child's copy: the channel end is still its parent's.
            return;
        }
        let ctl = self.chan.slots().ctl;
        ctl.producer.store(CLOSED, Release);
        std::sync::atomic::fence(SeqCst);
        self.chan.parker().unpark(&ctl.wake, u32::MAX);
    }
}

/// Takes a free reader role (a broadcast subscriber or a latest-value reader) and returns
/// its sleeping bit, cleared of what a dead reader of the same role may have left. A
/// channel opened read-only gives no role and bit 0: such a reader writes nothing (see
/// [`seqlock::park`]).
fn claim_reader(chan: &sys::Channel, what: &'static str) -> Result<(u64, Option<sys::Claim>)> {
    if !chan.writable() {
        return Ok((0, None));
    }
    let (role, claim) = chan.claim_any(FIRST_PEER..FIRST_PEER + MAX_CLIENTS as u16, what)?;
    let bit = 1u64 << (role - FIRST_PEER);
    chan.slots().ctl.sleeping.fetch_and(!bit, Relaxed);
    Ok((bit, Some(claim)))
}

/// The publisher of a broadcast channel. Dropping it closes the channel cleanly.
pub struct Publisher {
    w: SlotWriter,
    p: seqlock::Publisher,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("name", self.w.chan.name())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes `msg` to every subscriber. Never waits.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::InvalidArgument`] in a child forked after this
    /// end was made (the role is still the parent's).
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        let s = self.w.slots_for(msg.len())?;
        self.p.publish(&s, msg, self.w.chan.parker());
        self.w.sweep();
        Ok(())
    }

    /// Publishes a value of a typed channel.
    ///
    /// # Errors
    ///
    /// As for [`Publisher::send`].
    pub fn send_value<T: Plain>(&mut self, value: &T) -> Result<()> {
        self.send(bytemuck::bytes_of(value))
    }

    /// Lends the next slot for a message of `len` bytes, to write in place (see
    /// [`SlotLoan`]) and publish with [`SlotLoan::commit`]. Never waits.
    ///
    /// # Errors
    ///
    /// As for [`Publisher::send`].
    pub fn loan(&mut self, len: usize) -> Result<SlotLoan<'_>> {
        let s = self.w.slots_for(len)?;
        let slot = self.p.lend(&s, len as u32);
        Ok(SlotLoan {
            w: &mut self.w,
            lender: Lender::Publisher(&mut self.p),
            slot,
            len: len as u32,
        })
    }
}

/// Room for one message (or value) in a broadcast's or latest-value channel's next slot,
/// to be written in place, piece by piece, and then published with
/// [`commit`](Self::commit): a large message built where it goes, without a buffer of its
/// own to copy from.
///
/// Each write goes into shared memory at once, as atomic 8-byte stores (readers racing it
/// throw away what they read, as they do for [`Publisher::send`]); bytes not written hold
/// whatever the slot held before. Dropped without a commit, nothing is published: the
/// next message goes to the same slot, and a broadcast subscriber a whole lap behind loses
/// the message that the slot held. Latest-value readers keep reading the value before.
pub struct SlotLoan<'a> {
    w: &'a mut SlotWriter,
    lender: Lender<'a>,
    slot: u64,
    len: u32,
}

/// Whose slot a [`SlotLoan`] is.
enum Lender<'a> {
    Publisher(&'a mut seqlock::Publisher),
    Writer(&'a mut seqlock::Writer),
}

impl fmt::Debug for SlotLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotLoan")
            .field("name", self.w.chan.name())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SlotLoan<'_> {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `data` at `offset` in the message.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if it does not fit in the loan.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        super::check_range(offset, data.len(), self.len())?;
        self.w.chan.slots().put(self.slot, offset, data);
        Ok(())
    }

    /// Publishes the message.
    pub fn commit(self) {
        let s = self.w.chan.slots();
        let parker = self.w.chan.parker();
        match self.lender {
            Lender::Publisher(p) => p.commit(&s, parker),
            Lender::Writer(v) => v.commit(&s, parker),
        }
        self.w.sweep();
    }
}

/// A subscriber of a broadcast channel.
pub struct Subscriber {
    chan: Arc<sys::Channel>,
    sub: seqlock::Subscriber,
    bit: u64,
    strategy: WaitStrategy,
    spin: super::algo::Spin,
    liveness: Liveness,
    /// Messages lost before one that a too small buffer refused: told with the next
    /// message received.
    carried: u64,
    /// The role (`None` for a channel opened read-only).
    _claim: Option<sys::Claim>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", self.chan.name())
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// What [`wait_any`](crate::wait_any) looks at and sleeps on.
    pub(crate) fn readiness(&self) -> super::Readiness<'_> {
        super::Readiness {
            chan: &self.chan,
            liveness: Some(&self.liveness),
            side: super::Side::Slots {
                seen: self.sub.next(),
                bit: self.bit,
            },
        }
    }

    /// How a blocking receive waits.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.chan.name()
    }

    /// The next message into `buf` (replacing its contents), waiting until `deadline`;
    /// returns how many messages were lost before it, or `None` if the deadline passed
    /// first (no error value is made for that here: an empty `try_recv` allocates
    /// nothing).
    fn next(
        &mut self,
        buf: &mut impl seqlock::Sink,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>> {
        let chan = &*self.chan;
        let s = chan.slots();
        loop {
            let seen = s.ctl.wake.load(Acquire);
            match self.sub.try_recv(&s, buf) {
                Ok(Some(lost)) => return Ok(Some(carry(&mut self.carried, lost, buf))),
                Ok(None) => {}
                Err(_) => return Err(corrupt(chan, "a broadcast slot")),
            }
            if let Some(e) = super::gone(
                chan,
                &s.ctl.producer,
                WRITER,
                "publisher",
                &mut self.liveness,
            ) {
                if let Ok(Some(lost)) = self.sub.try_recv(&s, buf) {
                    return Ok(Some(carry(&mut self.carried, lost, buf)));
                }
                return Err(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            let bit = self.bit;
            let woke = wait_as(
                self.strategy,
                &mut self.spin,
                deadline,
                || s.ctl.wake.load(Relaxed) != seen,
                || seqlock::park(s.ctl, bit, seen, chan.parker(), deadline),
            );
            if !woke {
                return Ok(None);
            }
        }
    }

    /// Receives the next message into `buf`, waiting as long as it takes. Returns how
    /// many messages this subscriber lost (written over before it read them) just before
    /// this one.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the publisher closed (or died) and every message was
    /// read; [`Error::Corrupt`].
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<u64> {
        self.next(buf, None)?
            .ok_or_else(|| timed_out(&self.chan, "a message"))
    }

    /// As [`Subscriber::recv`], waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Subscriber::recv`].
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u64> {
        self.next(buf, Instant::now().checked_add(timeout))?
            .ok_or_else(|| timed_out(&self.chan, "a message"))
    }

    /// As [`Subscriber::recv`], without waiting: `None` if no message is there.
    ///
    /// # Errors
    ///
    /// As for [`Subscriber::recv`].
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>> {
        self.next(buf, Some(Instant::now()))
    }

    /// Receives the next message into the start of `buf`, waiting as long as it takes:
    /// its length, and how many messages this subscriber lost just before it. The copy of
    /// [`recv`](Self::recv), into a buffer of your own.
    ///
    /// A message longer than `buf` is not received: it stays the next, and the error
    /// states its length, so that a larger buffer can take it (unless the publisher writes
    /// over it first: the next receive then counts it as lost).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the message does not fit `buf`; as for
    /// [`Subscriber::recv`].
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<(usize, u64)> {
        self.copy_by(seqlock::Buf::up_to(buf), None)?
            .ok_or_else(|| timed_out(&self.chan, "a message"))
    }

    /// As [`Subscriber::recv_into`], waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Subscriber::recv_into`].
    pub fn recv_into_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<(usize, u64)> {
        self.copy_by(
            seqlock::Buf::up_to(buf),
            Instant::now().checked_add(timeout),
        )?
        .ok_or_else(|| timed_out(&self.chan, "a message"))
    }

    /// As [`Subscriber::recv_into`], without waiting: `None` if no message is there.
    ///
    /// # Errors
    ///
    /// As for [`Subscriber::recv_into`].
    pub fn try_recv_into(&mut self, buf: &mut [u8]) -> Result<Option<(usize, u64)>> {
        self.copy_by(seqlock::Buf::up_to(buf), Some(Instant::now()))
    }

    /// As [`recv_into`](Self::recv_into), to memory that a `&mut [u8]` cannot stand for:
    /// a buffer of another runtime (Python's, C's), which that runtime's threads may write
    /// meanwhile. The message's words are written to `dst` with raw stores only, and no
    /// reference to the memory is made. Waits up to `timeout` (`None`: as long as it
    /// takes); `Ok(None)` if it passed first.
    ///
    /// On success the first `length` bytes hold the message; the rest of the `len`, and all
    /// of it after an error, hold nothing of use (a torn copy is written over before a
    /// receive returns).
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of `len` bytes until this returns, and no reference
    /// covers them meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`recv_into`](Self::recv_into): a message longer than `len` is not received.
    #[allow(unsafe_code)]
    pub unsafe fn recv_into_raw(
        &mut self,
        dst: *mut u8,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Option<(usize, u64)>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // SAFETY: the caller's promise, for as long as the sink lives (this call).
        self.copy_by(unsafe { seqlock::Raw::up_to(dst, len) }, deadline)
    }

    /// The next message into the start of `sink`, waiting until `deadline`: its length and
    /// the messages lost before it, or `None` if the deadline passed first.
    fn copy_by(
        &mut self,
        mut sink: impl seqlock::Fixed,
        deadline: Option<Instant>,
    ) -> Result<Option<(usize, u64)>> {
        let Some(lost) = self.next(&mut sink, deadline)? else {
            return Ok(None);
        };
        let len = fitted(&self.chan, &sink, "the next message", KEPT_NEXT)?;
        Ok(Some((len, lost)))
    }

    /// Receives a value of a typed channel, and how many were lost before it.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a message of another size; as for [`Subscriber::recv`].
    pub fn recv_value<T: Plain>(&mut self) -> Result<(T, u64)> {
        self.value_by(None)?
            .ok_or_else(|| timed_out(&self.chan, "a message"))
    }

    /// As [`Subscriber::recv_value`], waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; as for [`Subscriber::recv_value`].
    pub fn recv_value_timeout<T: Plain>(&mut self, timeout: Duration) -> Result<(T, u64)> {
        self.value_by(Instant::now().checked_add(timeout))?
            .ok_or_else(|| timed_out(&self.chan, "a message"))
    }

    /// As [`Subscriber::recv_value`], without waiting: `None` if no message is there.
    ///
    /// # Errors
    ///
    /// As for [`Subscriber::recv_value`].
    pub fn try_recv_value<T: Plain>(&mut self) -> Result<Option<(T, u64)>> {
        self.value_by(Some(Instant::now()))
    }

    /// The next message as a value of `T`, and how many were lost before it, waiting until
    /// `deadline`; `None` if it passed first. The slot's words are copied straight into
    /// the value.
    fn value_by<T: Plain>(&mut self, deadline: Option<Instant>) -> Result<Option<(T, u64)>> {
        let mut value = T::zeroed();
        let mut sink = seqlock::Buf::exact(bytemuck::bytes_of_mut(&mut value));
        let Some(lost) = self.next(&mut sink, deadline)? else {
            return Ok(None);
        };
        match sink.got {
            Ok(_) => Ok(Some((value, lost))),
            Err(len) => {
                // Passed over; what was lost before it is told with the next message.
                self.carried = self.carried.saturating_add(lost);
                Err(super::not_a_value::<T>(
                    &self.chan,
                    "message",
                    len,
                    super::PASSED_OVER,
                ))
            }
        }
    }
}

/// What a subscriber tells of `lost`, the messages lost before the one that `sink` was
/// just given: nothing if the sink refused it (they are told with it when it is
/// received), otherwise them and any carried from such a refusal.
fn carry(carried: &mut u64, lost: u64, sink: &impl seqlock::Sink) -> u64 {
    if sink.refused() {
        *carried = carried.saturating_add(lost);
        return 0;
    }
    lost.saturating_add(std::mem::take(carried))
}

/// The length of `what` that `sink` took, or the error for one too long for it, and
/// `then`: what becomes of it.
fn fitted(
    chan: &sys::Channel,
    sink: &impl seqlock::Fixed,
    what: &str,
    then: &str,
) -> Result<usize> {
    let room = sink.room();
    sink.got()
        .map_err(|len| super::does_not_fit(chan, what, len, room, then))
}

/// What becomes of a message too long for the buffer of a subscriber's `recv_into`.
const KEPT_NEXT: &str = "it stays the next, unless written over first";
/// What becomes of a latest value too long for the buffer, or of another size.
const NOT_READ: &str = "it stays the latest, unread";

// ------------------------------------------------------------------------------------
// Latest value

/// A named latest-value channel (a "blackboard"): one writer publishes a value, readers
/// always get a whole copy of the latest one, never a torn one.
pub struct Latest {
    inner: Arc<sys::Channel>,
}

handle_common!(Latest);

impl Options {
    /// Creates a latest-value channel for values of up to `max_message` bytes (at most
    /// 16 MiB), failing if a live one has the name.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`], [`Error::KindMismatch`], [`Error::InvalidArgument`].
    pub fn create_latest(&self, name: &str, max_message: u32) -> Result<Latest> {
        let g = Geometry::untyped(KIND_LATEST, 2, max_message, 0);
        make(self, name, g, Disposition::CreateNew).map(|inner| Latest { inner })
    }

    /// Opens the live latest-value channel under `name`, or creates it.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_latest`], except `AlreadyExists`.
    pub fn open_or_create_latest(&self, name: &str, max_message: u32) -> Result<Latest> {
        let g = Geometry::untyped(KIND_LATEST, 2, max_message, 0);
        make(self, name, g, Disposition::OpenOrCreate).map(|inner| Latest { inner })
    }

    /// Opens the live latest-value channel under `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::KindMismatch`], [`Error::Corrupt`].
    pub fn open_latest(&self, name: &str) -> Result<Latest> {
        open(self, name, Kind::Latest, Access::ReadWrite).map(|inner| Latest { inner })
    }

    /// Opens the live latest-value channel under `name` read-only: it needs only read
    /// permission on the channel, and its readers can never write to it. Such a reader
    /// takes no role: it does not count against the 64 (nor among the peers that `info`
    /// shows), and, as it cannot ask the writer to wake it, [`LatestReader::wait_newer`]
    /// looks for a newer value every millisecond (a read-write reader is woken at once).
    ///
    /// # Errors
    ///
    /// As for [`Options::open_latest`]; [`Error::PermissionDenied`] without read
    /// permission.
    pub fn open_latest_read_only(&self, name: &str) -> Result<Latest> {
        open(self, name, Kind::Latest, Access::Read).map(|inner| Latest { inner })
    }

    /// Creates a latest-value channel of values of type `T`.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_latest`].
    pub fn create_latest_of<T: Plain>(&self, name: &str) -> Result<Latest> {
        let t = type_of::<T>();
        let g = typed(Geometry::untyped(KIND_LATEST, 2, t.0, 0), t);
        make(self, name, g, Disposition::CreateNew).map(|inner| Latest { inner })
    }

    /// Opens the live latest-value channel of `T` under `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for another type; as for [`Options::open_latest`].
    pub fn open_latest_of<T: Plain>(&self, name: &str) -> Result<Latest> {
        let l = self.open_latest(name)?;
        check_type::<T>(&l.inner)?;
        Ok(l)
    }

    /// Opens the live latest-value channel of `T` under `name` read-only (see
    /// [`Options::open_latest_read_only`]).
    ///
    /// # Errors
    ///
    /// As for [`Options::open_latest_of`].
    pub fn open_latest_read_only_of<T: Plain>(&self, name: &str) -> Result<Latest> {
        let l = self.open_latest_read_only(name)?;
        check_type::<T>(&l.inner)?;
        Ok(l)
    }
}

impl Latest {
    /// Whether this handle opened the channel read-only (it can only read).
    pub fn is_read_only(&self) -> bool {
        !self.inner.writable()
    }

    /// Becomes the writer.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another live handle writes; [`Error::PermissionDenied`] for
    /// a handle opened read-only.
    pub fn writer(&self) -> Result<LatestWriter> {
        let w = SlotWriter::claim(&self.inner, "writer")?;
        Ok(LatestWriter {
            v: seqlock::Writer::attach(&self.inner.slots()),
            w,
        })
    }

    /// A reader (up to 64 at a time; read-only handles make readers that do not count).
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when 64 readers are connected.
    pub fn reader(&self) -> Result<LatestReader> {
        let (bit, claim) = claim_reader(&self.inner, "reader (all 64 are taken)")?;
        Ok(LatestReader {
            chan: self.inner.clone(),
            bit,
            last: 0,
            liveness: Liveness::default(),
            _claim: claim,
        })
    }
}

/// The writer of a latest-value channel.
pub struct LatestWriter {
    w: SlotWriter,
    v: seqlock::Writer,
}

impl fmt::Debug for LatestWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestWriter")
            .field("name", self.w.chan.name())
            .finish_non_exhaustive()
    }
}

impl LatestWriter {
    /// Publishes `value` as the latest. Never waits.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::InvalidArgument`] in a child forked after this
    /// end was made (the role is still the parent's).
    pub fn publish(&mut self, value: &[u8]) -> Result<()> {
        let s = self.w.slots_for(value.len())?;
        self.v.publish(&s, value, self.w.chan.parker());
        self.w.sweep();
        Ok(())
    }

    /// Publishes a value of a typed channel.
    ///
    /// # Errors
    ///
    /// As for [`LatestWriter::publish`].
    pub fn publish_value<T: Plain>(&mut self, value: &T) -> Result<()> {
        self.publish(bytemuck::bytes_of(value))
    }

    /// Lends the slot of the next value, of `len` bytes, to write in place (see
    /// [`SlotLoan`]) and publish with [`SlotLoan::commit`]; until then readers get the
    /// value before. Never waits.
    ///
    /// # Errors
    ///
    /// As for [`LatestWriter::publish`].
    pub fn loan(&mut self, len: usize) -> Result<SlotLoan<'_>> {
        let s = self.w.slots_for(len)?;
        let slot = self.v.lend(&s, len as u32);
        Ok(SlotLoan {
            w: &mut self.w,
            lender: Lender::Writer(&mut self.v),
            slot,
            len: len as u32,
        })
    }
}

/// A reader of a latest-value channel.
pub struct LatestReader {
    chan: Arc<sys::Channel>,
    bit: u64,
    /// The version of the last value read (0: none yet).
    last: u64,
    liveness: Liveness,
    /// The role (`None` for a channel opened read-only).
    _claim: Option<sys::Claim>,
}

impl fmt::Debug for LatestReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestReader")
            .field("name", self.chan.name())
            .finish_non_exhaustive()
    }
}

impl LatestReader {
    /// Copies the latest value into `buf`: `Some(version)` (from 1, one more with every
    /// value published), or `None` if no value was published yet.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`].
    pub fn read(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>> {
        self.read_to(buf)
    }

    /// [`read`](Self::read) into any sink.
    fn read_to(&mut self, sink: &mut impl seqlock::Sink) -> Result<Option<u64>> {
        let s = self.chan.slots();
        let v = seqlock::read_latest(&s, sink).map_err(|_| corrupt(&self.chan, "a value slot"))?;
        if let Some(v) = v.filter(|_| !sink.refused()) {
            self.last = v;
        }
        Ok(v)
    }

    /// Copies the latest value into the start of `buf`: `Some((length, version))`, or
    /// `None` if no value was published yet. The copy of [`read`](Self::read), into a
    /// buffer of your own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the value is longer than `buf` (the error states its
    /// length; it stays the latest, and this reader has not read it); [`Error::Corrupt`].
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<Option<(usize, u64)>> {
        self.read_buf(seqlock::Buf::up_to(buf))
    }

    /// [`read_into`](Self::read_into) into `sink`.
    fn read_buf(&mut self, mut sink: impl seqlock::Fixed) -> Result<Option<(usize, u64)>> {
        let Some(v) = self.read_to(&mut sink)? else {
            return Ok(None);
        };
        let len = fitted(&self.chan, &sink, "the latest value", NOT_READ)?;
        Ok(Some((len, v)))
    }

    /// As [`read_into`](Self::read_into), to memory that a `&mut [u8]` cannot stand for: a
    /// buffer of another runtime (Python's, C's), which that runtime's threads may write
    /// meanwhile. The value's words are written to `dst` with raw stores only, and no
    /// reference to the memory is made.
    ///
    /// On success the first `length` bytes hold the value; the rest of the `len`, and all
    /// of it after an error, hold nothing of use (a torn copy is written over before a read
    /// returns).
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of `len` bytes until this returns, and no reference
    /// covers them meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`read_into`](Self::read_into): a value longer than `len` is not read.
    #[allow(unsafe_code)]
    pub unsafe fn read_into_raw(
        &mut self,
        dst: *mut u8,
        len: usize,
    ) -> Result<Option<(usize, u64)>> {
        // SAFETY: the caller's promise, for as long as the sink lives (this call).
        self.read_buf(unsafe { seqlock::Raw::up_to(dst, len) })
    }

    /// What [`wait_any`](crate::wait_any) looks at and sleeps on: ready when a value newer
    /// than the last one this reader read is published, or the writer has gone.
    pub(crate) fn readiness(&self) -> super::Readiness<'_> {
        super::Readiness {
            chan: &self.chan,
            liveness: Some(&self.liveness),
            side: super::Side::Slots {
                seen: self.last,
                bit: self.bit,
            },
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.chan.name()
    }

    /// Reads a value of a typed channel (`None` before the first).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a value of another size; [`Error::Corrupt`].
    pub fn read_value<T: Plain>(&mut self) -> Result<Option<(T, u64)>> {
        let mut value = T::zeroed();
        let mut sink = seqlock::Buf::exact(bytemuck::bytes_of_mut(&mut value));
        let Some(v) = self.read_to(&mut sink)? else {
            return Ok(None);
        };
        match sink.got {
            Ok(_) => Ok(Some((value, v))),
            Err(len) => Err(super::not_a_value::<T>(&self.chan, "value", len, NOT_READ)),
        }
    }

    /// As [`LatestReader::wait_newer`], for a value of a typed channel: the value and its
    /// version.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a value of another size; as for
    /// [`LatestReader::wait_newer`].
    pub fn wait_newer_value<T: Plain>(
        &mut self,
        version: u64,
        timeout: Option<Duration>,
    ) -> Result<(T, u64)> {
        let mut value = T::zeroed();
        let mut sink = seqlock::Buf::exact(bytemuck::bytes_of_mut(&mut value));
        let v = self.wait_newer_to(version, &mut sink, timeout)?;
        match sink.got {
            Ok(_) => Ok((value, v)),
            Err(len) => Err(super::not_a_value::<T>(&self.chan, "value", len, NOT_READ)),
        }
    }

    /// Waits until a value newer than `version` is published (up to `timeout`), and
    /// copies it into `buf`; returns its version.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; [`Error::Disconnected`] if the writer closed or died and
    /// nothing newer is there.
    pub fn wait_newer(
        &mut self,
        version: u64,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.wait_newer_to(version, buf, timeout)
    }

    /// As [`wait_newer`](Self::wait_newer), into the start of `buf`: the value's length
    /// and its version.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the newer value is longer than `buf` (as for
    /// [`read_into`](Self::read_into)); as for [`wait_newer`](Self::wait_newer).
    pub fn wait_newer_into(
        &mut self,
        version: u64,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<(usize, u64)> {
        self.wait_newer_buf(version, seqlock::Buf::up_to(buf), timeout)
    }

    /// [`wait_newer_into`](Self::wait_newer_into) into `sink`.
    fn wait_newer_buf(
        &mut self,
        version: u64,
        mut sink: impl seqlock::Fixed,
        timeout: Option<Duration>,
    ) -> Result<(usize, u64)> {
        let v = self.wait_newer_to(version, &mut sink, timeout)?;
        let len = fitted(&self.chan, &sink, "the latest value", NOT_READ)?;
        Ok((len, v))
    }

    /// As [`wait_newer_into`](Self::wait_newer_into), to memory that a `&mut [u8]` cannot
    /// stand for, written through a raw pointer as [`read_into_raw`](Self::read_into_raw)
    /// writes it.
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of `len` bytes until this returns, and no reference
    /// covers them meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`wait_newer_into`](Self::wait_newer_into): a newer value longer than `len`
    /// is not read.
    #[allow(unsafe_code)]
    pub unsafe fn wait_newer_into_raw(
        &mut self,
        version: u64,
        dst: *mut u8,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<(usize, u64)> {
        // SAFETY: the caller's promise, for as long as the sink lives (this call).
        self.wait_newer_buf(version, unsafe { seqlock::Raw::up_to(dst, len) }, timeout)
    }

    /// [`wait_newer`](Self::wait_newer) into any sink.
    fn wait_newer_to(
        &mut self,
        version: u64,
        sink: &mut impl seqlock::Sink,
        timeout: Option<Duration>,
    ) -> Result<u64> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let chan = &*self.chan;
        let s = chan.slots();
        loop {
            let seen = s.ctl.wake.load(Acquire);
            let latest =
                seqlock::read_latest(&s, sink).map_err(|_| corrupt(chan, "a value slot"))?;
            if let Some(v) = latest {
                if !sink.refused() {
                    self.last = v;
                }
                if v > version {
                    return Ok(v);
                }
            }
            if let Some(e) =
                super::gone(chan, &s.ctl.producer, WRITER, "writer", &mut self.liveness)
            {
                return Err(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d)
                || !seqlock::park(s.ctl, self.bit, seen, chan.parker(), deadline)
            {
                return Err(timed_out(chan, "a newer value"));
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// Request/reply

/// A named request/reply channel: up to `clients` clients at a time send requests, and
/// one server answers each.
pub struct RequestReply {
    inner: Arc<sys::Channel>,
}

handle_common!(RequestReply);

impl Options {
    /// Creates a request/reply channel with `clients` client slots (1 to 64), requests of
    /// up to `max_request` bytes and replies of up to `max_reply` bytes (each at most
    /// 16 MiB), failing if a live one has the name.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`], [`Error::KindMismatch`], [`Error::InvalidArgument`].
    pub fn create_request_reply(
        &self,
        name: &str,
        clients: u32,
        max_request: u32,
        max_reply: u32,
    ) -> Result<RequestReply> {
        let g = Geometry::untyped(KIND_REQUEST_REPLY, clients, max_request, max_reply);
        make(self, name, g, Disposition::CreateNew).map(|inner| RequestReply { inner })
    }

    /// Opens the live request/reply channel under `name`, or creates it.
    ///
    /// # Errors
    ///
    /// As for [`Options::create_request_reply`], except `AlreadyExists`.
    pub fn open_or_create_request_reply(
        &self,
        name: &str,
        clients: u32,
        max_request: u32,
        max_reply: u32,
    ) -> Result<RequestReply> {
        let g = Geometry::untyped(KIND_REQUEST_REPLY, clients, max_request, max_reply);
        make(self, name, g, Disposition::OpenOrCreate).map(|inner| RequestReply { inner })
    }

    /// Opens the live request/reply channel under `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::KindMismatch`], [`Error::Corrupt`].
    pub fn open_request_reply(&self, name: &str) -> Result<RequestReply> {
        open(self, name, Kind::RequestReply, Access::ReadWrite).map(|inner| RequestReply { inner })
    }
}

impl RequestReply {
    /// The number of client slots: how many clients may be connected at once.
    pub fn clients(&self) -> usize {
        self.inner.geometry().capacity as usize
    }

    /// The largest reply in bytes.
    pub fn max_reply(&self) -> usize {
        self.inner.geometry().max_reply as usize
    }

    /// Becomes the server. Requests that a dead server had taken are pending again.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another live handle serves.
    pub fn server(&self) -> Result<RpcServer> {
        let claim = self.inner.claim(WRITER, "server")?;
        let c = self.inner.clients();
        let server = rpc::Server::attach(&c);
        c.ctl.server_pid.store(std::process::id(), Relaxed);
        c.ctl.server.store(CONNECTED, Release);
        Ok(RpcServer {
            chan: self.inner.clone(),
            server,
            strategy: WaitStrategy::SpinThenPark,
            spin: super::algo::Spin::new(),
            seen: Default::default(),
            repliers: Arc::new(AtomicU32::new(0)),
            _claim: claim,
        })
    }

    /// Becomes a client, in a free client slot.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when every client slot is taken.
    pub fn client(&self) -> Result<RpcClient> {
        let n = self.inner.geometry().capacity as u16;
        let (role, claim) = self
            .inner
            .claim_any(FIRST_PEER..FIRST_PEER + n, "client (every slot is taken)")?;
        let c = self.inner.clients();
        let client = rpc::Client::attach(&c, u32::from(role - FIRST_PEER));
        Ok(RpcClient {
            chan: self.inner.clone(),
            client,
            pending: false,
            strategy: WaitStrategy::SpinThenPark,
            spin: super::algo::Spin::new(),
            liveness: Liveness::default(),
            seen: Default::default(),
            _claim: claim,
        })
    }
}

/// A request taken by [`RpcServer::recv`], to answer with [`RpcServer::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(rpc::Taken);

/// The server of a request/reply channel. Dropping it closes the channel cleanly:
/// waiting clients get [`Error::Disconnected`].
pub struct RpcServer {
    chan: Arc<sys::Channel>,
    server: rpc::Server,
    strategy: WaitStrategy,
    spin: super::algo::Spin,
    /// The doorbell as `wait_any` last read it, before it looked for requests.
    seen: crate::atomic::AtomicU32,
    /// Shared with its [`Replier`]s: their answers in flight, and [`SERVER_GONE`].
    repliers: Arc<AtomicU32>,
    _claim: sys::Claim,
}

impl fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServer")
            .field("name", self.chan.name())
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// What [`wait_any`](crate::wait_any) looks at and sleeps on.
    pub(crate) fn readiness(&self) -> super::Readiness<'_> {
        super::Readiness {
            chan: &self.chan,
            liveness: None,
            side: super::Side::Server { seen: &self.seen },
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.chan.name()
    }

    /// How a blocking receive waits.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Takes the next request into `buf` (replacing its contents), waiting up to
    /// `timeout` (`None`: as long as it takes).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; [`Error::Corrupt`]; [`Error::InvalidArgument`] in a child
    /// forked after this end was made (the role is still the parent's; also for
    /// [`RpcServer::reply`]).
    pub fn recv(&mut self, buf: &mut Vec<u8>, timeout: Option<Duration>) -> Result<Ticket> {
        self.take_to(buf, timeout)
    }

    /// [`recv`](Self::recv) into any destination.
    fn take_to(&mut self, dest: &mut impl rpc::Dest, timeout: Option<Duration>) -> Result<Ticket> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let chan = &*self.chan;
        super::usable(&self._claim, chan)?;
        let c = chan.clients();
        loop {
            let seen = self.server.doorbell(&c);
            match self.server.try_take(&c, dest) {
                Ok(Some(t)) => return Ok(Ticket(t)),
                Ok(None) => {}
                Err(_) => return Err(corrupt(chan, "a request slot")),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(timed_out(chan, "a request"));
            }
            let server = &self.server;
            let woke = wait_as(
                self.strategy,
                &mut self.spin,
                deadline,
                || c.ctl.doorbell.load(Relaxed) != seen,
                || server.wait(&c, seen, chan.parker(), deadline),
            );
            if !woke {
                return Err(timed_out(chan, "a request"));
            }
        }
    }

    /// Answers the request `t` with `reply`. Returns `false` if its client is gone (or gave
    /// up waiting), and the reply was thrown away.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`].
    pub fn reply(&mut self, t: Ticket, reply: &[u8]) -> Result<bool> {
        super::usable(&self._claim, &self.chan)?;
        answer(&self.chan, t, reply)
    }

    /// Takes the next request as a value of `Q`, waiting up to `timeout` (`None`: as long
    /// as it takes).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a request of another size, which is answered at once
    /// with an empty reply, so that its client is not left waiting (its typed call then
    /// fails with `Incompatible` too); as for [`RpcServer::recv`].
    pub fn recv_value<Q: Plain>(&mut self, timeout: Option<Duration>) -> Result<(Ticket, Q)> {
        let mut value = Q::zeroed();
        let mut dest = rpc::Exact::new(bytemuck::bytes_of_mut(&mut value));
        let t = self.take_to(&mut dest, timeout)?;
        match dest.got {
            Ok(()) => Ok((t, value)),
            Err(len) => {
                // The reply's outcome changes nothing: the request was of the wrong size.
                let _ = answer(&self.chan, t, &[]);
                Err(super::not_a_value::<Q>(
                    &self.chan,
                    "request",
                    len,
                    "it was answered with an empty reply",
                ))
            }
        }
    }

    /// Answers the request `t` with a value, as [`RpcServer::reply`] does.
    ///
    /// # Errors
    ///
    /// As for [`RpcServer::reply`].
    pub fn reply_value<R: Plain>(&mut self, t: Ticket, reply: &R) -> Result<bool> {
        self.reply(t, bytemuck::bytes_of(reply))
    }

    /// A handle that answers this server's requests from any thread, while the server
    /// itself goes on taking requests (`recv` needs `&mut self`; answering does not): a
    /// server may receive in one thread and answer in others.
    pub fn replier(&self) -> Replier {
        Replier {
            chan: self.chan.clone(),
            repliers: self.repliers.clone(),
            made: self._claim.made(),
        }
    }
}

/// Answers `t` with `reply`: the work of [`RpcServer::reply`] and [`Replier::reply`].
fn answer(chan: &sys::Channel, t: Ticket, reply: &[u8]) -> Result<bool> {
    let c = chan.clients();
    if reply.len() > c.max_reply as usize {
        return Err(too_large(chan, reply.len(), c.max_reply));
    }
    Ok(rpc::Server::reply(&c, t.0, reply, chan.parker()))
}

/// Answers requests on behalf of an [`RpcServer`], from any thread: see
/// [`RpcServer::replier`]. Once the server is dropped, its repliers answer nothing
/// (`Ok(false)`), as a new server answers the requests again; the drop waits for answers
/// already under way, so that two answers never fill one slot. A replier keeps the
/// channel open, as a handle does.
#[derive(Debug, Clone)]
pub struct Replier {
    chan: Arc<sys::Channel>,
    /// The answers in flight, and [`SERVER_GONE`] once the server has gone.
    repliers: Arc<AtomicU32>,
    /// The fork generation of the server's role: a forked child's copy refuses, as the
    /// server's other operations do there.
    made: sys::Made,
}

impl Replier {
    /// Answers the request `t` with `reply`, as [`RpcServer::reply`] does. Returns `false`
    /// if its client is gone (or gave up waiting), or the server has been dropped.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::InvalidArgument`] in a child forked after the
    /// server was made.
    pub fn reply(&self, t: Ticket, reply: &[u8]) -> Result<bool> {
        if self.made.inherited() {
            return Err(super::inherited_end(&self.chan));
        }
        // Counted in before looking: the server's drop waits for the answers in flight
        // before it gives its role up, so no new server can take this request back (and
        // answer it) while we write our answer into its slot.
        if self.repliers.fetch_add(1, Acquire) & SERVER_GONE != 0 {
            self.repliers.fetch_sub(1, Release);
            return Ok(false);
        }
        let answered = answer(&self.chan, t, reply);
        self.repliers.fetch_sub(1, Release);
        answered
    }

    /// Answers the request `t` with a value, as [`Replier::reply`] does.
    ///
    /// # Errors
    ///
    /// As for [`Replier::reply`].
    pub fn reply_value<R: Plain>(&self, t: Ticket, reply: &R) -> Result<bool> {
        self.reply(t, bytemuck::bytes_of(reply))
    }
}

/// The bit of a server's `repliers` word that says it has gone; the rest counts answers
/// in flight.
const SERVER_GONE: u32 = 1 << 31;

impl Drop for RpcServer {
    fn drop(&mut self) {
        if self._claim.inherited() {
            // A forked child's copy: the channel end is still its parent's.
            return;
        }
        // No replier starts an answer from now on; wait for those under way (a copy each).
        let mut repliers = self.repliers.fetch_or(SERVER_GONE, AcqRel);
        while repliers & !SERVER_GONE != 0 {
            std::thread::yield_now();
            repliers = self.repliers.load(Acquire);
        }
        let c = self.chan.clients();
        c.ctl.server.store(CLOSED, Release);
        std::sync::atomic::fence(SeqCst);
        // Every waiting client looks again, and sees the close.
        for slot in 0..c.count {
            self.chan.parker().unpark(c.state(slot), u32::MAX);
        }
    }
}

/// A client of a request/reply channel.
pub struct RpcClient {
    chan: Arc<sys::Channel>,
    client: rpc::Client,
    /// Whether a request waits for its reply.
    pending: bool,
    strategy: WaitStrategy,
    spin: super::algo::Spin,
    liveness: Liveness,
    /// The slot's state word as `wait_any` last read it, before it looked for the reply.
    seen: crate::atomic::AtomicU32,
    _claim: sys::Claim,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("name", self.chan.name())
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// How a call waits for its reply.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Sends `request` and waits up to `timeout` (`None`: as long as it takes) for its
    /// reply, which goes into `reply` (replacing its contents): [`RpcClient::send_request`]
    /// and [`RpcClient::wait_reply`].
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::Timeout`] (a reply that comes later is thrown
    /// away by the next request); [`Error::Disconnected`] if the server closed or died
    /// without answering; [`Error::Corrupt`].
    pub fn call(
        &mut self,
        request: &[u8],
        reply: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.send_request(request)?;
        self.wait_reply(reply, timeout)
    }

    /// Sends a request that is a value of `Q` and waits up to `timeout` for its reply, a
    /// value of `R`: [`RpcClient::call`] with values.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a reply of another size (a server that took the request
    /// as another type answers with an empty one); as for [`RpcClient::call`].
    pub fn call_value<Q: Plain, R: Plain>(
        &mut self,
        request: &Q,
        timeout: Option<Duration>,
    ) -> Result<R> {
        self.send_request(bytemuck::bytes_of(request))?;
        self.wait_reply_value(timeout)
    }

    /// Sends a request that is a value of `Q` without waiting for its reply, as
    /// [`RpcClient::send_request`] does.
    ///
    /// # Errors
    ///
    /// As for [`RpcClient::send_request`].
    pub fn send_request_value<Q: Plain>(&mut self, request: &Q) -> Result<()> {
        self.send_request(bytemuck::bytes_of(request))
    }

    /// Waits for the reply to the pending request, as a value of `R`: [`RpcClient::wait_reply`]
    /// with a value.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a reply of another size; as for
    /// [`RpcClient::wait_reply`].
    pub fn wait_reply_value<R: Plain>(&mut self, timeout: Option<Duration>) -> Result<R> {
        let mut value = R::zeroed();
        let mut dest = rpc::Exact::new(bytemuck::bytes_of_mut(&mut value));
        self.wait_reply_to(&mut dest, timeout)?;
        match dest.got {
            Ok(()) => Ok(value),
            Err(len) => Err(super::not_a_value::<R>(
                &self.chan,
                "reply",
                len,
                "it was thrown away",
            )),
        }
    }

    /// What [`wait_any`](crate::wait_any) looks at and sleeps on: ready when the reply to
    /// the pending request has come, the server has gone, or no request is pending (a
    /// `wait_reply` would then not wait).
    pub(crate) fn readiness(&self) -> super::Readiness<'_> {
        super::Readiness {
            chan: &self.chan,
            liveness: Some(&self.liveness),
            side: super::Side::Client {
                slot: self.client.slot,
                reply: self.client.reply_word(),
                pending: self.pending,
                seen: &self.seen,
            },
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &Name {
        self.chan.name()
    }

    /// Sends `request` without waiting for its reply. A request still pending from before
    /// is given up: its reply, if it comes, is thrown away.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::InvalidArgument`] in a child forked after this
    /// end was made (the client's slot is still the parent's; also for
    /// [`RpcClient::wait_reply`]).
    pub fn send_request(&mut self, request: &[u8]) -> Result<()> {
        let chan = &*self.chan;
        super::usable(&self._claim, chan)?;
        let c = chan.clients();
        if request.len() > c.max_request as usize {
            return Err(too_large(chan, request.len(), c.max_request));
        }
        self.client.send(&c, request, chan.parker());
        self.pending = true;
        Ok(())
    }

    /// Waits up to `timeout` for the reply to the pending request, into `reply`. A
    /// timeout leaves the request pending: wait again, or send another.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] with no request pending; [`Error::Timeout`];
    /// [`Error::Disconnected`] if the server closed or died without answering;
    /// [`Error::Corrupt`].
    pub fn wait_reply(&mut self, reply: &mut Vec<u8>, timeout: Option<Duration>) -> Result<()> {
        self.wait_reply_to(reply, timeout)
    }

    /// [`wait_reply`](Self::wait_reply) into any destination.
    fn wait_reply_to(
        &mut self,
        reply: &mut impl rpc::Dest,
        timeout: Option<Duration>,
    ) -> Result<()> {
        super::usable(&self._claim, &self.chan)?;
        if !self.pending {
            return Err(Error::InvalidArgument {
                what: format!("no request is waiting for a reply on {}", self.chan.name()),
            });
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let r = self.wait(reply, deadline);
        if !matches!(r, Err(Error::Timeout { .. })) {
            self.pending = false;
        }
        r
    }

    fn wait(&mut self, reply: &mut impl rpc::Dest, deadline: Option<Instant>) -> Result<()> {
        let chan = &*self.chan;
        let c = chan.clients();
        let state = c.state(self.client.slot);
        loop {
            // Read before looking for the reply: a reply that comes in between moves it,
            // so the wait below cannot spin past it.
            let seen = state.load(Relaxed);
            match self.client.try_reply(&c, reply) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) => return Err(corrupt(chan, "a client slot")),
            }
            if let Some(e) = super::gone(chan, &c.ctl.server, WRITER, "server", &mut self.liveness)
            {
                if let Ok(true) = self.client.try_reply(&c, reply) {
                    return Ok(());
                }
                return Err(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(timed_out(chan, "a reply"));
            }
            let client = &self.client;
            let woke = wait_as(
                self.strategy,
                &mut self.spin,
                deadline,
                || state.load(Relaxed) != seen,
                || client.wait(&c, chan.parker(), deadline),
            );
            if !woke {
                return Err(timed_out(chan, "a reply"));
            }
        }
    }
}
