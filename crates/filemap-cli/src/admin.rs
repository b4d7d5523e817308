//! `create`, `write`, `read`, `ls`, `info`, `rm` and `gc`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use clap::{Args, ValueEnum};
use filemap::{Access, Kind, Listing, Name, Namespace, ObjectInfo, Options, Refused, SyncState};
use serde_json::{json, Value};

use crate::rpc;
use crate::wait::{Waiter, Wake, HOW_TO_STOP};
use crate::{parse_bytes, parse_mode, CmdResult, Encoding, Failure};

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Name of the new object.
    name: String,
    /// What to create.
    #[arg(long, value_enum, default_value = "mapping")]
    kind: KindArg,
    /// Semaphore: the initial count.
    #[arg(long, value_name = "N")]
    initial: Option<u32>,
    /// Semaphore: the maximum count (default 2147483647, as Windows' LONG).
    #[arg(long, value_name = "N")]
    max: Option<u32>,
    /// Event: stay signalled until reset (default: auto-reset, one waiter per signal).
    #[arg(long)]
    manual_reset: bool,
    /// Event: start signalled.
    #[arg(long)]
    set: bool,
    /// Size in bytes (65536, 0x10000, 64K). With --file, 0 or absent means the file's size.
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    size: Option<u64>,
    /// Map this file instead of shared memory (grown to --size if smaller).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// With --file: map it read-only (no one can then write it through the name).
    #[arg(long, requires = "file")]
    read_only: bool,
    /// Stream: the ring's bytes, a power of two (default 1M). Broadcast: the message slots,
    /// a power of two (default 64). Request-reply: the client slots (default 8).
    #[arg(long, value_parser = parse_bytes, value_name = "N")]
    capacity: Option<u64>,
    /// Channels: the largest message (request-reply: request) in bytes (default: a quarter
    /// of a stream's capacity; 64K for request-reply; 4K for the others).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    max_message: Option<u64>,
    /// Request-reply: the largest reply in bytes (default 64K).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    max_reply: Option<u64>,
    /// Keep the object after this process exits, until `filemap rm`.
    #[arg(long)]
    persistent: bool,
    /// Mapping: don't reserve the memory; pages come at first touch (fast for large sizes,
    /// but a touch when /dev/shm is full raises SIGBUS).
    #[arg(long)]
    sparse: bool,
    /// Permission bits, octal (default 600: owner only; 644 lets others read a Global\ object).
    #[arg(long, value_parser = parse_mode, value_name = "OCTAL")]
    mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KindArg {
    /// Shared memory, or a mapped file (--file).
    Mapping,
    /// A robust, recursive mutex.
    Mutex,
    /// A counting semaphore.
    Semaphore,
    /// An auto-reset or manual-reset event.
    Event,
    /// A stream channel: one producer, one consumer, byte messages in a ring.
    Stream,
    /// A broadcast channel: one publisher, subscribers that each read every message.
    Broadcast,
    /// A latest-value channel: one writer, readers of the latest whole value.
    Latest,
    /// A request/reply channel: clients and one server.
    RequestReply,
}

impl KindArg {
    /// The library's kind.
    fn kind(self) -> Kind {
        match self {
            KindArg::Mapping => Kind::Mapping,
            KindArg::Mutex => Kind::Mutex,
            KindArg::Semaphore => Kind::Semaphore,
            KindArg::Event => Kind::Event,
            KindArg::Stream => Kind::Stream,
            KindArg::Broadcast => Kind::Broadcast,
            KindArg::Latest => Kind::Latest,
            KindArg::RequestReply => Kind::RequestReply,
        }
    }
}

/// An object that `create` keeps alive until it is told to stop.
#[allow(dead_code)]
enum Held {
    Mapping(filemap::FileMapping),
    Mutex(filemap::Mutex),
    Semaphore(filemap::Semaphore),
    Event(filemap::Event),
    Stream(filemap::Stream),
    Broadcast(filemap::Broadcast),
    Latest(filemap::Latest),
    RequestReply(filemap::RequestReply),
}

