"""filemap-ipc against Python's own tools, measured in one run.

    python3 -m pip install ./crates/filemap-py
    python3 crates/filemap-py/bench/bench.py

- Cycles of a 4 KiB object: create + map + close (+ unlink for shared_memory, whose name
  would otherwise outlive it), and attach (open + map + close) to a live one, against
  ``multiprocessing.shared_memory.SharedMemory`` (and ``posix_ipc`` if installed).
- Copy throughput into and out of a 1 MiB view, against ``SharedMemory.buf``.
- A 64 KiB NumPy frame sent through a stream and received into an array, in one thread:
  ``send(a)`` + ``recv_into(out)``, against the ``bytes`` way (``send(a.tobytes())`` +
  ``recv()`` + a copy into ``out``), a Unix socket pair (``sendall`` + ``recv_into``) and a
  ``multiprocessing.Pipe`` (``send_bytes`` + ``recv_bytes_into``). Needs NumPy.
- The same frame through a latest-value channel (``publish`` once, then ``read_into(out)``,
  against ``read()`` + a copy, and against a copy out of ``SharedMemory``, which has no
  seqlock and may tear) and a broadcast (``send`` + ``recv_into(out)``, against ``send`` +
  ``recv()`` + a copy). Needs NumPy.
- Frames of 64 KiB and 1 MiB written and read in place: computed (``a * 2``) straight
  into a ``Sender.loan``, against computed into an array and sent; and summed where they
  are (``Receiver.recv_in_place``), against received into an array and summed. Needs
  NumPy.
- An event round trip between two processes (spawned), against two
  ``multiprocessing.Event``s, a ``multiprocessing.Pipe`` and (if installed) two
  ``posix_ipc.Semaphore``s.

``posix_ipc`` is optional (``python3 -m pip install posix_ipc``); without it its rows are
left out.

Every round times each contender in turn (a slow phase of the machine then costs them
alike), starting one further on each round: medians of 7 rounds (3 for the round trips); a ratio is the median of the rounds'
ratios of filemap's time over the other's (below 1 is faster), or of throughput over
throughput. Prints a Markdown table.
"""

import mmap
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from multiprocessing import shared_memory

# The parent's root; spawned children import this module again and inherit it.
ROOT = os.environ.setdefault("FILEMAP_ROOT", f"/dev/shm/filemap-pybench-{os.getpid()}")

import filemap  # noqa: E402

try:
    import posix_ipc  # type: ignore[import-not-found]
except ImportError:  # optional: its rows are left out
    posix_ipc = None

# posix_ipc's names (POSIX: a leading slash), unique to this run.
PX = f"/filemap-pybench-{os.getpid()}"

ROUNDS = 7


def once(n, f):
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def interleaved(n, *fs):
    """Seconds per call of each of ``fs``, one list of ROUNDS each. Every round times each
    function in turn, so that a slow phase of the machine costs them alike, and each round
    starts one function further on, so that none always follows the same one (a cycle
    leaves the kernel deferred work, freeing inodes and pages, that the next one pays)."""
    times = [[] for _ in fs]
    for r in range(ROUNDS):
        for i in range(len(fs)):
            k = (r + i) % len(fs)
            times[k].append(once(n, fs[k]))
    return times


def fm_create():
    m = filemap.FileMapping.create("Local\\bench-c", 4096)
    v = m.view()
    v.release()
    m.close()


def fm_sparse_create():
    # Storage not reserved: pages come at first touch, as with shared_memory's ftruncate.
    m = filemap.FileMapping.create("Local\\bench-s", 4096, sparse=True)
    v = m.view()
    v.release()
    m.close()


def shm_create():
    s = shared_memory.SharedMemory("bench-c", create=True, size=4096)
    s.close()
    s.unlink()


def px_create():
    s = posix_ipc.SharedMemory(PX + "-c", posix_ipc.O_CREX, size=4096)
    m = mmap.mmap(s.fd, 4096)
    s.close_fd()
    m.close()
    s.unlink()


def fms_create():
    s = filemap.SharedMemory("bench-d", create=True, size=4096)
    s.close()


