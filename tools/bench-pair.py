#!/usr/bin/env python3
"""Compares two builds of `filemap` on some rows of `filemap bench --quick`.

These machines change speed from minute to minute, so one run of each build says little.
This runs the two builds alternately, swapping which goes first each round, and reports
each row's median and upper quartile per build and the median of the per-round ratios
(B / A).

    python3 tools/bench-pair.py A/filemap B/filemap ROUNDS throughput|latency [SIZE]

Build B in a worktree (`git worktree add /tmp/b REV`, then
`CARGO_TARGET_DIR=/tmp/b-target cargo build --release -p filemap-cli`).
"""
import json
import statistics
import subprocess
import sys

ROWS = {
    "throughput": [
        "raw SPSC ring",
        "filemap stream, copied",
        "filemap stream, zero-copy",
        "filemap stream, batched (64)",
        "raw SPSC ring, 72-byte slots (a stream frame's stride)",
        "raw SPSC ring, 72-byte slots with a length header",
        "filemap stream, typed (`[u64; 8]` values)",
        "raw SPSC ring, size known when compiling",
    ],
    "latency": [
        "raw atomic ping-pong + copies",
        "filemap stream, busy-poll",
        "filemap stream, default (spin, then park)",
        "raw futex ping-pong, idle",
        "filemap stream, default, idle",
    ],
}


def run(binary, test, size):
    out = subprocess.run(
        [binary, "bench", "--quick", "--size", size, "--test", test, "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    rows = doc["rows"] if isinstance(doc, dict) else doc
    return {r["contender"]: r["median"] for r in rows}


def main():
    if len(sys.argv) not in (5, 6) or sys.argv[4] not in ROWS:
        sys.exit(__doc__)
    a, b, rounds, test = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    size = sys.argv[5] if len(sys.argv) == 6 else "64"
    rows = ROWS[test]
    got = {name: ([], [], []) for name in rows}
    for i in range(rounds):
        order = [(0, a), (1, b)] if i % 2 == 0 else [(1, b), (0, a)]
        res = [None, None]
        for j, binary in order:
            res[j] = run(binary, test, size)
        line = []
        for name in rows:
            if name in res[0] and name in res[1]:
                va, vb, ratio = got[name]
                va.append(res[0][name])
                vb.append(res[1][name])
                ratio.append(res[1][name] / res[0][name])
                line.append(f"{name}: {res[0][name]:.3g} {res[1][name]:.3g}")
        print(i, " | ".join(line), flush=True)
    for name in rows:
        va, vb, ratio = got[name]
        if len(va) < 2:
            continue
        qa = statistics.quantiles(va, n=4)[2]
        qb = statistics.quantiles(vb, n=4)[2]
        print(
            f"{name}: A {statistics.median(va):.4g} (q3 {qa:.4g}), "
            f"B {statistics.median(vb):.4g} (q3 {qb:.4g}), "
            f"B/A median of rounds {statistics.median(ratio):.3f}"
        )


if __name__ == "__main__":
    main()