#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// Name of the mapping.
    name: String,
    /// Text to write; without it (and without --input), standard input is written.
    /// With --as, numbers (a list that begins with a negative one goes after `--`).
    #[arg(allow_negative_numbers = true)]
    data: Option<String>,
    /// Offset in the mapping.
    #[arg(long, default_value = "0", value_parser = parse_bytes, value_name = "N")]
    offset: u64,
    /// Write the bytes of this file.
    #[arg(long, value_name = "PATH", conflicts_with = "data")]
    input: Option<PathBuf>,
    /// Encoding of DATA.
    #[arg(long, value_enum, default_value = "utf8", requires = "data")]
    encoding: Encoding,
    /// Add a NUL terminator after DATA (two bytes in UTF-16).
    #[arg(long, requires = "data")]
    nul: bool,
    /// DATA is numbers of this type (separated by spaces or commas), written one after
    /// another, little-endian, at any offset.
    #[arg(
        long = "as",
        value_enum,
        value_name = "TYPE",
        requires = "data",
        conflicts_with = "nul"
    )]
    as_type: Option<Number>,
}

/// A number type for `write --as` and `read --format`: little-endian, as on every platform
/// filemap runs on (and as `View::read_value` reads them there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Number {
    /// Unsigned bytes.
    U8,
    /// Signed bytes.
    I8,
    /// Unsigned 16-bit numbers.
    U16,
    /// Signed 16-bit numbers.
    I16,
    /// Unsigned 32-bit numbers.
    U32,
    /// Signed 32-bit numbers.
    I32,
    /// Unsigned 64-bit numbers.
    U64,
    /// Signed 64-bit numbers.
    I64,
    /// 32-bit floating point numbers.
    F32,
    /// 64-bit floating point numbers.
    F64,
}

/// Evaluates `$body` with `$t` standing for the Rust type of the number type `$n`.
macro_rules! with_type {
    ($n:expr, $t:ident => $body:expr) => {
        with_type!(@ $n, $t, $body;
            U8 u8, I8 i8, U16 u16, I16 i16, U32 u32, I32 i32, U64 u64, I64 i64, F32 f32, F64 f64)
    };
    (@ $n:expr, $t:ident, $body:expr; $($v:ident $ty:ty),*) => {
        match $n {
            $(Number::$v => {
                type $t = $ty;
                $body
            })*
        }
    };
}

impl Number {
    fn size(self) -> usize {
        with_type!(self, T => std::mem::size_of::<T>())
    }

    fn name(self) -> &'static str {
        // A primitive's type name is its name: "u8", "f64".
        with_type!(self, T => std::any::type_name::<T>())
    }

    /// The value in `b` (exactly [`size`](Self::size) bytes), as text.
    fn show(self, b: &[u8]) -> String {
        with_type!(self, T => b.try_into().map_or(String::new(), |a| T::from_le_bytes(a).to_string()))
    }

    /// The numbers in `text` (separated by spaces or commas) as bytes.
    fn parse(self, text: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for word in text.split([' ', ',', '\t', '\n']).filter(|w| !w.is_empty()) {
            let bad = || format!("{word:?} is not a {}", self.name());
            with_type!(self, T => out.extend_from_slice(&word.parse::<T>().map_err(|_| bad())?.to_le_bytes()));
        }
        if out.is_empty() {
            return Err(format!("no {} in {text:?}", self.name()));
        }
        Ok(out)
    }
}

