//! filemap's channels against iceoryx2, on the same machine, in the same run, with the
//! same message sizes and the same mode, with two processes (this program re-run as a
//! child).
//!
//! ```sh
//! cargo run --release --manifest-path benches/iceoryx2/Cargo.toml
//! ```
//!
//! Round trips of 64 B, 4 KiB and 64 KiB messages, copied in and copied out on both
//! sides, both sides busy-polling: iceoryx2 publish-subscribe (two services, ping and
//! pong) against a filemap stream pair, and iceoryx2 request-response against a filemap
//! request/reply channel.
//! A second table compares the event-driven modes, in which the waiting side sleeps:
//! iceoryx2's publish-subscribe and request-response with a notification through an event
//! service after each message (the waiting side in `Listener::blocking_wait`), against a
//! filemap stream pair and request/reply channel that park at once (`WaitStrategy::Park`)
//! and that spin first (the default), back to back and with the peers idle (a millisecond
//! apart).
//!
//! Each set of contenders runs in rounds, each with new processes and new objects, in an
//! order that changes from round to round. The tables give the median and p99 of every
//! round's round trips, the median over rounds of filemap's median over iceoryx2's in the
//! same round, and in how many rounds filemap's was lower.
// A benchmark's report may panic on a closed stdout.
#![allow(clippy::disallowed_macros)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use filemap::{Namespace, Options, WaitStrategy};
use iceoryx2::port::{listener::Listener, notifier::Notifier};
use iceoryx2::prelude::*;

const SIZES: [usize; 3] = [64, 4096, 65536];
/// Rounds per pair of contenders: a pair of processes, or a stretch of time, can run 2–4x
/// slow on these VMs (a 64 B raw ping-pong at 0.15–0.19 µs, or at 0.4–0.64), and where the
/// buffers land decides 64 KiB copies, so one run per contender was a coin flip at 64 KiB
/// (docs/BENCHMARKS.md, 2026-11-29, late).
const ROUNDS: usize = 7;
/// Round trips per contender and round (21,000 in all), after `WARM`.
const SAMPLES: usize = 3_000;
const WARM: usize = 500;
/// Round trips per contender and round with the peers idle, a millisecond apart (700 in
/// all), after `IDLE_WARM`.
const IDLE_SAMPLES: usize = 100;
const IDLE_WARM: usize = 10;

type Error = Box<dyn std::error::Error>;

fn pin(cpu: usize) {
    let mut set = rustix_cpu::CpuSet::new();
    set.set(cpu);
    let _ = rustix_cpu::sched_setaffinity(None, &set);
}

mod rustix_cpu {
    pub(crate) use rustix::thread::{sched_setaffinity, CpuSet};
}

fn opts(root: &str) -> Options {
    let mut o = Options::new();
    o.namespace(Namespace::at(root));
    o
}

/// The iceoryx2 services of one pair of processes: `fm/{tag}/{what}`, opened or made by
/// a node of each process.
struct Ice {
    node: Node<ipc::Service>,
    tag: String,
}

impl Ice {
    fn new(tag: &str) -> Result<Ice, Error> {
        Ok(Ice {
            node: NodeBuilder::new().create::<ipc::Service>()?,
            tag: tag.to_owned(),
        })
    }

    fn name(&self, what: &str) -> Result<ServiceName, Error> {
        Ok(format!("fm/{}/{what}", self.tag).as_str().try_into()?)
    }

    fn pubsub(&self, what: &str) -> Result<PubSub, Error> {
        Ok(self
            .node
            .service_builder(&self.name(what)?)
            .publish_subscribe::<[u8]>()
            .open_or_create()?)
    }

    fn event(&self, what: &str) -> Result<Event, Error> {
        Ok(self
            .node
            .service_builder(&self.name(what)?)
            .event()
            .open_or_create()?)
    }

    fn rpc(&self) -> Result<Rpc, Error> {
        Ok(self
            .node
            .service_builder(&self.name("rpc")?)
            .request_response::<[u8], [u8]>()
            .open_or_create()?)
    }
}

type PubSub =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;
type Event = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;
type Rpc = iceoryx2::service::port_factory::request_response::PortFactory<
    ipc::Service,
    [u8],
    (),
    [u8],
    (),
>;

