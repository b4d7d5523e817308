"""The filemap-ipc package with real processes: Python to Python, Python and the Rust CLI,
crashes, and bad input. Run by tests/python.rs (``cargo test``), or by hand:
``FILEMAP_EXE=target/debug/filemap python3 -m pytest crates/filemap-py/tests``."""

import ctypes
import gc
import io
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import filemap

EXE = os.environ.get("FILEMAP_EXE", "filemap")
MESSAGE = "Message from the first process."


# The children that `python` started for the running test.
CHILDREN: list = []


@pytest.fixture(autouse=True)
def root(tmp_path_factory, monkeypatch):
    """A namespace root of the test's own under /dev/shm, in FILEMAP_ROOT for this process
    and its children; checked empty and removed at the end. Children of a test that failed
    are killed first, so that none outlives the run."""
    path = f"/dev/shm/filemap-pytest-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("FILEMAP_ROOT", path)
    yield path
    while CHILDREN:
        child = CHILDREN.pop()
        if child.poll() is None:
            child.kill()
            child.wait()
    left = []
    for d in ("local-%d" % os.getuid(), "global"):
        p = os.path.join(path, d)
        if os.path.isdir(p):
            left += os.listdir(p)
    subprocess.run(["rm", "-rf", path])
    assert left == [], f"objects left behind: {left}"


def python(code, **kw):
    """Starts a Python child running `code`, stdio piped (killed at the test's end if it
    still runs)."""
    return spawn(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def spawn(args, **kw):
    """Starts a process (killed at the test's end if it still runs)."""
    child = subprocess.Popen(args, **kw)
    CHILDREN.append(child)
    return child


def cli(*args, **kw):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=30, **kw)


SERVER = """
    import sys, filemap
    m = filemap.FileMapping.create("Local\\\\SampleMap", 65536)
    print("The file mapping (Local\\\\SampleMap) is created", flush=True)
    v = m.view(0, 1024)
    data = "Message from the first process.".encode("utf-16-le") + b"\\0\\0"
    v[0:len(data)] = data
    print("This message is written to the view:", flush=True)
    sys.stdin.readline()
"""

CLIENT = """
    import filemap
    m = filemap.FileMapping.open("Local\\\\SampleMap", "r")
    v = m.view(0, 1024)
    raw = bytes(v)
    end = next(i for i in range(0, len(raw), 2) if raw[i:i+2] == b"\\0\\0")
    print(raw[:end].decode("utf-16-le"), flush=True)
"""


def test_the_samples_server_and_client_in_python():
    server = python(SERVER)
    assert "is created" in server.stdout.readline()
    assert "written" in server.stdout.readline()
    client = python(CLIENT)
    out, err = client.communicate(timeout=30)
    assert out.strip() == MESSAGE, err
    server.communicate("\n", timeout=30)
    assert server.returncode == 0
    with pytest.raises(FileNotFoundError):
        filemap.FileMapping.open("Local\\SampleMap")


