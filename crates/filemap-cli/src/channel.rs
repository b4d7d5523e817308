//! `send` and `recv`: a stream channel as a named pipe between shell commands.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use clap::Args;
use filemap::{Error, Kind, Namespace, Options, Stream, DEFAULT_CAPACITY};

use crate::sync::{parse_secs, EXIT_ABANDONED, EXIT_TIMEOUT};
use crate::{parse_bytes, CmdResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Name of the stream (opened, or created with --capacity if there is none).
    name: String,
    /// Messages to send, each as one message (its bytes exactly, no newline added).
    /// Without them, standard input is sent: one message per line (each with its newline),
    /// or per --chunk bytes.
    msg: Vec<String>,
    /// Send standard input in messages of this many bytes (the last may be shorter).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES", conflicts_with = "msg")]
    chunk: Option<u64>,
    /// Give up waiting for room, or for the consumer to take the last message, after this
    /// many seconds (exit status 124).
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    timeout: Option<Duration>,
    #[command(flatten)]
    geometry: GeometryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RecvArgs {
    /// Name of the stream (opened, or created with --capacity if there is none).
    name: String,
    /// Receive this many messages (default 1).
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    count: Option<u64>,
    /// Receive until the producer closes the stream (then exit 0, like EOF on a pipe).
    #[arg(long)]
    follow: bool,
    /// Give up waiting for a message after this many seconds (exit status 124).
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    timeout: Option<Duration>,
    /// Subscribe to a broadcast, or read a latest-value channel, read-only: write nothing
    /// to it and take none of its 64 roles (while waiting, look every millisecond). Needs
    /// only read permission, which is also what recv falls back to by itself when that is
    /// all the user has. Streams have no read-only receiver.
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    geometry: GeometryArgs,
}

#[derive(Debug, Args)]
struct GeometryArgs {
    /// If the stream must be created: the ring's size in bytes, a power of two (default 1M).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    capacity: Option<u64>,
    /// If the stream must be created: the largest message (default: a quarter of the
    /// capacity).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    max_message: Option<u64>,
}

/// The capacity and largest message for a new stream, from the options given.
pub(crate) fn geometry(
    capacity: Option<u64>,
    max_message: Option<u64>,
) -> Result<(u32, u32), Failure> {
    let capacity = capacity.unwrap_or(u64::from(DEFAULT_CAPACITY));
    let capacity = u32::try_from(capacity)
        .map_err(|_| format!("--capacity {capacity} is too large (the largest ring is 1G)"))?;
    let max_message = max_message.unwrap_or(u64::from(capacity / 4).max(1));
    let max_message = u32::try_from(max_message)
        .map_err(|_| format!("--max-message {max_message} is larger than any ring"))?;
    Ok((capacity, max_message))
}

fn open_stream(ns: &Namespace, name: &str, g: &GeometryArgs) -> Result<Stream, Failure> {
    let (capacity, max_message) = geometry(g.capacity, g.max_message)?;
    let mut opts = Options::new();
    opts.namespace(ns.clone());
    Ok(opts.open_or_create_stream(name, capacity, max_message)?)
}

/// The channel under `name`: a broadcast or latest-value channel if one lives there,
/// otherwise the stream (opened, or created).
enum Channel {
    Stream(Stream),
    Broadcast(filemap::Broadcast),
    Latest(filemap::Latest),
}

/// How `send` and `recv` open a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// To send: read-write.
    Send,
    /// To receive: read-write, or read-only for a broadcast or latest-value channel that
    /// this user may only read (its subscribers and readers need nothing more).
    Recv,
    /// To receive read-only (`recv --read-only`): a broadcast or latest-value channel only.
    RecvReadOnly,
}