/// The child side: echo every message back, until told to stop (a zero-length message).
fn child(args: &[String]) -> Result<(), Error> {
    pin(1);
    let (what, size, tag, root) = (&args[0], args[1].parse::<usize>()?, &args[2], &args[3]);
    let ready = || {
        println!("ready");
        std::io::stdout().flush().unwrap();
    };
    let mut buf = vec![0u8; size];
    match what.as_str() {
        "ice-pubsub" => {
            let ice = Ice::new(tag)?;
            let (ping, pong) = (ice.pubsub("ping")?, ice.pubsub("pong")?);
            let sub = ping.subscriber_builder().create()?;
            let publisher = pong
                .publisher_builder()
                .initial_max_slice_len(size)
                .create()?;
            let wake = Wake::new(&ice, root == "event", "pong-ev", "ping-ev")?;
            ready();
            loop {
                while let Some(sample) = sub.receive()? {
                    let payload = sample.payload();
                    if payload.is_empty() {
                        return Ok(());
                    }
                    buf.copy_from_slice(payload);
                    drop(sample);
                    publisher
                        .loan_slice_uninit(size)?
                        .write_from_slice(&buf)
                        .send()?;
                    wake.notify()?;
                }
                wake.wait()?;
            }
        }
        "ice-rpc" => {
            let ice = Ice::new(tag)?;
            let server = ice
                .rpc()?
                .server_builder()
                .initial_max_slice_len(size)
                .create()?;
            let wake = Wake::new(&ice, root == "event", "resp-ev", "req-ev")?;
            ready();
            loop {
                while let Some(active) = server.receive()? {
                    if active.payload().is_empty() {
                        return Ok(());
                    }
                    buf.copy_from_slice(active.payload());
                    active
                        .loan_slice_uninit(size)?
                        .write_from_slice(&buf)
                        .send()?;
                    wake.notify()?;
                }
                wake.wait()?;
            }
        }
        "fm-stream" => {
            let o = opts(root);
            let ping = o.open_stream("Local\\ping")?;
            let pong = o.open_stream("Local\\pong")?;
            let mut rx = ping.receiver()?;
            let mut tx = pong.sender()?;
            let strategy = strategy(tag)?;
            rx.set_wait_strategy(strategy);
            tx.set_wait_strategy(strategy);
            ready();
            loop {
                {
                    let m = match rx.recv() {
                        Ok(m) => m,
                        Err(filemap::Error::Disconnected { .. }) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    };
                    m.read_at(0, &mut buf)?;
                }
                tx.send(&buf)?;
            }
        }
        "fm-rpc" => {
            let o = opts(root);
            let rr = o.open_request_reply("Local\\rpc")?;
            let mut server = rr.server()?;
            server.set_wait_strategy(strategy(tag)?);
            ready();
            let mut req = Vec::with_capacity(size);
            loop {
                let t = server.recv(&mut req, None)?;
                if req.is_empty() {
                    return Ok(());
                }
                server.reply(t, &req)?;
            }
        }
        other => Err(format!("unknown child {other}").into()),
    }
}

struct Kid(Child);

impl Drop for Kid {
    /// Lets the child finish (it was told to stop), so that iceoryx2 cleans up after
    /// itself; kills it only if it does not within two seconds.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(what: &str, size: usize, tag: &str, root: &str) -> Result<Kid, Error> {
    let mut c = Command::new(std::env::current_exe()?)
        .args(["child", what, &size.to_string(), tag, root])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().ok_or("no stdout")?).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("child {what} did not start: {line:?}").into());
    }
    Ok(Kid(c))
}

/// One contender's results over the rounds: every round trip, and each round's median.
struct Runs {
    all: Vec<f64>,
    medians: Vec<f64>,
}

/// Runs every contender once per round for `ROUNDS` rounds, each time with new processes
/// and objects, in an order that rotates from round to round (two contenders alternate
/// which goes first). Each contender is called with the round's number.
fn rounds<const N: usize>(
    contenders: [&mut dyn FnMut(usize) -> Result<Vec<f64>, Error>; N],
) -> Result<[Runs; N], Error> {
    let mut runs = std::array::from_fn(|_| Runs {
        all: Vec::new(),
        medians: Vec::new(),
    });
    for round in 0..ROUNDS {
        for k in 0..N {
            let i = (round + k) % N;
            let v = contenders[i](round)?;
            let r: &mut Runs = &mut runs[i];
            r.medians.push(stats(v.clone()).0);
            r.all.extend(v);
        }
    }
    Ok(runs)
}