def events_child(ping, pong, n, kind):
    if kind == "filemap":
        a = filemap.Event.open(ping)
        b = filemap.Event.open(pong)
        for _ in range(n):
            a.wait()
            b.set()
    elif kind == "posix_ipc":
        a, b = posix_ipc.Semaphore(ping), posix_ipc.Semaphore(pong)
        for _ in range(n):
            a.acquire()
            b.release()
        a.close()
        b.close()
    elif kind == "mp":
        for _ in range(n):
            ping.wait()
            ping.clear()
            pong.set()
    else:
        for _ in range(n):
            ping.recv_bytes()
            pong.send_bytes(b"x")


def round_trip(kind, n):
    ctx = multiprocessing.get_context("spawn")
    if kind == "filemap":
        a = filemap.Event.create("Local\\bench-ping")
        b = filemap.Event.create("Local\\bench-pong")
        args = ("Local\\bench-ping", "Local\\bench-pong", n, kind)
    elif kind == "posix_ipc":
        a = posix_ipc.Semaphore(PX + "-ping", posix_ipc.O_CREX)
        b = posix_ipc.Semaphore(PX + "-pong", posix_ipc.O_CREX)
        args = (PX + "-ping", PX + "-pong", n, kind)
    elif kind == "mp":
        a, b = ctx.Event(), ctx.Event()
        args = (a, b, n, kind)
    else:
        (ra, wa), (rb, wb) = ctx.Pipe(duplex=False), ctx.Pipe(duplex=False)
        args = (ra, wb, n, kind)
    p = ctx.Process(target=events_child, args=args)
    p.start()
    t = time.perf_counter()
    for _ in range(n):
        if kind == "filemap":
            a.set()
            b.wait()
        elif kind == "posix_ipc":
            a.release()
            b.acquire()
        elif kind == "mp":
            a.set()
            b.wait()
            b.clear()
        else:
            wa.send_bytes(b"x")
            rb.recv_bytes()
    dt = time.perf_counter() - t
    p.join()
    if kind == "filemap":
        a.close()
        b.close()
    elif kind == "posix_ipc":
        for sem in (a, b):
            sem.unlink()
            sem.close()
    return dt / n


def frames():
    """Rows for a 64 KiB float32 NumPy frame, sent and received into an array in one
    thread, one frame at a time; none without NumPy."""
    try:
        import numpy as np
    except ImportError:
        return []
    import socket

    frame = np.arange(64 * 256, dtype=np.float32).reshape(64, 256)
    out = np.empty_like(frame)
    st = filemap.Stream.create("Local\\bench-frames", 1 << 18, frame.nbytes)
    tx, rx = st.sender(), st.receiver()
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    out_bytes = memoryview(out).cast("B")
    p, q = multiprocessing.Pipe()

    def fm_buffers():
        tx.send(frame)
        rx.recv_into(out)

    def fm_bytes():
        tx.send(frame.tobytes())
        out[:] = np.frombuffer(rx.recv(), dtype=np.float32).reshape(out.shape)

    def sock():
        a.sendall(frame)
        got = 0
        while got < frame.nbytes:
            got += b.recv_into(out_bytes[got:])

    def pipe():
        p.send_bytes(frame)
        q.recv_bytes_into(out_bytes)

    fm_b, fm_y, so, pi = interleaved(2000, fm_buffers, fm_bytes, sock, pipe)
    assert (out == frame).all()
    what = "64 KiB NumPy frame: send + receive into an array, one thread"
    rows = [
        (what, "send(a) + recv_into(out)", fm_b, "send(a.tobytes()) + recv() + copy", fm_y),
        (what, "send(a) + recv_into(out)", fm_b, "Unix socket pair: sendall + recv_into", so),
        (what, "send(a) + recv_into(out)", fm_b, "multiprocessing.Pipe: send_bytes + recv_bytes_into", pi),
    ]
    for end in (tx, rx, st, a, b, p, q):
        end.close()
    return rows


