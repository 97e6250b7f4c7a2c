#!/usr/bin/env python3
"""SQLite durable commits for bench/run: one small row per transaction, for a fixed time.

    python3 bench/sqlite_txn.py DB_FILE JOURNAL_MODE SECONDS [OUT.json]

JOURNAL_MODE is delete or wal; synchronous=FULL in both (SQLite's default in rollback
mode; set explicitly, as WAL is often run with NORMAL, which is not durable on power
loss). Every transaction is BEGIN; INSERT one row (an integer and 100 random bytes);
COMMIT, so every commit waits for its fsyncs (DELETE: the journal file is created,
written, fsynced and deleted per commit, and the directory fsynced; WAL: the WAL frame is
appended and fsynced; WAL checkpoints at the default 1000 pages run inside the loop).
Prints, and writes to OUT.json if given, the transactions, the seconds and txn/s, and the
commit latency percentiles (p50, p99) in microseconds. Only the standard library.
"""

import json
import os
import sqlite3
import sys
import time


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[2])
    path, mode, seconds = sys.argv[1], sys.argv[2].lower(), float(sys.argv[3])
    if mode not in ("delete", "wal"):
        sys.exit(f"sqlite_txn.py: journal mode {mode}: delete or wal")
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    # isolation_level=None: no implicit transactions; BEGIN/COMMIT are ours.
    db = sqlite3.connect(path, isolation_level=None)
    got = db.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    db.execute("PRAGMA synchronous=FULL")
    sync = db.execute("PRAGMA synchronous").fetchone()[0]
    if got.lower() != mode or sync != 2:
        sys.exit(f"sqlite_txn.py: asked journal_mode={mode} synchronous=FULL, got {got} {sync}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, v BLOB)")
    lat = []
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        t0 = now
        db.execute("BEGIN")
        db.execute("INSERT INTO t (n, v) VALUES (?, ?)", (n, os.urandom(100)))
        db.execute("COMMIT")
        now = time.perf_counter()
        lat.append(now - t0)
        n += 1
    elapsed = now - start
    rows = db.execute("SELECT count(*) FROM t").fetchone()[0]
    db.close()
    if rows != n:
        sys.exit(f"sqlite_txn.py: {n} commits but {rows} rows")
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6, 1) if lat else None

    res = {"journal_mode": mode, "synchronous": "FULL", "txn": n, "seconds": round(elapsed, 3),
           "txn_per_s": round(n / elapsed, 1), "lat_us": {"p50": pct(50), "p99": pct(99)},
           "sqlite": sqlite3.sqlite_version}
    text = json.dumps(res)
    print(text)
    if len(sys.argv) == 5:
        with open(sys.argv[4], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