/// The median over rounds of `x`'s median over `base`'s in the same round, and in how
/// many rounds `x`'s was lower.
fn against(x: &Runs, base: &Runs) -> (f64, usize) {
    let ratios: Vec<f64> = x
        .medians
        .iter()
        .zip(&base.medians)
        .map(|(a, b)| a / b)
        .collect();
    let lower = ratios.iter().filter(|&&r| r < 1.0).count();
    (stats(ratios).0, lower)
}

/// Runs `f` on a filemap namespace root at `root` of its own, removed before and after.
fn in_fresh<T>(root: &str, f: impl FnOnce(&str) -> T) -> T {
    let _ = std::fs::remove_dir_all(root);
    let r = f(root);
    let _ = std::fs::remove_dir_all(root);
    r
}

/// Median and p99.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

/// Microseconds per round trip: `SAMPLES` back to back, or `IDLE_SAMPLES` `gap` apart.
fn time_as(
    gap: Option<Duration>,
    mut one: impl FnMut() -> Result<(), Error>,
) -> Result<Vec<f64>, Error> {
    let (warm, samples) = match gap {
        None => (WARM, SAMPLES),
        Some(_) => (IDLE_WARM, IDLE_SAMPLES),
    };
    let mut v = Vec::with_capacity(samples);
    for i in 0..warm + samples {
        if let Some(g) = gap {
            std::thread::sleep(g);
        }
        let t = Instant::now();
        one()?;
        if i >= warm {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(v)
}

/// How one side of an iceoryx2 pair waits for the other: busy-polling, or asleep on a
/// listener of an event service that the other side notifies after each message (the
/// event-driven mode).
struct Wake(Option<(Notifier<ipc::Service>, Listener<ipc::Service>, [Event; 2])>);

impl Wake {
    /// Event-driven if `event`: notifies through the service `notify` and listens on
    /// `listen`.
    fn new(ice: &Ice, event: bool, notify: &str, listen: &str) -> Result<Wake, Error> {
        if !event {
            return Ok(Wake(None));
        }
        let (n, l) = (ice.event(notify)?, ice.event(listen)?);
        let notifier = n.notifier_builder().create()?;
        let listener = l.listener_builder().create()?;
        Ok(Wake(Some((notifier, listener, [n, l]))))
    }

    /// Tells the other side that a message is there (event-driven only).
    fn notify(&self) -> Result<(), Error> {
        if let Some((n, _, _)) = &self.0 {
            n.notify()?;
        }
        Ok(())
    }

    /// Waits a moment (busy) or until notified (event-driven) before the next look.
    fn wait(&self) -> Result<(), Error> {
        match &self.0 {
            Some((_, l, _)) => {
                l.blocking_wait(|_| {})?;
            }
            None => std::hint::spin_loop(),
        }
        Ok(())
    }
}

/// iceoryx2 publish-subscribe round trips (two services, ping and pong), busy-polling or
/// event-driven (`event`), back to back or `gap` apart.
fn ice_pubsub(
    size: usize,
    tag: &str,
    event: bool,
    gap: Option<Duration>,
) -> Result<Vec<f64>, Error> {
    let ice = Ice::new(tag)?;
    let (ping, pong) = (ice.pubsub("ping")?, ice.pubsub("pong")?);
    let publisher = ping
        .publisher_builder()
        .initial_max_slice_len(size)
        .create()?;
    let sub = pong.subscriber_builder().create()?;
    let wake = Wake::new(&ice, event, "ping-ev", "pong-ev")?;
    // The child subscribes before it says ready.
    let _kid = spawn("ice-pubsub", size, tag, mode(event))?;
    let payload = vec![1u8; size];
    let mut back = vec![0u8; size];
    let r = time_as(gap, || {
        publisher
            .loan_slice_uninit(size)?
            .write_from_slice(&payload)
            .send()?;
        wake.notify()?;
        loop {
            if let Some(s) = sub.receive()? {
                back.copy_from_slice(s.payload());
                return Ok(());
            }
            wake.wait()?;
        }
    })?;
    publisher
        .loan_slice_uninit(0)?
        .write_from_slice(&[])
        .send()?;
    wake.notify()?;
    Ok(r)
}

/// iceoryx2 request-response round trips, busy-polling or event-driven (`event`: the
/// client notifies the server after each request, the server the client after each
/// response), back to back or `gap` apart.
fn ice_rpc(size: usize, tag: &str, event: bool, gap: Option<Duration>) -> Result<Vec<f64>, Error> {
    let ice = Ice::new(tag)?;
    let client = ice
        .rpc()?
        .client_builder()
        .initial_max_slice_len(size)
        .create()?;
    let wake = Wake::new(&ice, event, "req-ev", "resp-ev")?;
    let _kid = spawn("ice-rpc", size, tag, mode(event))?;
    let payload = vec![1u8; size];
    let mut back = vec![0u8; size];
    let r = time_as(gap, || {
        let pending = client
            .loan_slice_uninit(size)?
            .write_from_slice(&payload)
            .send()?;
        wake.notify()?;
        loop {
            if let Some(resp) = pending.receive()? {
                back.copy_from_slice(resp.payload());
                return Ok(());
            }
            wake.wait()?;
        }
    })?;
    let _ = client.loan_slice_uninit(0)?.write_from_slice(&[]).send()?;
    wake.notify()?;
    std::thread::sleep(Duration::from_millis(10));
    Ok(r)
}

/// The children's name for an iceoryx2 mode.
fn mode(event: bool) -> &'static str {
    if event {
        "event"
    } else {
        "busy"
    }
}

fn ice_pubsub_busy(size: usize, tag: &str) -> Result<Vec<f64>, Error> {
    ice_pubsub(size, tag, false, None)
}

fn ice_rpc_busy(size: usize, tag: &str) -> Result<Vec<f64>, Error> {
    ice_rpc(size, tag, false, None)
}

fn ice_pubsub_event(size: usize, tag: &str, gap: Option<Duration>) -> Result<Vec<f64>, Error> {
    ice_pubsub(size, tag, true, gap)
}

fn ice_rpc_event(size: usize, tag: &str, gap: Option<Duration>) -> Result<Vec<f64>, Error> {
    ice_rpc(size, tag, true, gap)
}

fn fm_stream(size: usize, root: &str) -> Result<Vec<f64>, Error> {
    fm_stream_as(size, root, "busy", None)
}

/// The wait strategy named `name` (as the children are told it).
fn strategy(name: &str) -> Result<WaitStrategy, Error> {
    Ok(match name {
        "busy" => WaitStrategy::BusyPoll,
        "default" => WaitStrategy::SpinThenPark,
        "park" => WaitStrategy::Park,
        other => return Err(format!("no wait strategy {other:?}").into()),
    })
}

/// A stream pair's round trips with both sides waiting as `mode` says, back to back or
/// `gap` apart.
fn fm_stream_as(
    size: usize,
    root: &str,
    mode: &str,
    gap: Option<Duration>,
) -> Result<Vec<f64>, Error> {
    let o = opts(root);
    let ping = o.create_stream("Local\\ping", 1 << 18, 65536)?;
    let pong = o.create_stream("Local\\pong", 1 << 18, 65536)?;
    let mut tx = ping.sender()?;
    let mut rx = pong.receiver()?;
    tx.set_wait_strategy(strategy(mode)?);
    rx.set_wait_strategy(strategy(mode)?);
    let kid = spawn("fm-stream", size, mode, root)?;
    let payload = vec![1u8; size];
    let mut back = vec![0u8; size];
    let r = time_as(gap, || {
        tx.send(&payload)?;
        rx.recv()?.read_at(0, &mut back)?;
        Ok(())
    })?;
    drop(tx);
    drop(kid);
    Ok(r)
}

fn fm_rpc(size: usize, root: &str) -> Result<Vec<f64>, Error> {
    fm_rpc_as(size, root, "busy", None)
}

/// A request/reply channel's calls with both sides waiting as `mode` says, back to back
/// or `gap` apart.
fn fm_rpc_as(
    size: usize,
    root: &str,
    mode: &str,
    gap: Option<Duration>,
) -> Result<Vec<f64>, Error> {
    let o = opts(root);
    let rr = o.create_request_reply("Local\\rpc", 2, 65536, 65536)?;
    let mut client = rr.client()?;
    client.set_wait_strategy(strategy(mode)?);
    let _kid = spawn("fm-rpc", size, mode, root)?;
    let payload = vec![1u8; size];
    let mut back = Vec::with_capacity(size);
    let r = time_as(gap, || {
        client.call(&payload, &mut back, None)?;
        Ok(())
    })?;
    let _ = client.call(&[], &mut back, Some(Duration::from_millis(100)));
    Ok(r)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    pin(0);
    // What iceoryx2 leaves in /tmp and /dev/shm is removed at the end if it was not there
    // before.
    let had_tmp = std::path::Path::new("/tmp/iceoryx2").exists();
    let shm_before: Vec<_> = std::fs::read_dir("/dev/shm")?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    let pid = std::process::id();
    let root = format!("/dev/shm/filemap-vs-iceoryx2-{pid}");
    println!("### Round trip, both sides busy-polling, two processes on two CPUs ({ROUNDS} rounds of {SAMPLES} round trips, after {WARM})\n");
    println!("| pattern | size | iceoryx2 median µs | iceoryx2 p99 µs | filemap median µs | filemap p99 µs | filemap / iceoryx2 | rounds filemap lower |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    type Contender = fn(usize, &str) -> Result<Vec<f64>, Error>;
    for size in SIZES {
        for (pattern, ice, fm) in [
            (
                "publish-subscribe / stream pair",
                ice_pubsub_busy as Contender,
                fm_stream as Contender,
            ),
            ("request-response / request-reply", ice_rpc_busy, fm_rpc),
        ] {
            let tag = |round| format!("{pid}-{size}-{}-{round}", pattern.len());
            let [ice, fm] = rounds([&mut |round| ice(size, &tag(round)), &mut |_| {
                in_fresh(&root, |root| fm(size, root))
            }])?;
            let (ratio, lower) = against(&fm, &ice);
            let [(im, ip), (fmm, fmp)] = [ice.all, fm.all].map(stats);
            println!(
                "| {pattern} | {size} | {im:.2} | {ip:.2} | {fmm:.2} | {fmp:.2} | {ratio:.2}x | {lower} of {ROUNDS} |"
            );
        }
    }
    println!();
    println!("### Round trip, event-driven: the waiting side sleeps ({ROUNDS} rounds of {SAMPLES} round trips back to back, or {IDLE_SAMPLES} a millisecond apart)\n");
    println!("iceoryx2: each message (publish-subscribe) or request and response followed by a notification through an event service, and the waiting side in `Listener::blocking_wait`. filemap: a stream pair or a request/reply channel, parking at once (`WaitStrategy::Park`, the same mode) or spinning first (the default).\n");
    println!("| pattern | size | timing | iceoryx2 median µs | iceoryx2 p99 µs | filemap park median µs | filemap park p99 µs | park / iceoryx2 | rounds park lower | filemap default median µs | default / iceoryx2 |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    type IceEvent = fn(usize, &str, Option<Duration>) -> Result<Vec<f64>, Error>;
    type FmAs = fn(usize, &str, &str, Option<Duration>) -> Result<Vec<f64>, Error>;
    for (pattern, ice_ev, fm_as) in [
        (
            "publish-subscribe / stream pair",
            ice_pubsub_event as IceEvent,
            fm_stream_as as FmAs,
        ),
        ("request-response / request-reply", ice_rpc_event, fm_rpc_as),
    ] {
        for size in SIZES {
            for gap in [None, Some(Duration::from_millis(1))] {
                let tag = |round| {
                    format!(
                        "{pid}-ev-{}-{size}-{}-{round}",
                        pattern.len(),
                        gap.is_some()
                    )
                };
                let [ice, park, default] = rounds([
                    &mut |round| ice_ev(size, &tag(round), gap),
                    &mut |_| in_fresh(&root, |root| fm_as(size, root, "park", gap)),
                    &mut |_| in_fresh(&root, |root| fm_as(size, root, "default", gap)),
                ])?;
                let (park_ratio, lower) = against(&park, &ice);
                let (default_ratio, _) = against(&default, &ice);
                let [ice, park, default] = [ice.all, park.all, default.all].map(stats);
                println!(
                    "| {pattern} | {size} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {park_ratio:.2}x | {lower} of {ROUNDS} | {:.2} | {default_ratio:.3}x |",
                    if gap.is_some() { "idle (1 ms apart)" } else { "back to back" },
                    ice.0,
                    ice.1,
                    park.0,
                    park.1,
                    default.0,
                );
            }
        }
    }
    if !had_tmp {
        let _ = std::fs::remove_dir_all("/tmp/iceoryx2");
    }
    for e in std::fs::read_dir("/dev/shm")?.flatten() {
        let n = e.file_name();
        if n.to_string_lossy().starts_with("iox2_") && !shm_before.contains(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}