fn open_channel(
    ns: &Namespace,
    name: &str,
    g: &GeometryArgs,
    how: Opening,
) -> Result<Channel, Failure> {
    let mut opts = Options::new();
    opts.namespace(ns.clone());
    // Read-write first, unless asked for read-only; read-only if refused while receiving.
    fn open<T>(
        how: Opening,
        rw: impl Fn() -> filemap::Result<T>,
        ro: impl Fn() -> filemap::Result<T>,
    ) -> filemap::Result<T> {
        match how {
            Opening::RecvReadOnly => ro(),
            Opening::Recv => match rw() {
                Err(Error::PermissionDenied { .. }) => ro(),
                r => r,
            },
            Opening::Send => rw(),
        }
    }
    let kind = ns.kind(name);
    match kind {
        Ok(Kind::Broadcast) => {
            return Ok(Channel::Broadcast(open(
                how,
                || opts.open_broadcast(name),
                || opts.open_broadcast_read_only(name),
            )?));
        }
        Ok(Kind::Latest) => {
            return Ok(Channel::Latest(open(
                how,
                || opts.open_latest(name),
                || opts.open_latest_read_only(name),
            )?));
        }
        Ok(Kind::RequestReply) => {
            return Err(format!(
                "{name} is a request/reply channel, which send and recv do not speak; \
                 use call and serve"
            )
            .into())
        }
        _ => {}
    }
    if how == Opening::RecvReadOnly {
        return Err(match kind {
            Ok(Kind::Stream) => format!(
                "{name} is a stream, which has no read-only receiver (receiving gives room back \
                 to the producer); --read-only is for broadcast and latest-value channels"
            )
            .into(),
            Ok(k) => format!("{name} is a {k}, not a channel").into(),
            Err(e) => e.into(),
        });
    }
    Ok(Channel::Stream(open_stream(ns, name, g)?))
}

/// The sending end of a channel.
enum Sink {
    Stream(filemap::Sender),
    Broadcast(filemap::Publisher),
    Latest(filemap::LatestWriter),
}

impl Sink {
    fn max(&self, ch: &Channel) -> usize {
        match (self, ch) {
            (Sink::Stream(tx), _) => tx.max_message(),
            (_, Channel::Broadcast(b)) => b.max_message(),
            (_, Channel::Latest(l)) => l.max_message(),
            _ => 0,
        }
    }

    fn put(&mut self, msg: &[u8], timeout: Option<Duration>) -> filemap::Result<()> {
        match self {
            Sink::Stream(tx) => match timeout {
                None => tx.send(msg),
                Some(t) => tx.send_timeout(msg, t),
            },
            Sink::Broadcast(p) => p.send(msg),
            Sink::Latest(w) => w.publish(msg),
        }
    }
}

/// The receiving end of a channel.
enum Source {
    Stream(filemap::Receiver),
    Broadcast(filemap::Subscriber),
    /// A reader and the version it last wrote out.
    Latest(filemap::LatestReader, u64),
}