/// `read`'s output formats (described in `to_possible_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Raw,
    Hex,
    Utf8,
    Utf16,
    Number(Number),
}

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        use Number::*;
        &[
            Format::Raw,
            Format::Hex,
            Format::Utf8,
            Format::Utf16,
            Format::Number(U8),
            Format::Number(I8),
            Format::Number(U16),
            Format::Number(I16),
            Format::Number(U32),
            Format::Number(I32),
            Format::Number(U64),
            Format::Number(I64),
            Format::Number(F32),
            Format::Number(F64),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Format::Raw => PossibleValue::new("raw").help("The bytes as they are"),
            Format::Hex => PossibleValue::new("hex").help("A hex dump with offsets"),
            Format::Utf8 => PossibleValue::new("utf8").help("UTF-8 text up to the first NUL"),
            Format::Utf16 => PossibleValue::new("utf16").help("UTF-16LE text up to the first NUL"),
            // Numbers, one per line: see `ReadArgs::format`.
            Format::Number(n) => n.to_possible_value()?,
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// Name of the mapping.
    name: String,
    /// Offset in the mapping.
    #[arg(long, default_value = "0", value_parser = parse_bytes, value_name = "N")]
    offset: u64,
    /// Number of bytes; 0 means to the end.
    #[arg(long, default_value = "0", value_parser = parse_bytes, value_name = "N")]
    len: u64,
    /// Output format: text, or numbers of a type, one per line, little-endian (the length
    /// must then be a whole number of them).
    #[arg(long, value_enum, default_value = "hex")]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only the names that begin with this: with a prefix (Local\app-), in that namespace;
    /// without one (app-), in both.
    prefix: Option<String>,
    /// Only objects of this kind (may be given more than once).
    #[arg(long, value_enum)]
    kind: Vec<KindArg>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Whether `name` begins with `prefix` as `ls PREFIX` means it.
fn begins_with(name: &Name, prefix: &str) -> bool {
    match prefix.contains('\\') {
        true => name.full().starts_with(prefix),
        false => name.base().starts_with(prefix),
    }
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// Name of the object.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Windows: also find the pids of the processes that hold it, as Process Explorer
    /// does (each handle of its type in your processes is duplicated for a moment, which
    /// keeps that object alive meanwhile). Linux shows them always.
    #[arg(long)]
    holders: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// Names of the objects.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

pub(crate) fn create(ns: &Namespace, a: CreateArgs) -> CmdResult {
    let mut opts = Options::new();
    opts.namespace(ns.clone())
        .persistent(a.persistent)
        .sparse(a.sparse);
    if let Some(mode) = a.mode {
        opts.mode(mode);
    }
    // Each option belongs to some kinds only.
    let only = |given: bool, flag: &str, kinds: &str| -> CmdResult {
        if given {
            let kind = a
                .kind
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            return Err(format!("{flag} applies to {kinds} only, not to --kind {kind}").into());
        }
        Ok(())
    };
    let k = a.kind;
    only(
        a.size.is_some() && k != KindArg::Mapping,
        "--size",
        "mappings",
    )?;
    only(
        a.file.is_some() && k != KindArg::Mapping,
        "--file",
        "mappings",
    )?;
    only(a.sparse && k != KindArg::Mapping, "--sparse", "mappings")?;
    only(
        a.initial.is_some() && k != KindArg::Semaphore,
        "--initial",
        "semaphores",
    )?;
    only(
        a.max.is_some() && k != KindArg::Semaphore,
        "--max",
        "semaphores",
    )?;
    only(
        a.manual_reset && k != KindArg::Event,
        "--manual-reset",
        "events",
    )?;
    only(a.set && k != KindArg::Event, "--set", "events")?;
    let channel = matches!(
        k,
        KindArg::Stream | KindArg::Broadcast | KindArg::Latest | KindArg::RequestReply
    );
    only(
        a.capacity.is_some() && !channel,
        "--capacity",
        "streams, broadcasts and request-reply channels",
    )?;
    only(
        a.capacity.is_some() && k == KindArg::Latest,
        "--capacity",
        "streams, broadcasts and request-reply channels",
    )?;
    only(
        a.max_message.is_some() && !channel,
        "--max-message",
        "channels",
    )?;
    only(
        a.max_reply.is_some() && k != KindArg::RequestReply,
        "--max-reply",
        "request-reply channels",
    )?;
    let (held, what, path) = match k {
        KindArg::Mapping => {
            let mapping = match &a.file {
                Some(path) => {
                    let access = if a.read_only {
                        Access::Read
                    } else {
                        Access::ReadWrite
                    };
                    let m = opts.map_path(path, a.size.unwrap_or(0), access, Some(&a.name))?;
                    if m.already_existed() {
                        return Err(filemap::Error::AlreadyExists {
                            name: m.name().map(|n| n.to_string()).unwrap_or(a.name),
                            kind: filemap::Kind::Mapping,
                        }
                        .into());
                    }
                    m
                }
                None => {
                    let size = a
                        .size
                        .ok_or("--size is required for a shared-memory mapping".to_owned())?;
                    opts.create(&a.name, size)?
                }
            };
            let name = mapping.name().map(|n| n.to_string()).unwrap_or_default();
            let what = format!("mapping {name} ({} bytes)", mapping.size());
            let path = mapping
                .os_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (Held::Mapping(mapping), what, path)
        }
        KindArg::Mutex => {
            let m = opts.create_mutex(&a.name)?;
            let what = format!("mutex {}", m.name());
            let path = m.os_path().display().to_string();
            (Held::Mutex(m), what, path)
        }
        KindArg::Semaphore => {
            let (initial, max) = (a.initial.unwrap_or(0), a.max.unwrap_or(i32::MAX as u32));
            let s = opts.create_semaphore(&a.name, initial, max)?;
            let what = format!("semaphore {} (count {initial}, max {max})", s.name());
            let path = s.os_path().display().to_string();
            (Held::Semaphore(s), what, path)
        }
        KindArg::Event => {
            let e = opts.create_event(&a.name, a.manual_reset, a.set)?;
            let what = format!(
                "event {} ({}, {})",
                e.name(),
                if a.manual_reset {
                    "manual-reset"
                } else {
                    "auto-reset"
                },
                if a.set { "set" } else { "not set" }
            );
            let path = e.os_path().display().to_string();
            (Held::Event(e), what, path)
        }
        KindArg::Stream => {
            let (capacity, max_message) = crate::channel::geometry(a.capacity, a.max_message)?;
            let s = opts.create_stream(&a.name, capacity, max_message)?;
            let what = format!(
                "stream {} ({} bytes, messages up to {} bytes)",
                s.name(),
                s.capacity(),
                s.max_message()
            );
            let path = s.os_path().display().to_string();
            (Held::Stream(s), what, path)
        }
        KindArg::Broadcast | KindArg::Latest | KindArg::RequestReply => {
            let num = crate::rpc::number;
            let max = match k {
                KindArg::RequestReply => rpc::DEFAULT_MAX,
                _ => 4096,
            };
            let max = num(a.max_message, max, "--max-message")?;
            match k {
                KindArg::Broadcast => {
                    let slots = num(a.capacity, 64, "--capacity")?;
                    let b = opts.create_broadcast(&a.name, slots, max)?;
                    let what = format!(
                        "broadcast {} ({slots} slots, messages up to {max} bytes)",
                        b.name()
                    );
                    let path = b.os_path().display().to_string();
                    (Held::Broadcast(b), what, path)
                }
                KindArg::Latest => {
                    let l = opts.create_latest(&a.name, max)?;
                    let what = format!("latest-value channel {} (up to {max} bytes)", l.name());
                    let path = l.os_path().display().to_string();
                    (Held::Latest(l), what, path)
                }
                _ => {
                    let clients = num(a.capacity, rpc::DEFAULT_CLIENTS, "--capacity")?;
                    let reply = num(a.max_reply, rpc::DEFAULT_MAX, "--max-reply")?;
                    let r = opts.create_request_reply(&a.name, clients, max, reply)?;
                    let what = format!(
                        "request-reply channel {} ({clients} clients, requests up to {max} bytes, replies up to {reply})",
                        r.name()
                    );
                    let path = r.os_path().display().to_string();
                    (Held::RequestReply(r), what, path)
                }
            }
        }
    };
    // Signals are taken from here on: a script may send one as soon as it reads the line.
    let waiter = (!a.persistent).then(Waiter::start);
    outln!("created {what} at {path}");
    let name = filemap::Name::parse(&a.name)
        .map(|n| n.to_string())
        .unwrap_or(a.name);
    let Some(waiter) = waiter else {
        return Ok(());
    };
    errln!("holding {name} open; {HOW_TO_STOP} to close it");
    let _ = std::io::stdout().flush();
    let wake = waiter.wait();
    if let Wake::Signal(_) = wake {
        errln!("closing {name} ({})", wake.describe());
    }
    drop(held);
    Ok(())
}

pub(crate) fn write(ns: &Namespace, a: WriteArgs) -> CmdResult {
    let mapping = Options::new()
        .namespace(ns.clone())
        .open(&a.name, Access::ReadWrite)?;
    // What fits from the offset to the end: input is read up to one byte past it, never
    // further (--input /dev/zero, or endless standard input).
    let room = mapping.size().saturating_sub(a.offset);
    let too_long = || -> Failure {
        format!(
            "the input does not fit: {} has {room} bytes from offset {} to its end ({} bytes in all)",
            mapping.name().map(|n| n.to_string()).unwrap_or_default(),
            a.offset,
            mapping.size()
        )
        .into()
    };
    let read_bounded = |r: &mut dyn Read, what: &str| -> Result<Vec<u8>, Failure> {
        let mut buf = Vec::new();
        r.take(room.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        if buf.len() as u64 > room {
            return Err(too_long());
        }
        Ok(buf)
    };
    let data = match (&a.data, &a.input) {
        (Some(text), _) if a.as_type.is_some() => {
            a.as_type.map_or(Ok(Vec::new()), |t| t.parse(text))?
        }
        (Some(text), _) => {
            if a.nul {
                a.encoding.encode_nul(text)
            } else {
                a.encoding.encode(text)
            }
        }
        (None, Some(path)) => {
            let mut file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            read_bounded(&mut file, &path.display().to_string())?
        }
        (None, None) => read_bounded(&mut std::io::stdin().lock(), "standard input")?,
    };
    if data.is_empty() {
        return Ok(());
    }
    // DATA given on the command line is checked by the view: OutOfRange.
    let view = mapping.map_view(Access::ReadWrite, a.offset, data.len() as u64)?;
    view.write_at(0, &data)?;
    Ok(())
}

pub(crate) fn read(ns: &Namespace, a: ReadArgs) -> CmdResult {
    let mapping = Options::new()
        .namespace(ns.clone())
        .open(&a.name, Access::Read)?;
    let view = mapping.map_view(Access::Read, a.offset, a.len)?;
    let mut bytes = vec![0u8; view.len()];
    view.read_at(0, &mut bytes)?;
    if let Format::Number(n) = a.format {
        if bytes.len() % n.size() != 0 {
            return Err(format!(
                "{} bytes are not a whole number of {} values ({} bytes each); give --len",
                bytes.len(),
                n.name(),
                n.size()
            )
            .into());
        }
    }
    let mut out = std::io::stdout().lock();
    let result = match a.format {
        Format::Number(n) => {
            let text: String = bytes
                .chunks_exact(n.size())
                .map(|c| n.show(c) + "\n")
                .collect();
            out.write_all(text.as_bytes())
        }
        Format::Raw => out.write_all(&bytes),
        Format::Hex => out.write_all(hex_dump(&bytes, a.offset).as_bytes()),
        Format::Utf8 => writeln!(out, "{}", Encoding::Utf8.decode_nul(&bytes)),
        Format::Utf16 => writeln!(out, "{}", Encoding::Utf16.decode_nul(&bytes)),
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write the output: {e}").into()),
    }
}

fn hex_dump(bytes: &[u8], base: u64) -> String {
    let mut s = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(s, "{:08x} ", base + (i * 16) as u64);
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(s, " {b:02x}");
                }
                None => s.push_str("   "),
            }
        }
        s.push_str("  |");
        s.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        s.push_str("|\n");
    }
    s
}