def slot_frames():
    """Rows for a 64 KiB float32 NumPy frame through the slot channels, in one thread: a
    latest value published and read into an array, and a broadcast message sent and
    received into one, each against the ``bytes`` way; none without NumPy."""
    try:
        import numpy as np
    except ImportError:
        return []

    frame = np.arange(64 * 256, dtype=np.float32).reshape(64, 256)
    out = np.empty_like(frame)
    latest = filemap.Latest.create("Local\\bench-latest", frame.nbytes)
    writer, reader = latest.writer(), latest.reader()
    writer.publish(frame)
    shm = shared_memory.SharedMemory(create=True, size=frame.nbytes)
    shm.buf[:] = memoryview(frame).cast("B")
    shm_frame = np.ndarray(frame.shape, dtype=frame.dtype, buffer=shm.buf)

    def read_into():
        reader.read_into(out)

    def read_bytes():
        out[:] = np.frombuffer(reader.read()[0], dtype=np.float32).reshape(out.shape)

    def shm_copy():
        out[:] = shm_frame

    ri, rb, sc = interleaved(2000, read_into, read_bytes, shm_copy)
    assert (out == frame).all()
    what = "64 KiB NumPy frame: latest value read into an array, one thread"
    rows = [
        (what, "read_into(out)", ri, "read() + copy", rb),
        (what, "read_into(out)", ri, "SharedMemory: out[:] = frame (no seqlock: may tear)", sc),
    ]

    bc = filemap.Broadcast.create("Local\\bench-broadcast", 4, frame.nbytes)
    publisher, subscriber = bc.publisher(), bc.subscriber()

    def recv_into():
        publisher.send(frame)
        subscriber.recv_into(out)

    def recv_bytes():
        publisher.send(frame)
        out[:] = np.frombuffer(subscriber.recv()[0], dtype=np.float32).reshape(out.shape)

    bi, bb = interleaved(2000, recv_into, recv_bytes)
    assert (out == frame).all()
    what = "64 KiB NumPy frame: broadcast send + receive into an array, one thread"
    rows.append((what, "send(a) + recv_into(out)", bi, "send(a) + recv() + copy", bb))
    del shm_frame
    shm.close()
    shm.unlink()
    for end in (writer, reader, latest, publisher, subscriber, bc):
        end.close()
    return rows


def in_place():
    """Rows for frames written and read in place (a loan, a message received in place)
    against the same work through an array, at 64 KiB and 1 MiB; none without NumPy."""
    try:
        import numpy as np
    except ImportError:
        return []
    rows = []
    for side, n in ((128, 2000), (512, 200)):
        frame = np.arange(side * side, dtype=np.float32).reshape(side, side)
        tmp, out = np.empty_like(frame), np.empty_like(frame)
        size = f"{frame.nbytes // 1024} KiB" if frame.nbytes < 1 << 20 else f"{frame.nbytes >> 20} MiB"
        st = filemap.Stream.create("Local\\bench-in-place", 4 * frame.nbytes, frame.nbytes)
        tx, rx = st.sender(), st.receiver()

        def computed_into_loan():
            with tx.loan(frame.nbytes) as buf:
                np.multiply(frame, 2, out=np.frombuffer(buf, np.float32).reshape(frame.shape))
            rx.recv_into(out)

        def computed_then_sent():
            np.multiply(frame, 2, out=tmp)
            tx.send(tmp)
            rx.recv_into(out)

        def summed_in_place():
            tx.send(frame)
            with rx.recv_in_place() as buf:
                np.frombuffer(buf, np.float32).sum()

        def summed_after_copy():
            tx.send(frame)
            rx.recv_into(out)
            out.sum()

        lo, se, ip, co = interleaved(n, computed_into_loan, computed_then_sent, summed_in_place, summed_after_copy)
        computed_into_loan()
        assert (out == 2 * frame).all()
        summed_after_copy()
        assert (out == frame).all()
        rows.append((f"{size} frame computed (a * 2) and sent, received with recv_into",
                     "into Sender.loan", lo, "into an array, then send", se))
        rows.append((f"{size} frame sent, received and summed",
                     "recv_in_place", ip, "recv_into an array", co))
        for end in (tx, rx, st):
            end.close()
    return rows