impl Source {
    /// The next message into `buf`: without waiting if `now` (`Ok(false)`: none there), or
    /// up to `timeout`.
    fn next(
        &mut self,
        buf: &mut Vec<u8>,
        now: bool,
        timeout: Option<Duration>,
    ) -> filemap::Result<bool> {
        buf.clear();
        let wait = if now { Some(Duration::ZERO) } else { timeout };
        let got = match self {
            Source::Stream(rx) => match wait {
                Some(t) if t.is_zero() => rx.try_recv().map(|m| m.map(|m| m.append_to(buf))),
                Some(t) => rx.recv_timeout(t).map(|m| {
                    m.append_to(buf);
                    Some(())
                }),
                None => rx.recv().map(|m| {
                    m.append_to(buf);
                    Some(())
                }),
            },
            Source::Broadcast(sub) => match wait {
                Some(t) if t.is_zero() => sub.try_recv(buf).map(|o| o.map(|_| ())),
                Some(t) => sub.recv_timeout(buf, t).map(|_| Some(())),
                None => sub.recv(buf).map(|_| Some(())),
            },
            Source::Latest(r, last) => {
                // The first value is the latest one there; then each newer one.
                let first = *last == 0;
                match r.read(buf)? {
                    Some(v) if first || v > *last => {
                        *last = v;
                        Ok(Some(()))
                    }
                    _ if wait.is_some_and(|t| t.is_zero()) => Ok(None),
                    _ => r.wait_newer(*last, buf, wait).map(|v| {
                        *last = v;
                        Some(())
                    }),
                }
            }
        };
        match got {
            Ok(Some(())) => Ok(true),
            Ok(None) => Ok(false),
            Err(Error::Timeout { .. }) if now => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The exit status and message of a channel error: 3 if the peer died (without closing
/// the channel, or answering a call), 124 on a timeout, otherwise 1.
pub(crate) fn failure(e: Error) -> Failure {
    let code = match &e {
        Error::Disconnected { died: true, .. } => EXIT_ABANDONED,
        Error::Timeout { .. } => EXIT_TIMEOUT,
        _ => 1,
    };
    Failure {
        message: e.to_string(),
        code,
    }
}

pub(crate) fn send(ns: &Namespace, a: SendArgs) -> CmdResult {
    let ch = open_channel(ns, &a.name, &a.geometry, Opening::Send)?;
    let mut tx = match &ch {
        Channel::Stream(s) => Sink::Stream(s.sender()?),
        Channel::Broadcast(b) => Sink::Broadcast(b.publisher()?),
        Channel::Latest(l) => Sink::Latest(l.writer()?),
    };
    let max = tx.max(&ch);
    let deadline = |t: Option<Duration>| t.and_then(|t| Instant::now().checked_add(t));
    let mut put = |msg: &[u8]| -> CmdResult { tx.put(msg, a.timeout).map_err(failure) };
    if !a.msg.is_empty() {
        for m in &a.msg {
            put(m.as_bytes())?;
        }
    } else if let Some(chunk) = a.chunk {
        let chunk = usize::try_from(chunk).unwrap_or(usize::MAX);
        if chunk == 0 || chunk > max {
            return Err(format!(
                "--chunk must be from 1 to the stream's largest message ({max} bytes), not {chunk}"
            )
            .into());
        }
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = read_full(&mut input, &mut buf)
                .map_err(|e| format!("reading standard input: {e}"))?;
            if n == 0 {
                break;
            }
            put(&buf[..n])?;
        }
    } else {
        // One message per line, newline included; a line longer than the largest message
        // goes in pieces, so the bytes arrive all the same.
        let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("reading standard input: {e}"))?;
            if n == 0 {
                break;
            }
            for piece in line.chunks(max) {
                put(piece)?;
            }
        }
    }
    // End of input: close our end (the consumer gets EOF after the last message), and keep
    // the stream alive until the consumer has taken everything, as a pipe's writer's data
    // outlives the writer.
    drop(tx);
    match &ch {
        Channel::Stream(stream) => drain(stream, deadline(a.timeout)),
        // A publisher never waits for its subscribers, nor a writer for its readers.
        _ => Ok(()),
    }
}

/// Waits until every message is received, the consumer is gone, or `deadline`.
fn drain(stream: &Stream, deadline: Option<Instant>) -> CmdResult {
    let mut pause = Duration::from_micros(100);
    loop {
        let left = stream.queued();
        if left == 0 {
            return Ok(());
        }
        match stream.consumer_state() {
            filemap::Peer::Died => {
                return Err(Failure {
                    message: format!(
                        "the consumer of the channel {} died with {left} messages unread",
                        stream.name()
                    ),
                    code: EXIT_ABANDONED,
                })
            }
            filemap::Peer::Closed => {
                return Err(format!(
                    "the consumer of the channel {} closed it with {left} messages unread",
                    stream.name()
                )
                .into())
            }
            _ => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(failure(Error::Timeout {
                what: format!(
                    "the consumer to take the last {left} messages from {}",
                    stream.name()
                ),
            }));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub(crate) fn recv(ns: &Namespace, a: RecvArgs) -> CmdResult {
    let how = match a.read_only {
        true => Opening::RecvReadOnly,
        false => Opening::Recv,
    };
    let ch = open_channel(ns, &a.name, &a.geometry, how)?;
    let mut rx = match &ch {
        Channel::Stream(s) => Source::Stream(s.receiver()?),
        Channel::Broadcast(b) => Source::Broadcast(b.subscriber()?),
        Channel::Latest(l) => Source::Latest(l.reader()?, 0),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let wanted = if a.follow {
        u64::MAX
    } else {
        a.count.unwrap_or(1)
    };
    let mut got = 0u64;
    let mut buf = Vec::new();
    let written = |e: std::io::Error| format!("writing standard output: {e}");
    while got < wanted {
        // What is there now goes out without a flush per message; before waiting, flush.
        let outcome = match rx.next(&mut buf, true, a.timeout) {
            Ok(true) => Ok(true),
            Ok(false) => {
                out.flush().map_err(written)?;
                rx.next(&mut buf, false, a.timeout)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(_) => {}
            // The producer closed the channel and everything was received: EOF.
            Err(Error::Disconnected { died: false, .. }) => break,
            Err(e) => {
                out.flush().map_err(written)?;
                return Err(failure(e));
            }
        }
        out.write_all(&buf).map_err(written)?;
        got += 1;
    }
    out.flush().map_err(written)?;
    Ok(())
}