/// The user name for a uid, from /etc/passwd, or the number.
fn user_name(uid: u32) -> String {
    filemap::user_name(uid).map_or_else(|| uid.to_string(), |n| Name::printable(&n).into_owned())
}

fn state(info: &ObjectInfo) -> &'static str {
    match (info.persistent, info.live) {
        (true, _) => "persistent",
        (false, Some(true)) => "live",
        (false, Some(false)) => "stale",
        (false, None) => "?",
    }
}

/// What `ls` and `info` say about a synchronization object's state.
fn detail(info: &ObjectInfo) -> String {
    match info.state {
        Some(SyncState::Mutex {
            owner_pid: Some(pid),
            abandoned: true,
            ..
        }) => format!("abandoned by pid {pid}"),
        // Windows tells that a mutex was abandoned, not by whom.
        Some(SyncState::Mutex {
            abandoned: true, ..
        }) => "abandoned".into(),
        Some(SyncState::Mutex {
            owner_pid: Some(pid),
            ..
        }) => format!("owned by pid {pid}"),
        Some(SyncState::Mutex { owned: true, .. }) => "owned".into(),
        Some(SyncState::Mutex { owned: false, .. }) => "free".into(),
        Some(SyncState::Semaphore { count, max }) => format!("count {count} of {max}"),
        Some(SyncState::Event { set, manual_reset }) => format!(
            "{}, {}",
            if set { "set" } else { "not set" },
            if manual_reset {
                "manual-reset"
            } else {
                "auto-reset"
            }
        ),
        Some(SyncState::Channel {
            capacity,
            queued,
            producer,
            peers,
            kind,
            ..
        }) => {
            let (who, them) = match kind {
                Kind::Stream => ("producer", "consumer"),
                Kind::Broadcast => ("publisher", "subscribers"),
                Kind::Latest => ("writer", ""),
                _ => ("server", "clients"),
            };
            let mut parts = Vec::new();
            if let Some(q) = queued {
                parts.push(format!("{q} queued"));
            }
            parts.push(match kind {
                Kind::Stream => format!("{capacity} bytes"),
                Kind::Broadcast => format!("{capacity} slots"),
                Kind::Latest => "2 buffers".to_owned(),
                _ => format!("{capacity} client slots"),
            });
            parts.push(format!(
                "{who} {}",
                if producer { "connected" } else { "none" }
            ));
            match kind {
                // A stream has one consumer or none, as it has one producer or none.
                Kind::Stream => parts.push(format!(
                    "{them} {}",
                    if peers > 0 { "connected" } else { "none" }
                )),
                _ if !them.is_empty() => parts.push(format!("{peers} {them}")),
                _ => {}
            }
            parts.join(", ")
        }
        Some(_) => String::new(),
        None if info.file_backed => "file-backed".into(),
        None => String::new(),
    }
}