def main():
    # Each row: what, filemap's label, its per-round values, the other's label, its values.
    # Values are seconds, or bytes per second for the copies.
    rows = []
    n = 2000
    fs = [fm_create, shm_create, fms_create, fm_sparse_create] + ([px_create] if posix_ipc else [])
    fm, shm, fms, sparse, *px = interleaved(n, *fs)
    rows.append(("create + map + close, 4 KiB", "FileMapping", fm, "SharedMemory (+ unlink)", shm))
    rows.append(("create + map + close, 4 KiB", "filemap.SharedMemory", fms, "SharedMemory (+ unlink)", shm))
    rows.append(("create + map + close, 4 KiB", "FileMapping, sparse=True", sparse, "SharedMemory (+ unlink)", shm))
    if px:
        rows.append(("create + map + close, 4 KiB", "FileMapping", fm, "posix_ipc.SharedMemory (+ unlink)", px[0]))
    held = filemap.FileMapping.create("Local\\bench-a", 4096)
    held_shm = shared_memory.SharedMemory("bench-a", create=True, size=4096)
    held_px = posix_ipc.SharedMemory(PX + "-a", posix_ipc.O_CREX, size=4096) if posix_ipc else None

    def fm_attach():
        m = filemap.FileMapping.open("Local\\bench-a")
        v = m.view()
        v.release()
        m.close()

    def shm_attach():
        s = shared_memory.SharedMemory("bench-a")
        s.close()

    def px_attach():
        s = posix_ipc.SharedMemory(PX + "-a")
        m = mmap.mmap(s.fd, 4096)
        s.close_fd()
        m.close()

    fm_att, shm_att, *px_att = interleaved(n, fm_attach, shm_attach, *([px_attach] if posix_ipc else []))
    rows.append(("attach + map + close, 4 KiB", "FileMapping", fm_att, "SharedMemory", shm_att))
    if px_att:
        rows.append(("attach + map + close, 4 KiB", "FileMapping", fm_att, "posix_ipc.SharedMemory", px_att[0]))
    if held_px is not None:
        held_px.close_fd()
        held_px.unlink()
    held.close()
    held_shm.close()
    held_shm.unlink()

    size = 1 << 20
    big = filemap.FileMapping.create("Local\\bench-big", size)
    v = big.view()
    s = shared_memory.SharedMemory("bench-big", create=True, size=size)
    data, out = bytes(size), bytearray(size)

    def fm_in():
        v[:] = data

    def shm_in():
        s.buf[:size] = data

    def fm_out():
        out[:] = v

    def shm_out():
        out[:] = s.buf[:size]

    def rate(times):
        return [size / t for t in times]

    fm_i, shm_i, fm_o, shm_o = map(rate, interleaved(200, fm_in, shm_in, fm_out, shm_out))
    rows.append(("copy 1 MiB in (GB/s)", "view[:] = data", fm_i, "buf[:] = data", shm_i))
    rows.append(("copy 1 MiB out (GB/s)", "out[:] = view", fm_o, "out[:] = buf", shm_o))
    v.release()
    big.close()
    s.close()
    s.unlink()

    rows += frames()
    rows += slot_frames()
    rows += in_place()

    kinds = ("filemap", "mp", "pipe") + (("posix_ipc",) if posix_ipc is not None else ())
    rt = {k: [] for k in kinds}
    for _ in range(3):
        for k in kinds:
            rt[k].append(round_trip(k, 2000))
    rows.append(("event round trip, two processes", "Event", rt["filemap"], "multiprocessing.Event", rt["mp"]))
    rows.append(("event round trip, two processes", "Event", rt["filemap"], "multiprocessing.Pipe", rt["pipe"]))
    if posix_ipc is not None:
        rows.append(("event round trip, two processes", "Event", rt["filemap"], "posix_ipc.Semaphore pair", rt["posix_ipc"]))

    print(f"### Python {sys.version.split()[0]}: filemap-ipc against the standard library and posix_ipc (medians of {ROUNDS} rounds, 3 for the round trips; the ratio is the median of the rounds' ratios)\n")
    print("| measure | filemap | filemap value | other | its value | filemap / it |")
    print("|---|---|---:|---|---:|---:|")
    for what, a, xs, b, ys in rows:
        x, y = statistics.median(xs), statistics.median(ys)
        ratio = statistics.median(p / q for p, q in zip(xs, ys))
        if "GB/s" in what:
            print(f"| {what} | {a} | {x / 1e9:.2f} | {b} | {y / 1e9:.2f} | {ratio:.2f}x |")
        else:
            print(f"| {what} | {a} | {x * 1e6:.1f} µs | {b} | {y * 1e6:.1f} µs | {ratio:.2f}x |")


if __name__ == "__main__":
    try:
        main()
    finally:
        if ROOT.startswith("/dev/shm/filemap-pybench-"):
            shutil.rmtree(ROOT, ignore_errors=True)
