"""filemap-ipc against Python's own tools, measured in one run.

    python3 -m pip install ./crates/filemap-py
    python3 crates/filemap-py/bench/bench.py

- Cycles of a 4 KiB object: create + map + close (+ unlink for shared_memory, whose name
  would otherwise outlive it), and attach (open + map + close) to a live one, against
  ``multiprocessing.shared_memory.SharedMemory`` (and ``posix_ipc`` if installed).
- Copy throughput into and out of a 1 MiB view, against ``SharedMemory.buf``.
- An event round trip between two processes (spawned), against two
  ``multiprocessing.Event``s, a ``multiprocessing.Pipe`` and (if installed) two
  ``posix_ipc.Semaphore``s.

``posix_ipc`` is optional (``python3 -m pip install posix_ipc``); without it its rows are
left out.

Medians of 7 rounds (3 for the round trips); ratios are filemap's time over the other's
(below 1 is faster), or throughput over throughput. Prints a Markdown table.
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


def median(n, f):
    def once():
        t = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t) / n

    return statistics.median(once() for _ in range(ROUNDS))


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


def main():
    rows = []
    n = 2000
    fm, shm, fms = median(n, fm_create), median(n, shm_create), median(n, fms_create)
    rows.append(("create + map + close, 4 KiB", "FileMapping", fm, "SharedMemory (+ unlink)", shm))
    rows.append(("create + map + close, 4 KiB", "filemap.SharedMemory", fms, "SharedMemory (+ unlink)", shm))
    sparse = median(n, fm_sparse_create)
    rows.append(("create + map + close, 4 KiB", "FileMapping, sparse=True", sparse, "SharedMemory (+ unlink)", shm))
    if posix_ipc is not None:
        rows.append(("create + map + close, 4 KiB", "FileMapping", fm, "posix_ipc.SharedMemory (+ unlink)", median(n, px_create)))
    held = filemap.FileMapping.create("Local\\bench-a", 4096)
    held_shm = shared_memory.SharedMemory("bench-a", create=True, size=4096)

    def fm_attach():
        m = filemap.FileMapping.open("Local\\bench-a")
        v = m.view()
        v.release()
        m.close()

    def shm_attach():
        s = shared_memory.SharedMemory("bench-a")
        s.close()

    fm_att = median(n, fm_attach)
    rows.append(("attach + map + close, 4 KiB", "FileMapping", fm_att, "SharedMemory", median(n, shm_attach)))
    if posix_ipc is not None:
        held_px = posix_ipc.SharedMemory(PX + "-a", posix_ipc.O_CREX, size=4096)

        def px_attach():
            s = posix_ipc.SharedMemory(PX + "-a")
            m = mmap.mmap(s.fd, 4096)
            s.close_fd()
            m.close()

        rows.append(("attach + map + close, 4 KiB", "FileMapping", fm_att, "posix_ipc.SharedMemory", median(n, px_attach)))
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

    rows.append(("copy 1 MiB in (GB/s)", "view[:] = data", size / median(200, fm_in) / 1e9, "buf[:] = data", size / median(200, shm_in) / 1e9))
    rows.append(("copy 1 MiB out (GB/s)", "out[:] = view", size / median(200, fm_out) / 1e9, "out[:] = buf", size / median(200, shm_out) / 1e9))
    v.release()
    big.close()
    s.close()
    s.unlink()

    kinds = ("filemap", "mp", "pipe") + (("posix_ipc",) if posix_ipc is not None else ())
    rt = {k: statistics.median(round_trip(k, 2000) for _ in range(3)) for k in kinds}
    rows.append(("event round trip, two processes", "Event", rt["filemap"], "multiprocessing.Event", rt["mp"]))
    rows.append(("event round trip, two processes", "Event", rt["filemap"], "multiprocessing.Pipe", rt["pipe"]))
    if posix_ipc is not None:
        rows.append(("event round trip, two processes", "Event", rt["filemap"], "posix_ipc.Semaphore pair", rt["posix_ipc"]))

    print(f"### Python {sys.version.split()[0]}: filemap-ipc against the standard library and posix_ipc (median of {ROUNDS} rounds; round trips: 3)\n")
    print("| measure | filemap | filemap value | other | its value | filemap / it |")
    print("|---|---|---:|---|---:|---:|")
    for what, a, x, b, y in rows:
        if "GB/s" in what:
            print(f"| {what} | {a} | {x:.2f} | {b} | {y:.2f} | {x / y:.2f}x |")
        else:
            print(f"| {what} | {a} | {x * 1e6:.1f} µs | {b} | {y * 1e6:.1f} µs | {x / y:.2f}x |")


if __name__ == "__main__":
    try:
        main()
    finally:
        if ROOT.startswith("/dev/shm/filemap-pybench-"):
            shutil.rmtree(ROOT, ignore_errors=True)