/// A JSON object whose keys keep the order they are given in (serde_json's own map sorts
/// them).
struct Ordered(Vec<(&'static str, Value)>);

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Serialises one listing entry or `info`: never fails (the values are plain data).
fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The fields that every entry has, object or not.
fn owner_fields(owner_uid: Option<u32>, mode: Option<u32>) -> [(&'static str, Value); 3] {
    [
        ("owner_uid", json!(owner_uid)),
        ("owner", json!(owner_uid.map(user_name))),
        ("mode", json!(mode.map(|m| format!("{m:04o}")))),
    ]
}

fn to_json(info: &ObjectInfo) -> Ordered {
    let created = info
        .created
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    let mut fields = vec![
        // Exactly, not escaped as for terminals: JSON escapes control characters itself.
        ("name", json!(info.name.full())),
        ("kind", json!(info.kind.map(|k| k.as_str()))),
        ("size", json!(info.size)),
        (
            "os_path",
            json!(info.os_path.as_ref().map(|p| p.to_string_lossy())),
        ),
    ];
    fields.extend(owner_fields(info.owner_uid, info.mode));
    fields.extend([
        ("live", json!(info.live)),
        ("state", json!(state(info))),
        ("persistent", json!(info.persistent)),
        ("file_backed", json!(info.file_backed)),
        ("holders", json!(info.holders)),
        ("handles", json!(info.handles)),
        ("creator_pid", json!(info.creator_pid)),
        ("created", json!(created)),
    ]);
    match info.state {
        Some(SyncState::Mutex {
            owned,
            owner_pid,
            abandoned,
        }) => fields.extend([
            ("owned", json!(owned)),
            ("owner_pid", json!(owner_pid)),
            ("abandoned", json!(abandoned)),
        ]),
        Some(SyncState::Semaphore { count, max }) => {
            fields.extend([("count", json!(count)), ("max", json!(max))])
        }
        Some(SyncState::Event { set, manual_reset }) => fields.extend([
            ("signalled", json!(set)),
            ("manual_reset", json!(manual_reset)),
        ]),
        Some(SyncState::Channel {
            kind: _,
            capacity,
            max_message,
            queued,
            producer,
            peers,
        }) => fields.extend([
            ("capacity", json!(capacity)),
            ("max_message", json!(max_message)),
            ("queued", json!(queued)),
            ("producer", json!(producer)),
            ("peers", json!(peers)),
        ]),
        _ => {}
    }
    Ordered(fields)
}

/// A path for people: control characters escaped, as in names (another user may have
/// chosen it).
fn shown(path: &std::path::Path) -> String {
    Name::printable(&path.to_string_lossy()).into_owned()
}

/// An entry that is not an object, for JSON: the object fields that apply, and its reason.
fn refused_json(r: &Refused) -> Ordered {
    let mut fields = vec![
        ("name", json!(r.name.as_ref().map(|n| n.full()))),
        ("kind", Value::Null),
        ("size", Value::Null),
        ("os_path", json!(r.os_path.to_string_lossy())),
    ];
    fields.extend(owner_fields(r.owner_uid, r.mode));
    fields.extend([
        ("live", Value::Null),
        ("state", json!("refused")),
        ("refused", json!(r.reason)),
    ]);
    Ordered(fields)
}

pub(crate) fn ls(ns: &Namespace, a: LsArgs) -> CmdResult {
    let Listing {
        objects: mut list,
        mut refused,
        ..
    } = ns.list_all()?;
    if !a.kind.is_empty() {
        let kinds: Vec<Kind> = a.kind.iter().map(|k| k.kind()).collect();
        list.retain(|i| i.kind.is_some_and(|k| kinds.contains(&k)));
        // Entries that are not objects are of no kind.
        refused.clear();
    }
    if let Some(prefix) = &a.prefix {
        list.retain(|i| begins_with(&i.name, prefix));
        // Entries that stand for no name cannot match one.
        refused.retain(|r| r.name.as_ref().is_some_and(|n| begins_with(n, prefix)));
    }
    let mut out = String::new();
    if a.json {
        let items: Vec<Ordered> = list
            .iter()
            .map(to_json)
            .chain(refused.iter().map(refused_json))
            .collect();
        out.push_str(&json_text(&items));
        out.push('\n');
    } else {
        let refused_rows = refused.iter().map(|r| {
            [
                r.name.as_ref().map_or("?".into(), |n| n.to_string()),
                "-".into(),
                "-".into(),
                r.owner_uid.map_or("?".into(), user_name),
                r.mode.map_or("?".into(), |m| format!("{m:04o}")),
                "refused".into(),
                Name::printable(&r.reason).into_owned(),
                shown(&r.os_path),
            ]
        });
        let rows: Vec<[String; 8]> = list
            .iter()
            .map(|i| {
                [
                    i.name.to_string(),
                    i.kind.map(|k| k.as_str()).unwrap_or("?").to_owned(),
                    match (i.kind, i.size) {
                        (Some(filemap::Kind::Mapping), Some(size)) => size.to_string(),
                        (Some(_), _) => "-".into(),
                        (None, _) => "?".into(),
                    },
                    i.owner_uid.map_or("?".into(), user_name),
                    i.mode.map_or("?".into(), |m| format!("{m:04o}")),
                    state(i).to_owned(),
                    detail(i),
                    i.os_path.as_ref().map_or("?".into(), |p| shown(p)),
                ]
            })
            .chain(refused_rows)
            .collect();
        let header = [
            "NAME", "KIND", "SIZE", "OWNER", "MODE", "STATE", "DETAIL", "PATH",
        ]
        .map(String::from);
        // Windows tells no owner, mode or path: no columns of question marks.
        let shown_columns: Vec<usize> = (0..header.len())
            .filter(|&c| !(cfg!(windows) && [3, 4, 7].contains(&c)))
            .collect();
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for &c in &shown_columns {
                let _ = write!(line, "{:<width$}  ", row[c], width = widths[c]);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

pub(crate) fn info(ns: &Namespace, a: InfoArgs) -> CmdResult {
    let mut i = ns.info(&a.name)?;
    if a.holders && cfg!(windows) {
        i.holders = ns.holders(&a.name)?;
    }
    let text = if a.json {
        json_text(&to_json(&i)) + "\n"
    } else {
        let created = i
            .created
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| format!("{} ({} seconds since 1970)", utc(d.as_secs()), d.as_secs()));
        let holders = i
            .holders
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let detail = match detail(&i) {
            d if d.is_empty() => d,
            d => format!(" ({d})"),
        };
        // Lines for what this platform has: Windows objects have no owner uid, mode or
        // file, and Windows counts handles (and names holders only with --holders).
        let mut t = format!(
            "name:        {}\nkind:        {}\nsize:        {}\nstate:       {}{detail}\n",
            i.name,
            i.kind.map(|k| k.as_str()).unwrap_or("?"),
            i.size.map_or("?".into(), |s| s.to_string()),
            state(&i),
        );
        if let Some(uid) = i.owner_uid {
            let _ = writeln!(t, "owner:       {} (uid {uid})", user_name(uid));
        }
        if let Some(mode) = i.mode {
            let _ = writeln!(t, "mode:        {mode:04o}");
        }
        let _ = writeln!(
            t,
            "file-backed: {}",
            if i.file_backed { "yes" } else { "no" }
        );
        if cfg!(windows) {
            if let Some(n) = i.handles {
                let _ = writeln!(t, "handles:     {n} (besides this one)");
                // Only when asked for, and only the processes that we may inspect.
                if a.holders {
                    let _ = match (n, holders.is_empty()) {
                        (0, _) => writeln!(t, "holders:     none"),
                        (_, true) => writeln!(t, "holders:     none that we may inspect"),
                        (_, false) => writeln!(t, "holders:     {holders}"),
                    };
                }
            }
        } else {
            // The pids come from the holders' locks; a holder that wrote no valid pid
            // (a program outside filemap, say) is counted all the same.
            let count = i.handles.unwrap_or(0);
            let descriptors = if count == 1 {
                "descriptor"
            } else {
                "descriptors"
            };
            let _ = match (count, holders.is_empty()) {
                (0, _) => writeln!(t, "holders:     none"),
                (n, true) => writeln!(
                    t,
                    "holders:     {n} {descriptors} (their locks name no pid)"
                ),
                (n, false) => writeln!(t, "holders:     {holders} ({n} {descriptors} in all)"),
            };
        }
        let _ = writeln!(
            t,
            "creator pid: {}",
            i.creator_pid.map_or("?".into(), |p| p.to_string())
        );
        let _ = writeln!(t, "created:     {}", created.unwrap_or_else(|| "?".into()));
        if let Some(path) = &i.os_path {
            let _ = writeln!(t, "os path:     {}", shown(path));
        }
        t
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// Removes each name in turn, as `rm(1)` does: a name that cannot be removed is reported
/// on a line of its own, the others are removed all the same, and the exit status is 1
/// if any failed.
pub(crate) fn rm(ns: &Namespace, a: RmArgs) -> CmdResult {
    let mut failed = 0;
    for name in &a.names {
        if let Err(e) = ns.remove(name) {
            errln!("filemap: {e}");
            failed += 1;
        }
    }
    match failed {
        0 => Ok(()),
        // Each failure spoke for itself.
        _ => Err(Failure {
            message: String::new(),
            code: 1,
        }),
    }
}

pub(crate) fn gc(ns: &Namespace) -> CmdResult {
    let report = ns.gc_all()?;
    for name in &report.removed {
        outln!("removed {name}");
    }
    for r in &report.corrupt {
        let name = r.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        outln!(
            "removed {name}, which was corrupt: {}",
            Name::printable(&r.reason)
        );
    }
    for r in &report.refused {
        outln!(
            "left alone {}: {}",
            shown(&r.os_path),
            Name::printable(&r.reason)
        );
    }
    if report.corrupt.is_empty() {
        outln!("{} stale object(s) removed", report.removed.len());
    } else {
        outln!(
            "{} stale object(s) and {} corrupt file(s) removed",
            report.removed.len(),
            report.corrupt.len()
        );
    }
    Ok(())
}

pub(crate) fn init(ns: &Namespace) -> CmdResult {
    let report = ns.init()?;
    for line in &report.repaired {
        outln!("{line}");
    }
    for line in &report.to_remove {
        errln!("filemap: {line}");
    }
    outln!(
        "namespace root {} is ready (Global\\ in {})",
        shown(&ns.root()),
        shown(&report.global)
    );
    Ok(())
}

/// `secs` since 1970 as a UTC date and time, "2026-11-30 03:45:59 UTC" (the proleptic
/// Gregorian calendar, as `date -u` prints it; no time zone database needed).
pub(crate) fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date: count in 400-year eras of 146,097 days from
    // 0000-03-01, with years that begin in March so that a leap day ends its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}