def test_python_server_and_rust_client_and_the_reverse():
    server = python(SERVER)
    assert "is created" in server.stdout.readline()
    server.stdout.readline()
    out = cli("client")
    assert MESSAGE in out.stdout, out.stderr
    server.communicate("\n", timeout=30)
    # The Rust server and a Python client.
    rust = spawn([EXE, "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = ""
    while "Press ENTER" not in line:
        line += rust.stdout.read(1)
    client = python(CLIENT)
    out, err = client.communicate(timeout=30)
    assert out.strip() == MESSAGE, err
    rust.communicate("\n", timeout=30)


def test_events_and_mutexes_between_python_and_the_cli():
    e = filemap.Event.create("Local\\go")
    signal_it = spawn([EXE, "signal", "Local\\go"])
    assert e.wait(10)
    assert signal_it.wait(10) == 0
    # The CLI waits, Python sets.
    waiter = spawn([EXE, "wait", "Local\\go", "--timeout", "20"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    e.set()
    assert waiter.wait(20) == 0
    # Python holds a mutex: the CLI cannot take it; then it can.
    m = filemap.Mutex.create("Local\\lock")
    with m:
        assert cli("lock", "Local\\lock", "--timeout", "0.2", "--", "true").returncode == 124
    assert cli("lock", "Local\\lock", "--timeout", "5", "--", "true").returncode == 0
    # The CLI holds it: Python cannot take it; the CLI killed holding it abandons it.
    holder = spawn([EXE, "lock", "Local\\lock", "--", "sleep", "60"])
    deadline = time.monotonic() + 10
    while m.acquire(timeout=0.05):
        m.release()
        assert time.monotonic() < deadline, "the CLI never took the mutex"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with pytest.raises(filemap.AbandonedMutexError):
        m.acquire(timeout=10)
    m.release()
    e.close()
    m.close()


def _attach_and_exit(name):
    s = filemap.SharedMemory(name)
    assert bytes(s.buf[:5]) == b"hello"
    s.close()


def test_a_process_that_attaches_and_exits_does_not_destroy_the_memory():
    # CPython gh-82300: with multiprocessing.shared_memory, the attaching process's
    # resource tracker unlinks the segment when it exits.
    s = filemap.SharedMemory(create=True, size=4096)
    s.buf[:5] = b"hello"
    ctx = multiprocessing.get_context("spawn")
    for _ in range(2):
        p = ctx.Process(target=_attach_and_exit, args=(s.name,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
    again = filemap.SharedMemory(s.name)
    assert bytes(again.buf[:5]) == b"hello"
    again.close()
    s.close()
    with pytest.raises(FileNotFoundError):
        filemap.SharedMemory(s.name)


def _update_shareable_list(sl):
    # In a spawned child: the list arrived pickled (its name) and was attached here.
    assert list(sl) == ["howdy", b"HoWdY", -273.154, 100, None, True, 42]
    sl[0] = "hi"
    sl[4] = 7.5  # another type, within the item's room (8 bytes)
    sl[6] = b"byte"  # 4 bytes and their length: 8
    sl.shm.close()


def test_a_shareable_list_between_processes():
    # The standard library's ShareableList example, over filemap.SharedMemory.
    sl = filemap.ShareableList(["howdy", b"HoWdY", -273.154, 100, None, True, 42])
    assert len(sl) == 7 and sl.format == "12s12sdqx?q"
    p = multiprocessing.get_context("spawn").Process(target=_update_shareable_list, args=(sl,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert list(sl) == ["hi", b"HoWdY", -273.154, 100, 7.5, True, b"byte"]
    assert sl.count(100) == 1 and sl.index(True) == 5 and sl[-1] == b"byte"
    with pytest.raises(ValueError):
        sl[6] = b"bytes"
    # A process that attached and exited took nothing away.
    again = filemap.ShareableList(name=sl.shm.name)
    assert again[0] == "hi"
    with pytest.raises(ValueError):
        again[0] = "a string longer than the room of the first item"
    with pytest.raises(TypeError):
        again[0] = [1, 2]
    with pytest.raises(OverflowError):
        again[3] = 2**64
    with pytest.raises(IndexError):
        again[7]
    assert list(again) == list(sl)  # the refused writes changed nothing
    # Bytes that are not a list are an error, never a wrong value.
    with filemap.FileMapping.create("Local\\not-a-list", 64) as other:
        with pytest.raises(filemap.CorruptError):
            filemap.ShareableList(name="not-a-list")
        other.view()[0:4] = b"FMSL"
    again.shm.buf[16] = 9  # the first item's kind
    with pytest.raises(filemap.CorruptError):
        sl[0]
    # The memory and the name go with the last handle.
    name = sl.shm.name
    again.shm.close()
    with sl:  # a context manager, as every filemap object (close() closes .shm)
        assert len(sl) == 7
    with pytest.raises(FileNotFoundError):
        filemap.ShareableList(name=name)


def _use_pickled_handles(m, mutex, ev, stream):
    # In a spawned child: every handle arrived pickled, as its name, and was opened here.
    m.view()[0:7] = b"spawned"
    with mutex:
        pass
    with stream.sender() as tx:
        tx.send(b"from the child")
    ev.set()
    for h in (stream, ev, mutex, m):
        h.close()


def test_handles_pickle_as_their_names_for_spawned_processes(tmp_path, root):
    # multiprocessing's spawn and forkserver start methods, and its queues, pickle what
    # they pass: a handle goes as its name, and the receiver opens it (its own handle).
    m = filemap.FileMapping.create("Local\\pickled", 4096)
    mutex = filemap.Mutex.create("Local\\pickled-mutex")
    ev = filemap.Event.create("Local\\pickled-event", manual_reset=True)
    s = filemap.Stream.create("Local\\pickled-stream", 4096, 64)
    rx = s.receiver()
    p = multiprocessing.get_context("spawn").Process(
        target=_use_pickled_handles, args=(m, mutex, ev, s)
    )
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert ev.wait(0)
    assert bytes(m.view()[0:7]) == b"spawned"
    assert rx.recv(timeout=10) == b"from the child"

    # In one process too: the copy is a handle of its own, and keeps the name alive. A
    # read-only handle's copy is read-only.
    copy = pickle.loads(pickle.dumps(m))
    assert (copy.name, copy.size, copy.access) == (m.name, m.size, "rw")
    with filemap.FileMapping.open("Local\\pickled", "r") as ro:
        with pickle.loads(pickle.dumps(ro)) as ro_copy:
            assert ro_copy.access == "r"
    m.close()
    assert bytes(filemap.FileMapping.open("Local\\pickled", "r").view()[0:7]) == b"spawned"
    copy.close()
    with pytest.raises(FileNotFoundError):
        filemap.FileMapping.open("Local\\pickled")

    # A closed handle, or one without a name, has no name to send.
    with pytest.raises(ValueError):
        pickle.dumps(m)
    f = tmp_path / "data"
    f.write_bytes(b"x" * 4096)
    with filemap.FileMapping.from_file(str(f)) as unnamed:
        with pytest.raises(TypeError):
            pickle.dumps(unnamed)
    with pytest.raises(TypeError, match="channel's end"):
        pickle.dumps(rx)
    for h in (rx, s, ev, mutex):
        h.close()

    # A SharedMemory pickles as the standard class does, and keeps a root of its own.
    other = f"{root}-other"
    shm = filemap.SharedMemory(create=True, size=64, root=other)
    shm.buf[:2] = b"hi"
    again = pickle.loads(pickle.dumps(shm))
    assert (again.name, again.size, bytes(again.buf[:2])) == (shm.name, 64, b"hi")
    again.close()
    shm.close()
    subprocess.run(["rm", "-rf", other])


def _close_inherited_copies(m, mutex, ev, tx):
    # In a forked child: use the inherited handles, then close them all.
    with m:
        m.view()[0:5] = b"child"
    try:
        mutex.acquire()  # refused: a child opens a mutex again (README, Limits)
    except ValueError:
        pass
    else:
        raise AssertionError("an inherited mutex was usable")
    mutex.close()
    ev.set()
    ev.close()
    try:
        tx.send(b"from the child")  # refused: the producer's role is still the parent's
    except ValueError:
        pass
    else:
        raise AssertionError("an inherited sender was usable")
    tx.close()


def test_a_forked_child_closing_its_copies_leaves_the_parents_handles_alone():
    # multiprocessing's "fork" (the default on Linux before Python 3.14) hands the parent's
    # handles to the child. Closing them there must not close the parent's: the names stay,
    # and the stream's sender is still the parent's, still open.
    m = filemap.FileMapping.create("Local\\forked", 4096)
    mutex = filemap.Mutex.create("Local\\forked-mutex")
    ev = filemap.Event.create("Local\\forked-event")
    s = filemap.Stream.create("Local\\forked-stream", 4096, 64)
    tx, rx = s.sender(), s.receiver()
    p = multiprocessing.get_context("fork").Process(
        target=_close_inherited_copies, args=(m, mutex, ev, tx)
    )
    p.start()
    p.join(30)
    assert p.exitcode == 0
    with filemap.FileMapping.open("Local\\forked") as again:
        assert bytes(again.view()[0:5]) == b"child"
    filemap.Mutex.open("Local\\forked-mutex").close()
    assert ev.wait(0)  # set by the child through its copy
    filemap.Event.open("Local\\forked-event").close()
    with pytest.raises(TimeoutError):  # not BrokenPipeError: the sender is open
        rx.recv(timeout=0.05)
    with pytest.raises(BlockingIOError):  # the role is still the parent's
        s.sender()
    tx.send(b"still ours")
    assert rx.recv(timeout=10) == b"still ours"  # and nothing from the child before it
    for h in (tx, rx, s, ev, mutex, m):
        h.close()
    with pytest.raises(FileNotFoundError):
        filemap.FileMapping.open("Local\\forked")


def _use_an_end_taken_at_the_fork(rx):
    # In a forked child: a thread of the parent had `rx` in a call when it forked.
    start = time.monotonic()
    try:
        rx.recv(timeout=20)
    except ValueError:
        pass
    else:
        raise AssertionError("an end taken by a parent's thread was usable")
    assert time.monotonic() - start < 10, "the child waited for the parent's thread"
    rx.close()


def test_a_child_forked_while_a_thread_uses_an_end_is_refused_not_stuck():
    import threading

    s = filemap.Stream.create("Local\\forked-busy", 4096, 64)
    tx, rx = s.sender(), s.receiver()
    got = []
    waiter = threading.Thread(target=lambda: got.append(rx.recv(timeout=30)))
    waiter.start()
    time.sleep(0.2)  # the thread now waits in rx.recv(), holding the end
    p = multiprocessing.get_context("fork").Process(
        target=_use_an_end_taken_at_the_fork, args=(rx,)
    )
    p.start()
    p.join(30)
    assert p.exitcode == 0
    tx.send(b"for the parent's thread")
    waiter.join(30)
    assert got == [b"for the parent's thread"]
    for h in (tx, rx, s):
        h.close()


def test_kill_9_of_every_holder_leaves_nothing_behind(root):
    holders = []
    for _ in range(3):
        p = python(
            """
            import sys, filemap
            m = filemap.FileMapping.open_or_create("Local\\\\shared", 1 << 20)
            e = filemap.Event.open_or_create("Local\\\\ev")
            print("ready", flush=True)
            sys.stdin.readline()
            """
        )
        assert p.stdout.readline().strip() == "ready"
        holders.append(p)
    for p in holders:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    with pytest.raises(FileNotFoundError):
        filemap.FileMapping.open("Local\\shared")
    with pytest.raises(FileNotFoundError):
        filemap.Event.open("Local\\ev")
    filemap.gc()  # the fixture checks that the directory is empty


def test_list_and_info_describe_objects_and_their_state():
    """`list_objects` and `info` give what `filemap info --json` gives, a channel's queue
    and peers and a sync object's state included, as they change in other processes."""
    stream = filemap.Stream.create("Local\\state-stream", 4096, 64)
    started = time.time()
    owner = python(
        """
        import sys, filemap
        m = filemap.Mutex.open_or_create("Local\\\\state-mutex")
        m.acquire()
        tx = filemap.Stream.open("Local\\\\state-stream").sender()
        tx.send(b"one")
        tx.send(b"two")
        print("ready", flush=True)
        sys.stdin.readline()
        """
    )
    sem = filemap.Semaphore.create("Local\\state-sem", 2, 5)
    ev = filemap.Event.create("Local\\state-event", manual_reset=True, initially_set=True)
    mapping = filemap.FileMapping.create("Local\\state-map", 8192)
    assert owner.stdout.readline().strip() == "ready"
    rx = stream.receiver()

    s = filemap.info("Local\\state-stream")
    assert s["kind"] == "stream" and s["live"] is True
    assert (s["capacity"], s["max_message"], s["queued"]) == (4096, 64, 2)
    assert s["producer"] is True and s["peers"] == 1
    assert os.getpid() in s["holders"] and owner.pid in s["holders"]
    assert filemap.holders("Local\\state-stream") == s["holders"]
    assert abs(s["created"] - started) < 60
    m = filemap.info("Local\\state-mutex")
    assert (m["kind"], m["owned"], m["owner_pid"], m["abandoned"]) == (
        "mutex",
        True,
        owner.pid,
        False,
    )
    sem_info = filemap.info("Local\\state-sem")
    assert (sem_info["kind"], sem_info["count"], sem_info["max"]) == ("semaphore", 2, 5)
    e = filemap.info("Local\\state-event")
    assert (e["kind"], e["signalled"], e["manual_reset"]) == ("event", True, True)
    mp = filemap.info("Local\\state-map")
    assert (mp["kind"], mp["size"], mp["file_backed"], mp["persistent"]) == (
        "mapping",
        8192,
        False,
        False,
    )
    assert mp["handles"] >= 1 and "count" not in mp and "queued" not in mp
    names = {o["name"]: o["kind"] for o in filemap.list_objects()}
    assert {k: names.get(k) for k in ("Local\\state-stream", "Local\\state-sem")} == {
        "Local\\state-stream": "stream",
        "Local\\state-sem": "semaphore",
    }

    # The state follows what others do. The receiver gives room back in batches: a
    # message received from a backlog is queued until the receiver runs out.
    assert rx.recv() == b"one"
    assert filemap.info("Local\\state-stream")["queued"] == 2
    assert rx.recv() == b"two"
    with pytest.raises(TimeoutError):
        rx.recv(timeout=0.01)
    assert filemap.info("Local\\state-stream")["queued"] == 0
    sem.release(3)
    ev.reset()
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    s = filemap.info("Local\\state-stream")
    assert (s["queued"], s["producer"], s["peers"]) == (0, False, 1)
    assert owner.pid not in s["holders"]
    m = filemap.info("Local\\state-mutex")
    # As on Windows: an abandoned mutex has no owner; the next locker is told.
    assert (m["owned"], m["owner_pid"], m["abandoned"]) == (False, owner.pid, True)
    assert filemap.info("Local\\state-sem")["count"] == 5
    assert filemap.info("Local\\state-event")["signalled"] is False

    # `remove` takes the name away at once; the holder keeps the memory.
    mapping.view(0, 4)[0:4] = b"kept"
    filemap.remove("Local\\state-map")
    with pytest.raises(FileNotFoundError):
        filemap.info("Local\\state-map")
    with pytest.raises(FileNotFoundError):
        filemap.FileMapping.open("Local\\state-map")
    assert bytes(mapping.view(0, 4)) == b"kept"
    # The killed owner's mutex has no holder left: `gc` removes it.
    assert "Local\\state-mutex" in filemap.gc()
    with pytest.raises(FileNotFoundError):
        filemap.info("Local\\state-mutex")
    for o in (rx, stream, sem, ev, mapping):
        o.close()


def test_an_owner_killed_holding_a_mutex_abandons_it():
    owner = python(
        """
        import sys, filemap
        m = filemap.Mutex.open_or_create("Local\\\\abandon")
        m.acquire()
        print("owner", flush=True)
        sys.stdin.readline()
        """
    )
    assert owner.stdout.readline().strip() == "owner"
    m = filemap.Mutex.open("Local\\abandon")
    assert not m.acquire(timeout=0.1)
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    with pytest.raises(filemap.AbandonedMutexError) as info:
        m.acquire(timeout=10)
    assert info.value.mutex is m
    # Raised with the lock taken: this thread owns it, and releases it.
    m.release()
    with m:
        pass
    with pytest.raises(PermissionError):
        m.release()
    m.close()


def test_views_are_buffers_and_outlive_their_mapping():
    np = pytest.importorskip("numpy")
    m = filemap.FileMapping.create("Local\\arr", 8 * 1000 + 3)
    v = m.view()
    assert isinstance(v, memoryview) and len(v) == 8003 and not v.readonly
    v[0:5] = b"hello"
    assert bytes(v[0:5]) == b"hello"
    a = np.frombuffer(m.view(8, 8 * 100), dtype=np.float64)
    a_w = np.frombuffer(v, dtype=np.uint8)
    a_w[8:16] = np.frombuffer(np.float64(2.5).tobytes(), dtype=np.uint8)
    assert a[0] == 2.5
    # Any offset; read-only and copy-on-write views.
    r = filemap.FileMapping.open("Local\\arr", "r")
    ro = r.view(1, 4)
    assert ro.readonly and bytes(ro) == b"ello"
    with pytest.raises(TypeError):
        ro[0:1] = b"x"
    cow = r.view(0, 5, "copy")
    cow[0:1] = b"J"
    assert bytes(cow) == b"Jello" and bytes(v[0:5]) == b"hello"
    # The handles close: the name goes, the memory stays for the views.
    m.close()
    r.close()
    with pytest.raises(FileNotFoundError):
        filemap.FileMapping.open("Local\\arr")
    assert bytes(v[0:5]) == b"hello" and a[0] == 2.5
    with pytest.raises(ValueError):
        m.view()


def _mapped_ranges(inode):
    """This process's mapped ranges of the file with ``inode`` (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if line.split()[4] == str(inode)]


def test_a_view_is_unmapped_with_the_last_object_that_uses_it():
    np = pytest.importorskip("numpy")
    import ctypes
    import gc
    import io

    m = filemap.FileMapping.create("Local\\last-user", 3 * 4096)
    inode = os.stat(m.os_path).st_ino
    v = m.view(100, 5000)
    assert len(_mapped_ranges(inode)) == 1
    # A slice and an array keep the view mapped after the view itself and the handle go.
    part = v[10:20]
    arr = np.frombuffer(v, dtype=np.uint8)
    v[10:15] = b"kept!"
    del v
    m.close()
    gc.collect()
    assert len(_mapped_ranges(inode)) == 1
    assert bytes(part[0:5]) == b"kept!" and bytes(arr[10:15]) == b"kept!"
    del part
    gc.collect()
    assert len(_mapped_ranges(inode)) == 1 and arr[14] == ord("!")
    del arr
    gc.collect()
    assert _mapped_ranges(inode) == []
    # A read-only view never hands out a writable buffer, by any route.
    m = filemap.FileMapping.create("Local\\last-user", 4096)
    ro = m.view(0, 0, "r")
    with pytest.raises(TypeError):
        ctypes.c_char.from_buffer(ro)
    assert not np.frombuffer(ro, dtype=np.uint8).flags.writeable
    with pytest.raises(TypeError):
        io.BytesIO(b"abc").readinto(ro.obj)
    assert bytes(ro[0:3]) == b"\0\0\0"
    # The exporter type made from Python (without a view) exports nothing.
    with pytest.raises((BufferError, TypeError)):
        memoryview(type(ro.obj)())
    m.close()


def test_bad_input_gets_the_right_exceptions():
    with pytest.raises(ValueError):
        filemap.FileMapping.create("Local\\a\\b", 10)
    with pytest.raises(ValueError):
        filemap.FileMapping.create("Local\\x" + "y" * 40000, 10)
    with pytest.raises(ValueError):
        filemap.FileMapping.create("Local\\zero", 0)
    m = filemap.FileMapping.create("Local\\m", 4096)
    with pytest.raises(FileExistsError):
        filemap.FileMapping.create("Local\\m", 4096)
    with pytest.raises(filemap.KindMismatchError):
        filemap.Mutex.create("Local\\m")
    with pytest.raises(FileExistsError):
        filemap.Event.open("Local\\m")
    with pytest.raises(ValueError):
        m.view(4096, 1)
    with pytest.raises(ValueError):
        m.view(0, 5000)
    with pytest.raises(ValueError):
        m.view(0, 1, "sideways")
    r = filemap.FileMapping.open("Local\\m", "r")
    with pytest.raises(PermissionError):
        r.view(0, 1, "rw")
    with pytest.raises(ValueError):
        filemap.Semaphore.create("Local\\s", 5, 2)
    s = filemap.Semaphore.create("Local\\s", 0, 1)
    s.release()
    with pytest.raises(ValueError):
        s.release()
    with pytest.raises(TimeoutError):
        filemap.wait_any([filemap.Event.create("Local\\never")], timeout=0.05)
    assert filemap.wait_any([filemap.Event.create("Local\\e2"), s], timeout=1) == 1
    m.close()
    r.close()
    s.close()


def test_ctrl_c_interrupts_a_wait():
    child = python(
        """
        import filemap, signal, time
        # Python leaves SIGINT alone if it started ignored (a background job of a
        # non-interactive shell): install the handler that raises KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        e = filemap.Event.create("Local\\\\forever")
        print("waiting", flush=True)
        t = time.monotonic()
        try:
            e.wait()
        except KeyboardInterrupt:
            print("interrupted %.2f" % (time.monotonic() - t), flush=True)
        """
    )
    assert child.stdout.readline().strip() == "waiting"
    time.sleep(0.2)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert out.startswith("interrupted"), err
    # A fraction of a second (the wait wakes every 50 ms), with room for a loaded machine.
    assert time.monotonic() - sent < 1


def test_a_stream_between_python_processes():
    s = filemap.Stream.create("Local\\pipe", 4096, 256)
    rx = s.receiver()
    producer = python(
        """
        import filemap
        s = filemap.Stream.open("Local\\\\pipe")
        with s.sender() as tx:
            for i in range(10000):
                tx.send(b"%d" % i)
        """
    )
    got = [int(m) for m in rx]
    assert got == list(range(10000))
    assert producer.wait(30) == 0
    rx.close()


def test_threads_share_a_channel_end():
    # An end plays one role; threads that share it take turns instead of failing.
    import threading

    s = filemap.Stream.create("Local\\threads", 4096, 64)
    tx, rx = s.sender(), s.receiver()
    errors = []

    def produce(k):
        try:
            for i in range(5000):
                tx.send(b"%d-%d" % (k, i), timeout=30)
        except Exception as e:  # reported below
            errors.append(repr(e))

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(2)]
    for t in producers:
        t.start()
    got = {0: [], 1: []}
    for _ in range(10000):
        k, i = rx.recv(timeout=10).split(b"-")
        got[int(k)].append(int(i))
    for t in producers:
        t.join(30)
    assert errors == []
    assert got == {0: list(range(5000)), 1: list(range(5000))}
    # A blocking call holds the turn: another thread's call waits within its timeout, and
    # closing the end meanwhile is refused, not a crash.
    results = []
    waiter = threading.Thread(target=lambda: results.append(rx.recv(timeout=30)))
    waiter.start()
    time.sleep(0.2)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        rx.recv(timeout=0.3)
    assert time.monotonic() - start >= 0.3
    with pytest.raises(RuntimeError):
        rx.close()
    tx.send(b"wake")
    waiter.join(30)
    assert results == [b"wake"]
    for h in (rx, tx, s):
        h.close()
    # A server that waits for requests in one thread answers from another meanwhile.
    rr = filemap.RequestReply.create("Local\\threads-rpc", 2, 64, 64)
    server, first, second = rr.server(), rr.client(), rr.client()
    first.send_request(b"one")
    ticket, request = server.recv(timeout=30)
    taken = []
    waiting = threading.Thread(target=lambda: taken.append(server.recv(timeout=30)))
    waiting.start()
    time.sleep(0.2)
    assert server.reply(ticket, b"answer to " + request)
    assert first.wait_reply(timeout=30) == b"answer to one"
    second.send_request(b"two")
    waiting.join(30)
    (t2, r2), = taken
    assert r2 == b"two" and server.reply(t2, b"2") and second.wait_reply(timeout=30) == b"2"
    for h in (first, second, server, rr):
        h.close()
    # Closed, the server keeps nothing open (its object still lives here), and answers nothing.
    with pytest.raises(FileNotFoundError):
        filemap.RequestReply.open("Local\\threads-rpc")
    with pytest.raises(ValueError):
        server.reply(t2, b"late")
    # Sync objects: threads wait together; closing one that a thread waits on is refused.
    ev = filemap.Event.create("Local\\threads-event", manual_reset=True)
    woke = []
    waiters = [threading.Thread(target=lambda: woke.append(ev.wait(30))) for _ in range(2)]
    for t in waiters:
        t.start()
    time.sleep(0.2)
    with pytest.raises(RuntimeError, match="another thread"):
        ev.close()
    ev.set()
    for t in waiters:
        t.join(30)
    assert woke == [True, True]
    ev.close()


def test_a_signal_handler_that_uses_the_end_it_interrupted_gets_an_error():
    # The handler runs inside the interrupted call, on its thread: waiting for that call's
    # turn would wait for ever.
    import threading

    s = filemap.Stream.create("Local\\reentrant", 4096, 64)
    tx, rx = s.sender(), s.receiver()
    seen = []

    def handler(signum, frame):
        with pytest.raises(RuntimeError, match="wait for itself"):
            rx.recv(timeout=0.1)
        seen.append(signum)
        tx.send(b"from the handler")

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        assert rx.recv(timeout=30) == b"from the handler"
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [signal.SIGUSR1]
    for h in (tx, rx, s):
        h.close()


def test_stream_messages_in_batches():
    s = filemap.Stream.create("Local\\batches", 4096, 64)
    tx, rx = s.sender(), s.receiver()
    assert tx.send_many([b"a", bytearray(b"bb"), memoryview(b"ccc")]) == 3
    assert rx.recv_many(2) == [b"a", b"bb"]
    assert rx.recv_many(10) == [b"ccc"]
    with pytest.raises(TimeoutError):
        rx.recv_many(10, timeout=0.05)
    with pytest.raises(ValueError):
        rx.recv_many(0)
    # A full ring: what fits goes, the rest times out and is counted out.
    sent = tx.send_many([bytes(60)] * 100, timeout=0.1)
    assert 0 < sent < 100
    got = []
    while len(got) < sent:
        got += rx.recv_many(1000, timeout=10)
    assert got == [bytes(60)] * sent
    # The producer's close ends a batch; the next call reports it.
    tx.send_many([b"x", b"y"])
    tx.close()
    assert rx.recv_many(10) == [b"x", b"y"]
    with pytest.raises(BrokenPipeError):
        rx.recv_many(10, timeout=10)
    rx.close()
    s.close()


FRAMES_PRODUCER = """
    import numpy as np, filemap
    s = filemap.Stream.open("Local\\\\frames")
    with s.sender() as tx:
        for bad, exc in ((5, TypeError), ("text", TypeError),
                         (np.zeros((8, 8))[:, ::2], BufferError),
                         (bytearray(70000), ValueError)):
            try:
                tx.send(bad)
            except exc:
                pass
            else:
                raise AssertionError(f"no {exc.__name__} for {type(bad)}")
        for i in range(50):
            tx.send(np.full((64, 256), i, dtype=np.float32))  # 64 KiB frames
        tx.send(bytearray(b"hello world"))
        tx.send(memoryview(b"xxabcxx")[2:5])
        tx.send(np.arange(4, dtype=np.uint16)[::-1].copy())
        tx.send(bytearray())
        tx.send(np.empty(0, dtype=np.uint8))
    print("ok")
"""

FRAMES_CONSUMER = """
    import numpy as np, filemap
    rx = filemap.Stream.open("Local\\\\frames").receiver()
    frame = np.empty((64, 256), dtype=np.float32)
    for i in range(50):
        assert rx.recv_into(frame, timeout=20) == frame.nbytes
        assert (frame == i).all(), i
    small = bytearray(10)
    try:
        rx.recv_into(small, timeout=20)
    except ValueError as e:
        assert "has 11 bytes, more than the buffer's 10; it stays" in str(e), e
    else:
        raise AssertionError("no error for a buffer too small")
    assert small == bytearray(10)
    big = bytearray(100)
    assert rx.recv_into(big) == 11 and big[:11] == b"hello world"
    assert rx.recv_into(memoryview(big)[50:]) == 3 and big[50:53] == b"abc"
    u16 = np.zeros(4, dtype=np.uint16)
    assert rx.recv_into(u16) == 8 and list(u16) == [3, 2, 1, 0]
    assert rx.recv_into(bytearray(), timeout=20) == 0
    assert rx.recv_into(np.empty(0, dtype=np.uint8), timeout=20) == 0
    for bad, exc in ((b"read-only", TypeError), (5, TypeError), ("text", TypeError),
                     (np.zeros((8, 8))[:, ::2], BufferError)):
        try:
            rx.recv_into(bad, timeout=0)
        except exc:
            pass
        else:
            raise AssertionError(f"no {exc.__name__} for {type(bad)}")
    try:
        rx.recv_into(bytearray(8), timeout=20)
    except BrokenPipeError:
        pass
    else:
        raise AssertionError("no end of stream")
    print("ok")
"""


@pytest.mark.parametrize("calls", ["buffer-calls", "memoryview"])
def test_bytes_like_objects_go_through_a_stream_copied_once(calls):
    # `send` takes any bytes-like object and `recv_into` fills any writable one, between
    # two processes; with FILEMAP_PY_NO_BUFFER_API the same calls take the path that
    # Windows' Python 3.9 and 3.10 take (through `memoryview`), with the same results.
    pytest.importorskip("numpy")
    env = dict(os.environ)
    if calls == "memoryview":
        env["FILEMAP_PY_NO_BUFFER_API"] = "1"
    with filemap.Stream.create("Local\\idle", 4096, 64) as idle, idle.receiver() as rx:
        with pytest.raises(TimeoutError):
            rx.recv_into(bytearray(8), timeout=0.05)
    s = filemap.Stream.create("Local\\frames", 1 << 18, 1 << 16)
    consumer = python(FRAMES_CONSUMER, env=env)
    producer = python(FRAMES_PRODUCER, env=env)
    for child in (producer, consumer):
        out, err = child.communicate(timeout=60)
        assert (child.returncode, out.strip()) == (0, "ok"), err
    s.close()


LOAN_PRODUCER = """
    import numpy as np, filemap
    s = filemap.Stream.open("Local\\\\loans")
    with s.sender() as tx:
        for i in range(50):
            with tx.loan(64 * 256 * 4) as buf:  # 64 KiB frames, computed in place
                frame = np.frombuffer(buf, np.float32).reshape(64, 256)
                np.multiply(np.full((64, 256), i, np.float32), 2, out=frame)
                del frame
        loan = tx.loan(5)
        loan.buffer[:] = b"hello"
        assert (len(loan), loan.nbytes) == (5, 5)
        loan.commit()
        try:
            with tx.loan(3) as buf:
                buf[:] = b"no!"
                raise KeyError("cancelled")
        except KeyError:
            pass
        with tx.loan(0):
            pass
    print("ok")
"""


def test_loans_and_in_place_messages_between_processes():
    # Frames computed by NumPy straight into the ring by another process, and read where
    # they are (every other one: the rest copied out); a loan whose block raised sends
    # nothing, and an empty loan is an empty message.
    np = pytest.importorskip("numpy")
    s = filemap.Stream.create("Local\\loans", 1 << 18, 1 << 16)
    rx = s.receiver()
    producer = python(LOAN_PRODUCER)
    frame = np.empty((64, 256), np.float32)
    for i in range(50):
        if i % 2:
            with rx.recv_in_place(timeout=20) as buf:
                assert buf.readonly and buf.nbytes == frame.nbytes
                assert (np.frombuffer(buf, np.float32) == 2 * i).all(), i
        else:
            assert rx.recv_into(frame, timeout=20) == frame.nbytes
            assert (frame == 2 * i).all(), i
    msg = rx.recv_in_place(timeout=20)
    assert (len(msg), msg.nbytes, bytes(msg.buffer)) == (5, 5, b"hello")
    msg.keep()  # left first in the channel
    msg = rx.recv_in_place(timeout=20)
    assert bytes(msg.buffer) == b"hello"
    msg.release()
    assert rx.recv(timeout=20) == b""
    out, err = producer.communicate(timeout=60)
    assert (producer.returncode, out.strip()) == (0, "ok"), err
    with pytest.raises(BrokenPipeError):
        rx.recv(timeout=20)
    rx.close()
    s.close()


def test_a_loan_ends_only_when_nothing_uses_its_buffer():
    np = pytest.importorskip("numpy")
    s = filemap.Stream.create("Local\\loan-rules", 4096, 1024)
    tx, rx = s.sender(), s.receiver()
    # An array made from the buffer keeps the loan open: commit refuses, and works after.
    loan = tx.loan(8)
    arr = np.frombuffer(loan.buffer, np.uint8)
    with pytest.raises(BufferError, match="still in use"):
        loan.commit()
    arr[:] = 7  # the buffer is still the loan's, and still writable
    with pytest.raises(RuntimeError, match="open loan"):
        tx.send(b"x")  # this thread's call on the lent end
    with pytest.raises(RuntimeError, match="open loan"):
        tx.close()
    with pytest.raises(TimeoutError):
        rx.recv(timeout=0.05)  # nothing sent yet
    del arr
    loan.commit()
    assert rx.recv(timeout=5) == bytes([7] * 8)
    with pytest.raises(ValueError, match="already"):
        loan.commit()
    with pytest.raises(ValueError):
        loan.buffer
    # After the commit, no object can reach the room: the memoryview handed out is
    # released, and its exporter exports no more.
    loan = tx.loan(4)
    view, exporter = loan.buffer, loan.buffer.obj
    view[:] = b"abcd"
    loan.commit()
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(BufferError, match="committed, cancelled"):
        memoryview(exporter)
    assert rx.recv(timeout=5) == b"abcd"
    # Another memoryview of the exporter counts as a use too.
    loan = tx.loan(2)
    extra = memoryview(loan.buffer.obj)
    with pytest.raises(BufferError):
        loan.cancel()
    extra.release()
    loan.cancel()
    # A loan dropped while an array of its buffer lives holds the end until the array
    # goes; another thread's send waits for it, and the loan itself sends nothing.
    loan = tx.loan(4)
    arr = np.frombuffer(loan.buffer, np.uint8)
    del loan
    gc.collect()
    sent = threading.Event()
    thread = threading.Thread(target=lambda: (tx.send(b"after"), sent.set()))
    thread.start()
    assert not sent.wait(0.2)
    del arr
    gc.collect()
    thread.join(10)
    assert sent.is_set()
    assert rx.recv(timeout=5) == b"after"
    with pytest.raises(TimeoutError):
        rx.recv(timeout=0.05)
    # An exception in the block cancels, even with an array of the buffer alive.
    kept = []
    with pytest.raises(KeyError):
        with tx.loan(4) as buf:
            kept.append(np.frombuffer(buf, np.uint8))
            raise KeyError("cancel")
    kept.clear()
    gc.collect()
    tx.send(b"next")
    assert rx.recv(timeout=5) == b"next"
    # Bad sizes, and a full ring.
    with pytest.raises(ValueError, match="larger than"):
        tx.loan(1025)
    with pytest.raises((ValueError, OverflowError, TypeError)):
        tx.loan(-1)
    while True:
        try:
            tx.send(b"x" * 1000, timeout=0)
        except TimeoutError:
            break
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        tx.loan(1000, timeout=0.1)
    assert time.monotonic() - t >= 0.1
    tx.close()
    rx.close()
    s.close()


def test_an_in_place_message_is_read_only_and_consumed_only_when_nothing_uses_it():
    np = pytest.importorskip("numpy")
    s = filemap.Stream.create("Local\\in-place", 4096, 1024)
    tx, rx = s.sender(), s.receiver()
    for m in (b"first", b"second", b"third"):
        tx.send(m)
    msg = rx.recv_in_place(timeout=5)
    view = msg.buffer
    arr = np.frombuffer(view, np.uint8)
    assert not arr.flags.writeable
    with pytest.raises(TypeError):
        view[0] = 1  # read-only
    with pytest.raises(TypeError):
        io.BytesIO(b"x").readinto(view.obj)  # asks its exporter for a writable buffer
    with pytest.raises(TypeError, match="not writable"):
        ctypes.c_char.from_buffer(view.obj)
    with pytest.raises(BufferError, match="still in use"):
        msg.release()
    with pytest.raises(RuntimeError, match="open loan or message"):
        rx.recv(timeout=0)  # this thread's call on the lent end
    with pytest.raises(RuntimeError, match="open loan or message"):
        rx.close()
    assert bytes(arr) == b"first"
    del arr
    exporter = msg.buffer.obj
    msg.release()
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(BufferError, match="released"):
        memoryview(exporter)
    with pytest.raises(ValueError, match="ended"):
        msg.release()
    assert rx.recv(timeout=5) == b"second"
    # Kept: the same message comes again. Dropped with an array of it alive: another
    # thread's receive waits for the array to go, then gets the same message (a dropped
    # message is kept).
    rx.recv_in_place(timeout=5).keep()
    msg = rx.recv_in_place(timeout=5)
    arr = np.frombuffer(msg.buffer, np.uint8)
    del msg
    gc.collect()
    got = []
    thread = threading.Thread(target=lambda: got.append(rx.recv(timeout=10)))
    thread.start()
    time.sleep(0.2)
    assert got == []
    del arr
    gc.collect()
    thread.join(10)
    assert got == [b"third"]
    # A block that raises still releases the message.
    tx.send(b"fourth")
    tx.send(b"fifth")
    with pytest.raises(KeyError):
        with rx.recv_in_place(timeout=5) as buf:
            assert bytes(buf) == b"fourth"
            raise KeyError("after reading")
    assert rx.recv(timeout=5) == b"fifth"
    with pytest.raises(TimeoutError):
        rx.recv_in_place(timeout=0.05)
    # The end of the stream.
    tx.send(b"last")
    tx.close()
    with rx.recv_in_place(timeout=5) as buf:
        assert bytes(buf) == b"last"
    with pytest.raises(BrokenPipeError):
        rx.recv_in_place(timeout=5)
    rx.close()
    s.close()


def test_every_send_takes_bytes_like_objects():
    np = pytest.importorskip("numpy")
    with filemap.Broadcast.create("Local\\bl-b") as b, filemap.Latest.create("Local\\bl-l") as l, \
            filemap.RequestReply.create("Local\\bl-r") as r:
        pub, sub = b.publisher(), b.subscriber()
        pub.send(bytearray(b"one"))
        pub.send(np.arange(3, dtype=np.uint8))
        assert [sub.recv(timeout=5)[0] for _ in range(2)] == [b"one", bytes([0, 1, 2])]
        w, rd = l.writer(), l.reader()
        w.publish(memoryview(b"state"))
        assert rd.read() == (b"state", 1)
        server, client = r.server(), r.client()
        client.send_request(memoryview(b"xqx")[1:2])
        ticket, req = server.recv(timeout=5)
        assert req == b"q"
        assert server.reply(ticket, bytearray(b"answer"))
        assert client.wait_reply(timeout=5) == b"answer"
        for bad in (5, "text", [1, 2]):
            for send in (pub.send, w.publish, client.send_request):
                with pytest.raises(TypeError):
                    send(bad)
        for end in (pub, sub, w, rd, server, client):
            end.close()


PUBLISH_FRAMES = """
    import sys, numpy as np, filemap
    pub = filemap.Broadcast.open("Local\\\\bframes").publisher()
    w = filemap.Latest.open("Local\\\\lstate").writer()
    sys.stdin.readline()
    for i in range(8):
        pub.send(np.full(1024, i, dtype=np.float64))  # 8 KiB
    sys.stdin.readline()
    pub.send(bytearray(b"last"))
    w.publish(np.arange(16, dtype=np.int32))
    pub.close()
    w.close()
    print("ok")
"""


def test_subscribers_and_readers_fill_bytes_like_objects():
    # `Subscriber.recv_into` and `LatestReader.read_into`, from another process's sends;
    # a message too long for the buffer is held back, never lost.
    np = pytest.importorskip("numpy")
    b = filemap.Broadcast.create("Local\\bframes", 64, 8192)
    lt = filemap.Latest.create("Local\\lstate", 256)
    sub, rd = b.subscriber(), lt.reader()
    state = np.zeros(16, dtype=np.int32)
    assert rd.read_into(state) is None
    publisher = python(PUBLISH_FRAMES)
    publisher.stdin.write("go\n")
    publisher.stdin.flush()
    frame, small = np.empty(1024, dtype=np.float64), bytearray(100)
    assert sub.recv_into(frame, timeout=20) == (8192, 0) and (frame == 0).all()
    too_long = "has 8192 bytes, more than the buffer's 100; it is held back"
    with pytest.raises(ValueError, match=too_long):
        sub.recv_into(small, timeout=20)
    assert small == bytearray(100)
    assert sub.recv_into(frame, timeout=20) == (8192, 0) and (frame == 1).all()
    with pytest.raises(ValueError, match=too_long):
        sub.recv_into(small, timeout=20)
    assert sub.recv(timeout=20) == (np.full(1024, 2.0).tobytes(), 0)
    for i in range(3, 7):
        assert sub.recv_into(memoryview(frame), timeout=20) == (8192, 0) and (frame == i).all()
    with pytest.raises(ValueError, match=too_long):
        sub.recv_into(small, timeout=20)
    # The ring is empty and the publisher waits: only the message held back is ready.
    assert filemap.wait_any([sub], timeout=0) == 0
    assert sub.recv_into(frame, timeout=20) == (8192, 0) and (frame == 7).all()
    with pytest.raises(TimeoutError):
        filemap.wait_any([sub], timeout=0.05)
    publisher.stdin.write("more\n")
    publisher.stdin.flush()
    assert sub.recv_into(small, timeout=20) == (4, 0) and small[:4] == b"last"
    for bad in (b"read-only", 5):
        with pytest.raises(TypeError):
            sub.recv_into(bad, timeout=0)
        with pytest.raises(TypeError):
            rd.read_into(bad)
    with pytest.raises(BrokenPipeError):
        sub.recv_into(small, timeout=20)
    out, err = publisher.communicate(timeout=30)
    assert out.strip() == "ok", err
    assert rd.read_into(state) == (64, 1) and list(state) == list(range(16))
    with pytest.raises(ValueError, match="latest value in .* has 64 bytes, more than the buffer's 8"):
        rd.read_into(bytearray(8))
    assert rd.read() == (np.arange(16, dtype=np.int32).tobytes(), 1)
    for x in (sub, rd, b, lt):
        x.close()


def test_wait_newer_into_fills_a_buffer_when_a_newer_value_comes():
    np = pytest.importorskip("numpy")
    lt = filemap.Latest.create("Local\\wnewer", 4096)
    w, rd = lt.writer(), lt.reader()
    frame = np.zeros(1024, dtype=np.float32)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        rd.wait_newer_into(0, frame, timeout=0.05)
    assert time.monotonic() - start >= 0.05
    w.publish(np.full(1024, 1.0, dtype=np.float32))
    assert rd.wait_newer_into(0, frame, timeout=20) == (4096, 1) and (frame == 1).all()
    # A value published by another thread while this one waits (without the GIL).
    later = threading.Timer(0.1, lambda: w.publish(np.full(1024, 2.0, dtype=np.float32)))
    start = time.monotonic()
    later.start()
    assert rd.wait_newer_into(1, memoryview(frame), timeout=20) == (4096, 2)
    assert (frame == 2).all() and time.monotonic() - start >= 0.1
    later.join()
    with pytest.raises(ValueError, match="has 4096 bytes, more than the buffer's 8"):
        rd.wait_newer_into(1, bytearray(8), timeout=20)
    with pytest.raises(TypeError):
        rd.wait_newer_into(1, b"read-only", timeout=0)
    w.close()
    with pytest.raises(BrokenPipeError):
        rd.wait_newer_into(2, frame, timeout=20)
    for x in (rd, lt):
        x.close()


SERVE_ARRAYS = """
    import numpy as np, filemap
    server = filemap.RequestReply.open("Local\\\\rpcarr").server()
    print("ready", flush=True)
    req, small = np.empty(256, dtype=np.float32), bytearray(16)
    for i in range(3):
        ticket, n = server.recv_into(req, timeout=20)
        assert n == req.nbytes, n
        server.reply(ticket, req * 2)
    try:
        server.recv_into(small, timeout=20)
    except ValueError as e:
        assert "has 1024 bytes, more than the buffer's 16; it is held back" in str(e), e
    else:
        raise AssertionError("no error for a buffer too small")
    # Only the request held back is there (the client waits for its reply).
    assert filemap.wait_any([server], timeout=0) == 0
    for bad in (b"read-only", 5):
        try:
            server.recv_into(bad, timeout=0)
        except TypeError:
            pass
        else:
            raise AssertionError(f"no TypeError for {type(bad)}")
    ticket, n = server.recv_into(req, timeout=20)
    assert n == 1024 and (req == 0).all()
    server.reply(ticket, np.full(1024, 7, dtype=np.uint8))
    ticket, _ = server.recv_into(req, timeout=20)
    server.reply(ticket, np.full(1024, 8, dtype=np.uint8))
    ticket, _ = server.recv_into(req, timeout=20)
    server.reply(ticket, b"fresh")
    server.close()
    print("ok")
"""


def test_request_reply_fills_bytes_like_objects():
    # A client's `call_into` and a server's `recv_into` between two processes, with NumPy
    # arrays both ways; a request or a reply too long for its buffer is held back.
    np = pytest.importorskip("numpy")
    rr = filemap.RequestReply.create("Local\\rpcarr", 2, 4096, 4096)
    server = python(SERVE_ARRAYS)
    assert server.stdout.readline().strip() == "ready"
    client = rr.client()
    out = np.empty(256, dtype=np.float32)
    for i in range(3):
        a = np.arange(256, dtype=np.float32) + i
        assert client.call_into(a, out, timeout=20) == 1024 and (out == a * 2).all()
    with pytest.raises(TypeError):
        client.call_into(b"x", b"read-only", timeout=0)
    zeros, small, big = np.zeros(256, dtype=np.float32), bytearray(100), bytearray(2048)
    too_long = "the reply in .* has 1024 bytes, more than the buffer's 100; it is held back"
    with pytest.raises(ValueError, match=too_long):
        client.call_into(zeros, small, timeout=20)
    assert filemap.wait_any([client], timeout=0) == 0
    assert client.wait_reply_into(big, timeout=20) == 1024 and big[:1024] == bytes([7]) * 1024
    # A reply held back is given up by the next request, as a pending one is.
    with pytest.raises(ValueError, match=too_long):
        client.call_into(zeros, small, timeout=20)
    client.send_request(zeros)
    assert client.wait_reply(timeout=20) == b"fresh"
    out_text, err = server.communicate(timeout=30)
    assert out_text.strip() == "ok", err
    client.close()
    rr.close()


def drain(sub, timeout=20):
    """The messages a subscriber receives until its publisher has gone."""
    got = []
    while True:
        try:
            msg, _lost = sub.recv(timeout=timeout)
        except BrokenPipeError:
            return got
        got.append(msg)


def test_broadcast_latest_and_request_reply_between_python_processes():
    b = filemap.Broadcast.create("Local\\news", 16, 64)
    sub = b.subscriber()
    latest = filemap.Latest.create("Local\\pose", 64)
    reader = latest.reader()
    rr = filemap.RequestReply.create("Local\\rpc", 2, 64, 64)
    server = rr.server()
    child = python(
        """
        import filemap
        b = filemap.Broadcast.open("Local\\\\news")
        l = filemap.Latest.open("Local\\\\pose")
        r = filemap.RequestReply.open("Local\\\\rpc")
        with b.publisher() as p, l.writer() as w, r.client() as c:
            for i in range(5):
                p.send(b"n%d" % i)
                w.publish(b"v%d" % i)
            print(c.call(b"ping", timeout=20).decode(), flush=True)
        """
    )
    ticket, req = server.recv(timeout=20)
    assert req == b"ping"
    assert server.reply(ticket, b"pong")
    out, err = child.communicate(timeout=30)
    assert out.strip() == "pong", err
    assert drain(sub) == [b"n%d" % i for i in range(5)]
    assert reader.read() == (b"v4", 5)
    with pytest.raises(BrokenPipeError):
        reader.wait_newer(5, timeout=5)
    for h in (sub, reader, server, b, latest, rr):
        h.close()


def test_read_only_subscribers_and_readers_read_what_another_process_writes():
    b = filemap.Broadcast.create("Local\\ronews", 16, 64)
    latest = filemap.Latest.create("Local\\ropose", 64)
    rb = filemap.Broadcast.open("Local\\ronews", read_only=True)
    rl = filemap.Latest.open("Local\\ropose", read_only=True)
    assert rb.read_only and rl.read_only and not b.read_only
    # A writing role is refused; a read-only handle cannot create.
    with pytest.raises(PermissionError, match="read-only"):
        rb.publisher()
    with pytest.raises(PermissionError, match="read-only"):
        rl.writer()
    with pytest.raises(ValueError, match="create=False"):
        filemap._filemap.Latest.make("Local\\ropose", read_only=True)
    sub, reader = rb.subscriber(), rl.reader()
    child = python(
        """
        import filemap
        b = filemap.Broadcast.open("Local\\\\ronews")
        l = filemap.Latest.open("Local\\\\ropose")
        with b.publisher() as p, l.writer() as w:
            print("ready", flush=True)
            input()
            for i in range(5):
                p.send(b"n%d" % i)
                w.publish(b"v%d" % i)
        """
    )
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    assert drain(sub) == [b"n%d" % i for i in range(5)]
    assert reader.read() == (b"v4", 5)
    with pytest.raises(BrokenPipeError):
        reader.wait_newer(5, timeout=20)
    child.communicate(timeout=30)
    assert child.returncode == 0
    for h in (sub, reader, rb, rl, b, latest):
        h.close()


def test_a_numpy_array_written_in_one_process_is_read_in_another():
    np = pytest.importorskip("numpy")
    m = filemap.FileMapping.create("Local\\matrix", 8 * 256 * 256)
    writer = python(
        """
        import numpy as np, filemap
        m = filemap.FileMapping.open("Local\\\\matrix")
        a = np.frombuffer(m.view(), dtype=np.float64).reshape(256, 256)
        a[:] = np.arange(256 * 256, dtype=np.float64).reshape(256, 256) * 0.5
        print("written", flush=True)
        """
    )
    out, err = writer.communicate(timeout=30)
    assert out.strip() == "written", err
    a = np.frombuffer(m.view(access="r"), dtype=np.float64).reshape(256, 256)
    assert a[255, 255] == (256 * 256 - 1) * 0.5 and a.sum() == 0.5 * (256 * 256 - 1) * 256 * 128
    assert not a.flags.writeable
    m.close()
    assert filemap.list() == []


def test_wait_any_takes_stream_receivers_and_broadcast_subscribers():
    with filemap.Event.create("Local\\wquit", manual_reset=True) as quit_ev, \
            filemap.Stream.create("Local\\wstream", 4096, 64) as s, \
            filemap.Broadcast.create("Local\\wcast", 4, 64) as b:
        rx, tx = s.receiver(), s.sender()
        sub, pub = b.subscriber(), b.publisher()
        objects = [quit_ev, rx, sub]
        with pytest.raises(TimeoutError):
            filemap.wait_any(objects, timeout=0.05)
        pub.send(b"to all")
        assert filemap.wait_any(objects, timeout=5) == 2
        assert sub.recv(timeout=1) == (b"to all", 0)
        tx.send(b"to one")
        assert filemap.wait_any(objects, timeout=5) == 1
        assert rx.recv(timeout=1) == b"to one"
        quit_ev.set()
        assert filemap.wait_any(objects, timeout=5) == 0
        for end in (rx, tx, sub, pub):
            end.close()


def test_wait_any_takes_a_latest_value_reader():
    with filemap.Event.create("Local\\wquit3", manual_reset=True) as quit_ev, \
            filemap.Latest.create("Local\\wlatest", 64) as lat:
        reader, writer = lat.reader(), lat.writer()
        with pytest.raises(TimeoutError):
            filemap.wait_any([quit_ev, reader], timeout=0.05)
        writer.publish(b"v1")
        assert filemap.wait_any([quit_ev, reader], timeout=5) == 1
        assert reader.read() == (b"v1", 1)
        with pytest.raises(TimeoutError):
            filemap.wait_any([quit_ev, reader], timeout=0.05)
        reader.close()
        writer.close()


def test_wait_any_takes_a_request_reply_server():
    import threading

    with filemap.Event.create("Local\\wquit2", manual_reset=True) as quit_ev, \
            filemap.RequestReply.create("Local\\wrpc", 2, 64, 64) as rr:
        server, client = rr.server(), rr.client()
        with pytest.raises(TimeoutError):
            filemap.wait_any([quit_ev, server], timeout=0.05)
        replies = []
        caller = threading.Thread(target=lambda: replies.append(client.call(b"ping", timeout=10)))
        caller.start()
        assert filemap.wait_any([quit_ev, server], timeout=5) == 1
        ticket, req = server.recv(timeout=1)
        assert req == b"ping"
        assert server.reply(ticket, b"pong")
        caller.join(10)
        assert replies == [b"pong"]
        with pytest.raises(TimeoutError):
            filemap.wait_any([quit_ev, server], timeout=0.05)
        # A client waits for its reply among other objects, too.
        client.send_request(b"ping 2")
        with pytest.raises(TimeoutError):
            filemap.wait_any([quit_ev, client], timeout=0.05)
        ticket, req = server.recv(timeout=1)
        assert server.reply(ticket, req[::-1])
        assert filemap.wait_any([quit_ev, client], timeout=5) == 1
        assert client.wait_reply(timeout=1) == b"2 gnip"
        with pytest.raises(ValueError):
            client.wait_reply(timeout=0)
        server.close()
        client.close()


class Scribbler:
    """Someone who may write a channel, scribbling over its state, and the outcomes of the
    calls made meanwhile: a result, `None` for a timeout or a peer that looks gone, and a
    count of `filemap.CorruptError`s. Any other exception fails the test."""

    def __init__(self, root, seed):
        import random

        self.rnd = random.Random(seed)
        self.local = os.path.join(root, "local-%d" % os.getuid())
        self.corrupt = 0

    def call(self, f, *args, **kw):
        try:
            return f(*args, **kw)
        except filemap.CorruptError:
            self.corrupt += 1
        except (TimeoutError, BrokenPipeError):
            pass

    def scribble(self, name, i, length=None):
        """Garbage over `length` bytes after the 128-byte header (which is read once, at
        the open; docs/channels.md), or everything up to the record's page: every third
        round the whole stretch (random words, small numbers, numbers just below 2^64),
        zeros every 50th, otherwise four words here and there."""
        path = os.path.join(self.local, name)
        if length is None:
            length = os.path.getsize(path) - 4096 - 128
        rnd = self.rnd
        with open(path, "r+b") as f:
            f.seek(128)
            if i % 50 == 49:
                f.write(bytes(length))
            elif i % 3 == 0:
                f.write(b"".join(
                    rnd.choice([os.urandom(8), rnd.randrange(8192).to_bytes(8, "little"),
                                (2**64 - 1 - rnd.randrange(4)).to_bytes(8, "little")])
                    for _ in range(length // 8)
                ))
            else:
                for _ in range(4):
                    f.seek(128 + 8 * rnd.randrange(length // 8))
                    f.write(rnd.choice([b"\xff" * 8, os.urandom(8)]))


def test_a_scribbled_channel_is_a_corrupt_error_never_a_crash(root):
    """Anyone who may write a channel can scribble over its state: every call then gives a
    result within the channel's limits, a timeout, a peer that looks gone, or
    filemap.CorruptError (an OSError); never another exception, a hang or a crash."""
    g = Scribbler(root, 7)
    s = filemap.Stream.create("Local\\scribbled-s", 4096, 64)
    latest = filemap.Latest.create("Local\\scribbled-l", 64)
    ends = [s.sender(), s.receiver(), latest.writer(), latest.reader()]
    tx, rx, w, rd = ends
    try:
        for i in range(300):
            # The control page only, so that the rounds that leave it whole see messages.
            for name in ("scribbled-s", "scribbled-l"):
                g.scribble(name, i, 4096 - 128)
            g.call(tx.send, b"m" * (i % 65), timeout=0.001)
            got = g.call(rx.recv, timeout=0.001)
            assert got is None or len(got) <= 64
            g.call(w.publish, b"v" * (i % 65))
            for got in (g.call(rd.read), g.call(rd.wait_newer, i, timeout=0.001)):
                assert got is None or len(got[0]) <= 64
        assert g.corrupt > 0, "the garbage never reached a check"
    finally:
        for end in ends:
            end.close()
        s.close()
        latest.close()


def test_a_scribbled_broadcast_or_request_reply_is_a_corrupt_error_never_a_crash(root):
    """As above, for a broadcast and a request/reply channel, scribbled over everywhere
    after the header and before the record page: their slots, the sequence numbers and
    client states in them, and the messages."""
    g = Scribbler(root, 11)
    b = filemap.Broadcast.create("Local\\scribbled-b", 16, 64)
    rr = filemap.RequestReply.create("Local\\scribbled-r", 2, 64, 64)
    ends = [b.publisher(), b.subscriber(), rr.server(), rr.client()]
    pub, sub, server, client = ends
    try:
        # Garbage between every two calls, so that it also lands on a message, request or
        # reply on its way.
        for i in range(300):
            g.scribble("scribbled-b", i)
            g.call(pub.send, b"m" * (i % 65))
            g.scribble("scribbled-b", i + 1)
            got = g.call(sub.recv, timeout=0.001)
            if got is not None:
                message, lost = got
                assert len(message) <= 64 and lost >= 0
            g.scribble("scribbled-r", i)
            reply = g.call(client.call, b"q" * (i % 65), timeout=0.001)
            assert reply is None or len(reply) <= 64
            g.scribble("scribbled-r", i + 1)
            got = g.call(server.recv, timeout=0.001)
            if got is not None:
                ticket, request = got
                assert len(request) <= 64
                g.scribble("scribbled-r", i + 2)
                assert g.call(server.reply, ticket, request) in (True, False, None)
                g.scribble("scribbled-r", i + 3)
                reply = g.call(client.wait_reply, timeout=0.001)
                assert reply is None or len(reply) <= 64
        assert g.corrupt > 0, "the garbage never reached a check"
    finally:
        for end in ends:
            end.close()
        b.close()
        rr.close()
