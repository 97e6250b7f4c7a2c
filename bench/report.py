#!/usr/bin/env python3
"""The report of `bench/run`: collects its raw output into one results JSON, and renders
that JSON into docs/benchmarks.md (between the bench/run markers) and docs/benchmarks.png.

    python3 bench/report.py                       # re-render from target/bench/results.json
    python3 bench/report.py --collect target/bench/raw   # what bench/run does at its end
    python3 bench/report.py --summary RUN.json    # one fio run as "MB/s, IOPS" (progress)

Only the standard library; the chart is drawn by gnuplot (pngcairo).
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- bench/run: begin -->"
END = "<!-- bench/run: end -->"

JOBS = {
    "seqW": "seq write 1 MiB",
    "seqR": "seq read 1 MiB",
    "randRqd16": "rand read 4 KiB qd16 (libaio)",
    "randWqd16": "rand write 4 KiB qd16 (libaio)",
    "randR4": "rand read 4 KiB, 4 jobs psync",
    "randW4": "rand write 4 KiB, 4 jobs psync",
    "mixed": "rand 70/30 read/write 4 KiB, fsync every 32 writes",
    "fsync1": "rand write 4 KiB, fsync after every write, 1 job",
    "fsync4": "rand write 4 KiB, fsync after every write, 4 jobs",
}
SHORT = {
    "seqW": "seqW 1M", "seqR": "seqR 1M", "randRqd16": "randR qd16", "randWqd16": "randW qd16",
    "randR4": "randR 4j", "randW4": "randW 4j", "mixed": "mixed 70/30",
    "fsync1": "fsync 1j", "fsync4": "fsync 4j",
}
SEQ = ("seqW", "seqR")
# The random jobs judged against the loop-plain target ("every random job"). Not the fsync
# jobs: they measure durable commits, which through `mount` cost what they cost on
# loop-plain plus a FUSE round trip and the volume's own flush, so 1.0x loop-plain would
# ask for less work than none; their loop-plain ratio is shown, not judged. Their own
# targets are against gocryptfs (FSYNC).
RANDOM = ("randRqd16", "randWqd16", "randR4", "randW4", "mixed")
FSYNC = ("fsync1", "fsync4")
CRYPTVOL = ("cryptvol-attach", "cryptvol-mount", "cryptvol-mount-snap")
# Authenticated (`volume create --integrity`) targets and the plain target each compares with.
INTEGRITY = {"cryptvol-attach-int": "cryptvol-attach", "cryptvol-mount-int": "cryptvol-mount"}

# Issue targets for `cryptvol mount`.
GOCRYPTFS_MIN = {"randR4": 1.0, "fsync1": 1.0, "fsync4": 1.0}  # every other fio job: 1.5
GOCRYPTFS_DEFAULT = 1.5
BINDFS_MIN = 0.7  # sequential jobs
XTS_MIN = 0.9
# The KMS: calls per second on one core in process, and SigV4 Decrypt/s served.
KMS_IN_PROCESS_MIN = 100_000
KMS_SERVE_MIN = 30_000
RSS_MAX_MIB = 100
# `attach` against gocryptfs on the fsync jobs; the limit references: `mount`
# against loop-plain (ext4 on a loop device over a plain file) on the sequential and the
# RANDOM jobs, `attach` against the plain file on every job.
ATTACH_GOCRYPTFS_MIN = {"fsync1": 1.5, "fsync4": 1.5}
LOOP_SEQ_MIN = 0.8
LOOP_RAND_MIN = 1.0
ATTACH_PLAIN_MIN = 0.8
# Issue targets for authenticated volumes: against gocryptfs on every job (on the fsync
# jobs no more than their plain volume's target there), against the plain volume on the
# sequential jobs.
INT_GOCRYPTFS_MIN = 1.5
INT_PLAIN_MIN = 0.8

# The database jobs (bench/db.sh): id -> (label, unit).
DB_JOBS = {
    "pgbench1": ("pgbench TPC-B-like, 1 client", "tps"),
    "pgbench4": ("pgbench TPC-B-like, 4 clients", "tps"),
    "sqliteDelete": ("SQLite, one row per txn, journal DELETE", "txn/s"),
    "sqliteWal": ("SQLite, one row per txn, WAL", "txn/s"),
}
# The targets for `mount` on every database job.
DB_GOCRYPTFS_MIN = 1.5
DB_PLAIN_MIN = 0.8


# --- fio JSON --------------------------------------------------------------------------

def load_json(path):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before its JSON.
    return json.loads(text[text.index("{"):])


def fio_figures(path):
    """MB/s (10^6 bytes) and IOPS of one fio run, reads and writes added; with fsyncs, their
    latency percentiles (fio's "sync" section: 50 and 99 are among its default percentiles)."""
    job = load_json(path)["jobs"][0]
    mbps = (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 1e6
    iops = job["read"]["iops"] + job["write"]["iops"]
    errors = job.get("error", 0)
    r = {"mbps": round(mbps, 1), "iops": round(iops), "error": errors}
    sync = job.get("sync", {})
    pct = sync.get("lat_ns", {}).get("percentile", {})
    if sync.get("total_ios") and "50.000000" in pct and "99.000000" in pct:
        r["fsync_lat_us"] = {"p50": round(pct["50.000000"] / 1000, 1),
                             "p99": round(pct["99.000000"] / 1000, 1)}
    return r


# --- collect ---------------------------------------------------------------------------

def md_rows(text):
    """Rows of the markdown tables in a bench's output, as lists of cells."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def num(s):
    try:
        return float(s.replace(",", "").rstrip("x"))
    except (ValueError, AttributeError):
        return None


def collect_micro(raw):
    micro = {}
    p = os.path.join(raw, "micro-xts.txt")
    if os.path.exists(p):
        text = open(p).read()
        rows = [r for r in md_rows(text) if r[0] != "engine" and len(r) >= 3]
        xts = {"rows": [{"engine": r[0], "encrypt_gbps": num(r[1]), "decrypt_gbps": num(r[2])}
                        for r in rows]}
        m = re.search(r"cryptvol picks backend: (\S+)", text)
        xts["backend"] = m.group(1) if m else None
        default = next((r for r in xts["rows"] if r["engine"].endswith("(default)")), None)
        ossl = next((r for r in xts["rows"] if r["engine"].startswith("openssl")), None)
        if default and ossl and ossl["encrypt_gbps"] and ossl["decrypt_gbps"]:
            xts["ratio_encrypt"] = round(default["encrypt_gbps"] / ossl["encrypt_gbps"], 2)
            xts["ratio_decrypt"] = round(default["decrypt_gbps"] / ossl["decrypt_gbps"], 2)
        m = re.search(r"load average before the run: (.*?) \(", text)
        xts["load_before"] = m.group(1) if m else None
        micro["xts"] = xts
    # kms_ops and kms_server: one table row per key, "embedded" and then the key in a
    # custom key store, "custom key store (SoftHSM2 VERSION)".
    p = os.path.join(raw, "micro-kms_ops.txt")
    if os.path.exists(p):
        rows = kms_rows(open(p).read(), 3)
        if "embedded" in rows:
            e = rows["embedded"]
            micro["kms_ops"] = {"generate_data_key_per_s": num(e[1]), "decrypt_per_s": num(e[2])}
            if "hsm" in rows:
                h = rows["hsm"]
                micro["kms_ops"]["hsm"] = {"token": hsm_token(h[0]), "generate_data_key_per_s": num(h[1]),
                                           "decrypt_per_s": num(h[2])}
    p = os.path.join(raw, "micro-kms_server.txt")
    if os.path.exists(p):
        text = open(p).read()
        rows = kms_rows(text, 4)
        if "embedded" in rows:
            e = rows["embedded"]
            micro["kms_server"] = {"connections": int(num(e[1])), "generate_data_key_req_per_s": num(e[2]),
                                   "decrypt_req_per_s": num(e[3])}
            m = re.search(r"^load generator: (.*?) \(BENCH_CLIENT\)", text, re.M)
            micro["kms_server"]["client"] = m.group(1) if m else None
            if "hsm" in rows:
                h = rows["hsm"]
                micro["kms_server"]["hsm"] = {"token": hsm_token(h[0]), "generate_data_key_req_per_s": num(h[2]),
                                              "decrypt_req_per_s": num(h[3])}
    return micro


def kms_rows(text, width):
    """The rows of a KMS bench's table by key: "embedded" and "hsm" (a custom key store)."""
    out = {}
    for r in md_rows(text):
        if len(r) < width or num(r[1]) is None:
            continue
        if r[0] == "embedded":
            out["embedded"] = r
        elif r[0].startswith("custom key store"):
            out["hsm"] = r
    return out


def hsm_token(label):
    """"custom key store (SoftHSM2 2.6.1)" -> "SoftHSM2 2.6.1"."""
    m = re.search(r"\((.*)\)", label)
    return m.group(1) if m else label


def pgbench_figures(path):
    """tps (without initial connection time), mean latency and transactions of a pgbench run."""
    text = open(path).read()
    m = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", text, re.M)
    if not m:
        raise ValueError("no tps line")
    lat = re.search(r"^latency average = ([\d.]+) ms", text, re.M)
    n = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    return {"rate": round(float(m.group(1)), 1), "lat_ms": float(lat.group(1)) if lat else None,
            "txn": int(n.group(1)) if n else None, "failed": int(failed.group(1)) if failed else 0}


def target_entry(tdir, label, failures):
    """A target's figures so far (its target.json, with no jobs yet), or None, recorded as
    a failure, if bench/run did not get as far as writing it."""
    meta_path = os.path.join(tdir, "target.json")
    if not os.path.exists(meta_path):
        failures.append(f"{label}: did not finish")
        return None
    entry = load_json(meta_path)
    entry["jobs"] = {}
    return entry


def collect_db(raw, params, failures):
    """The database jobs' figures per target: {target: {meta..., "jobs": {job: figures}}}."""
    targets = params.get("db_targets", "").split()
    jobs = params.get("db", "").split()
    db = {}
    for t in targets:
        tdir = os.path.join(raw, "db", t)
        entry = target_entry(tdir, f"database jobs on {t}", failures)
        if entry is None:
            continue
        for j in jobs:
            try:
                if j.startswith("pgbench"):
                    r = pgbench_figures(os.path.join(tdir, f"{j}.txt"))
                    if r["failed"]:
                        failures.append(f"{t} / {j}: {r['failed']} failed transactions")
                else:
                    s = load_json(os.path.join(tdir, f"{j}.json"))
                    r = {"rate": s["txn_per_s"], "txn": s["txn"], "lat_us": s["lat_us"],
                         "journal_mode": s["journal_mode"], "synchronous": s["synchronous"]}
            except (OSError, ValueError, KeyError) as e:
                err = read(tdir, f"{j}.err", "")
                failures.append(f"{t} / {j}: no result ({e}{'; ' + err[-200:] if err else ''})")
                continue
            entry["jobs"][j] = r
        db[t] = entry
    return db, targets, jobs


def read(raw, name, default=None):
    p = os.path.join(raw, name)
    return open(p).read().strip() if os.path.exists(p) else default


def collect(raw):
    params = load_json(os.path.join(raw, "params.json"))
    targets = params["targets"].split()
    jobs = params["jobs"].split()
    fio = {}
    failures = []
    for t in targets:
        tdir = os.path.join(raw, "fio", t)
        entry = target_entry(tdir, t, failures)
        if entry is None:
            continue
        for j in jobs:
            runs = []
            for p in sorted(glob.glob(os.path.join(tdir, f"{j}.*.json"))):
                try:
                    r = fio_figures(p)
                except (ValueError, KeyError, IndexError) as e:
                    failures.append(f"{t} / {j}: unreadable fio output {os.path.basename(p)} ({e})")
                    continue
                if r["error"]:
                    failures.append(f"{t} / {j}: fio reported error {r['error']}")
                runs.append(r)
            if runs:
                entry["jobs"][j] = {
                    "runs": runs,
                    "mbps": round(statistics.median(r["mbps"] for r in runs), 1),
                    "iops": round(statistics.median(r["iops"] for r in runs)),
                }
                lat = [r["fsync_lat_us"] for r in runs if "fsync_lat_us" in r]
                if lat:
                    # Medians over the runs, each percentile on its own.
                    entry["jobs"][j]["fsync_lat_us"] = {
                        k: round(statistics.median(x[k] for x in lat), 1) for k in ("p50", "p99")}
            else:
                failures.append(f"{t} / {j}: no result")
        fio[t] = entry
    db, db_targets, db_jobs = collect_db(raw, params, failures)
    return {
        "date": read(raw, "date"),
        "command": params.pop("command"),
        "duration_s": {"total": int(read(raw, "total_seconds", "0")),
                       "fio": int(read(raw, "fio_seconds", "0")),
                       "db": int(read(raw, "db_seconds", "0"))},
        "machine": load_json(os.path.join(raw, "machine.json")),
        "versions": load_json(os.path.join(raw, "versions.json")),
        "params": params,
        "targets": targets,
        "jobs": jobs,
        "fio": fio,
        "db_targets": db_targets,
        "db_jobs": db_jobs,
        "db": db,
        "failures": failures,
        "micro": collect_micro(raw),
    }


# --- render ----------------------------------------------------------------------------

def fmt_mbps(v):
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def fmt_lat(us):
    if us is None:
        return "–"
    ms = us / 1000
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}x"


def mbps(res, t, j):
    return res["fio"].get(t, {}).get("jobs", {}).get(j, {}).get("mbps")


def iops(res, t, j):
    return res["fio"].get(t, {}).get("jobs", {}).get(j, {}).get("iops")


def ratio(res, a, b, j):
    # The fsync jobs by IOPS: a few MB/s at most, which MB/s rounded to 0.1 would blur
    # (the same block size on both sides, so otherwise the same ratio).
    f = iops if j in FSYNC else mbps
    x, y = f(res, a, j), f(res, b, j)
    return x / y if x is not None and y else None


def need(a, b, j):
    """The issue's required ratio of fio target a over target b on job j, or None."""
    if a == "cryptvol-mount" and b == "gocryptfs":
        return GOCRYPTFS_MIN.get(j, GOCRYPTFS_DEFAULT)
    if a == "cryptvol-mount" and b == "bindfs":
        return BINDFS_MIN if j in SEQ else None
    if a == "cryptvol-attach" and b == "gocryptfs":
        return ATTACH_GOCRYPTFS_MIN.get(j)
    if a == "cryptvol-mount" and b == "loop-plain":
        return LOOP_SEQ_MIN if j in SEQ else LOOP_RAND_MIN if j in RANDOM else None
    if a == "cryptvol-attach" and b == "plain":
        return ATTACH_PLAIN_MIN
    if a in INTEGRITY and b == "gocryptfs":
        base = need(INTEGRITY[a], b, j) if j in FSYNC else None
        return min(INT_GOCRYPTFS_MIN, base) if base is not None else INT_GOCRYPTFS_MIN
    if a in INTEGRITY and b == INTEGRITY[a]:
        return INT_PLAIN_MIN if j in SEQ else None
    return None


def short(t):
    return t.replace("cryptvol-", "")


def db_rate(res, t, j):
    return res.get("db", {}).get(t, {}).get("jobs", {}).get(j, {}).get("rate")


def db_ratio(res, a, b, j):
    x, y = db_rate(res, a, j), db_rate(res, b, j)
    return x / y if x is not None and y else None


def db_need(a, b):
    if a == "cryptvol-mount" and b == "gocryptfs":
        return DB_GOCRYPTFS_MIN
    if a == "cryptvol-mount" and b == "plain":
        return DB_PLAIN_MIN
    return None


def targets_verdicts(res):
    """(what, requirement, figure, met) for each issue target that this run measured."""
    out = []
    jobs = res["jobs"]

    def pair(a, b):
        for j in jobs:
            n = need(a, b, j)
            r = ratio(res, a, b, j)
            if n is not None and r is not None:
                out.append((f"{short(a)} / {short(b)}, {JOBS[j]}", f"≥ {n:.1f}x", fmt_ratio(r), r >= n))

    for a, b in (("cryptvol-mount", "gocryptfs"), ("cryptvol-mount", "bindfs"),
                 ("cryptvol-attach", "gocryptfs"), ("cryptvol-mount", "loop-plain"),
                 ("cryptvol-attach", "plain")):
        pair(a, b)
    for j in res.get("db_jobs", []):
        for b in ("gocryptfs", "plain"):
            n, r = db_need("cryptvol-mount", b), db_ratio(res, "cryptvol-mount", b, j)
            if r is not None:
                out.append((f"mount / {b}, {DB_JOBS[j][0]}", f"≥ {n:.1f}x", fmt_ratio(r), r >= n))
    xts = res["micro"].get("xts", {})
    if "ratio_encrypt" in xts:
        r = min(xts["ratio_encrypt"], xts["ratio_decrypt"])
        out.append(("XTS (default backend) / openssl, worse of encrypt and decrypt",
                    f"≥ {XTS_MIN:.1f}x", fmt_ratio(r), r >= XTS_MIN))
    for t, plain in INTEGRITY.items():
        if t not in res["fio"]:
            continue
        pair(t, "gocryptfs")
        pair(t, plain)
    k = res["micro"].get("kms_ops", {})
    for what, key in (("GenerateDataKey", "generate_data_key_per_s"), ("Decrypt", "decrypt_per_s")):
        v = k.get(key)
        if v is not None:
            out.append((f"KMS in process, one core, embedded key: {what}/s", f"≥ {KMS_IN_PROCESS_MIN:,}",
                        f"{v:,.0f}", v >= KMS_IN_PROCESS_MIN))
    s = res["micro"].get("kms_server", {})
    v = s.get("decrypt_req_per_s")
    if v is not None:
        client = s.get("client") or "load generator"
        out.append((f"`kms serve`, SigV4 Decrypt/s over loopback, {client} on the same machine "
                    f"({res.get('machine', {}).get('cores', '?')} CPUs)",
                    f"≥ {KMS_SERVE_MIN:,}", f"{v:,.0f}", v >= KMS_SERVE_MIN))
    rss = [res["fio"][t]["daemon_peak_rss_kib"] for t in CRYPTVOL + tuple(INTEGRITY)
           if t in res["fio"] and res["fio"][t].get("daemon_peak_rss_kib")]
    if rss:
        mib = max(rss) / 1024
        out.append(("cryptvol daemon peak RSS (VmHWM), all cryptvol targets",
                    f"< {RSS_MAX_MIB} MiB", f"{mib:.0f} MiB", mib < RSS_MAX_MIB))
    return out


def notes(res):
    n = []
    p = res["params"]
    if p.get("quick"):
        n.append("**QUICK run** (smoke test: short runs, small files): not comparable with full runs.")
    buffered = [t for t in res["targets"] if t in res["fio"] and not res["fio"][t]["direct"]]
    if buffered:
        n.append(
            f"No O_DIRECT on {', '.join('`' + t + '`' for t in buffered)} (fio with `--direct=1` "
            "failed on a probe file): measured buffered, caches dropped before every run, and "
            "write jobs end with an fsync (`--end_fsync=1`) so the data reaches the target's "
            f"backing files. Reads of a {p['size']} file in a {p['runtime_s']} s run can come "
            "from the page cache after the first pass, so their read figures are upper bounds.")
    for t in res["targets"]:
        e = res["fio"].get(t, {})
        for j, v in e.get("jobs", {}).items():
            # The fsync jobs by IOPS, as they are compared.
            key, unit = ("iops", "IOPS") if j in FSYNC else ("mbps", "MB/s")
            runs = [r[key] for r in v["runs"]]
            if len(runs) > 1 and min(runs) > 0 and max(runs) / min(runs) > 1.5:
                shown = (f"{r:,}" if key == "iops" else fmt_mbps(r) for r in runs)
                n.append(f"Spread: `{t}` {SHORT[j]} runs were {', '.join(shown)} "
                         f"{unit} (more than 1.5x apart).")
    loads = [(t, res["fio"][t]["load_before"]) for t in res["targets"]
             if res["fio"].get(t, {}).get("load_before")]
    if loads:
        n.append("Load average (1, 5, 15 min) as each target was set up: "
                 + "; ".join(f"`{t}` {la}" for t, la in loads) + ".")
    dloads = [(t, e["load_before"]) for t, e in res.get("db", {}).items() if e.get("load_before")]
    if dloads:
        n.append("Load average as each target was set up for the databases: "
                 + "; ".join(f"`{t}` {la}" for t, la in dloads) + ".")
    if "cryptvol-mount-snap" in res["fio"]:
        s = res["fio"]["cryptvol-mount-snap"].get("snapshots")
        n.append(f"`cryptvol-mount-snap` took {s} snapshots: one right after the layout, then one "
                 "before every later run that writes, so each write run pays copy-on-write on the "
                 "first write to each chunk.")
    for f in res.get("failures", []):
        n.append(f"Failed: {f}.")
    return n


def md_table(header, rows, align):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if a == "l" else "--:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_md(res, png_name):
    m, v, p = res["machine"], res["versions"], res["params"]
    targets = [t for t in res["targets"] if t in res["fio"]]
    jobs = res["jobs"]
    d = m["disk"]
    disk = f"{d['device']} ({d['fs']}"
    if d.get("model"):
        disk += f", {d['model']}"
    if d.get("rotational") == "0":
        disk += ", non-rotational"
    disk += ")"
    out = [BEGIN,
           "## Latest run of `bench/run` (generated)",
           "",
           "Generated by `bench/run` from `target/bench/results.json`; regenerate the text and "
           "chart with `python3 bench/report.py`. Everything between the `bench/run` markers "
           "is overwritten by the next run.",
           "",
           "Run it as root (`bash bench/run` in a root shell, or `sudo bench/run`; installs what it needs from Debian, builds "
           "the release binary, sets every target up in a temp dir under `/var/tmp` and tears "
           "it down on any exit). Options via the environment: `QUICK=1` (one run of 2 s per "
           "job, 64 MiB files, 5 s database jobs: a smoke test), `TARGETS=\"...\"`, `JOBS=\"...\"` (ids: "
           + ", ".join(f"`{j}`" for j in JOBS) + "; `none`: no fio), `SIZE`, `RUNTIME`, `RUNS_SEQ`, "
           "`RUNS_RAND`, `INT_CHUNK` (chunk size of the `-int` volumes), `DB=\"...\"` (database jobs, ids: "
           + ", ".join(f"`{j}`" for j in DB_JOBS) + "; `0`: none), `DB_RUNTIME` (seconds per database job, "
           "default 30), `PG_SCALE` (pgbench scale, default 10), `MICRO=0` (skip the micro-benchmarks; "
           "or a list of them: `xts block_mac kms_ops kms_server`), `TARGETS=none` (no fio, no databases), "
           "`REPORT=0` (leave docs/ alone), "
           "`OUT` (default `target/bench`: raw fio JSON and database output in `OUT/raw/`, figures in "
           "`OUT/results.json`).",
           "",
           f"- **Date**: {res['date']}; the whole suite took {res['duration_s']['total'] // 60} min "
           f"{res['duration_s']['total'] % 60} s (fio part {res['duration_s']['fio'] // 60} min "
           f"{res['duration_s']['fio'] % 60} s, including setup and layout; databases "
           f"{res['duration_s'].get('db', 0) // 60} min {res['duration_s'].get('db', 0) % 60} s).",
           f"- **Command**: `{res['command']}`",
           f"- **Machine**: {m['cpu']}, {m['cores']} vCPU, {m['ram_gib']} GiB RAM, {m['os']}, "
           f"kernel {m['kernel']}; temp dir under `{d['dir']}` on {disk}, the same disk for every "
           "target.",
           f"- **Versions**: cryptvol {v['cryptvol']}, rustc {v['rustc']}, fio {v['fio']}, "
           f"gocryptfs {v['gocryptfs']}, cryfs {v['cryfs']}, securefs {v['securefs']}, "
           f"bindfs {v['bindfs']}, fuse3 {v['fuse3']}, OpenSSL {v['openssl']}"
           + (f", PostgreSQL {v['postgresql']}, SQLite {v['sqlite']}" if v.get("postgresql") else "") + ".",
           f"- **Method**: one fio file of {p['size']} per target, laid out once before its jobs "
           f"(1 MiB writes, ended by fsync); each run {p['runtime_s']} s, time-based; sequential jobs median of "
           f"{p['runs_seq']} run(s), random jobs of {p['runs_rand']}; O_DIRECT where the target "
           "takes it; `sync; echo 3 > /proc/sys/vm/drop_caches` before every run. MB/s are 10^6 "
           "bytes/s, reads and writes added (the mixed job too). The fsync jobs (`fsync1`, `fsync4`: "
           "`--rw=randwrite --bs=4k --ioengine=psync --fsync=1`, 1 or 4 jobs) are runs of "
           f"{p['runs_seq']} like the mixed job, compared by IOPS (writes/s, each followed by an "
           "fsync); their fsync latency p50/p99 is fio's `sync` percentiles, the median over runs.",
           "- **Targets**: `plain` the temp dir itself; `loop-plain` ext4 on a loop device over a "
           f"plain {p.get('vol_size', '4G')} file in the temp dir (sparse, as cryptvol's volumes are thin), set up as `cryptvol mount` sets up its "
           "volume (`losetup --direct-io=on --sector-size 4096`, `max_sectors_kb` 256, "
           "`mkfs.ext4 -q -F`, `mount -t ext4`): the stack of `mount` without FUSE and without "
           "encryption; `bindfs` (`--multithreaded`, FUSE without "
           "crypto: the FUSE ceiling); `gocryptfs` (defaults); both take O_DIRECT opens but "
           "write their backing files through the page cache (bindfs without "
           "`--forward-odirect`), so their sequential figures can exceed the disk; `cryfs` (aes-256-gcm, default "
           "block size); `securefs` (defaults, `create` + `mount -b`); `cryptvol-attach` fio on "
           "the raw `DIR/volume` file; `cryptvol-mount` fio on a file in ext4 over a loop "
           "device (`cryptvol mount`); `cryptvol-mount-snap` the same with snapshots taken so "
           "the writes pay copy-on-write; `cryptvol-attach-int` and `cryptvol-mount-int` as "
           "`cryptvol-attach` and `cryptvol-mount` on a volume created with `--integrity` "
           f"(chunk size {p.get('int_chunk', '1M')}). cryptvol volumes are 4 GiB, thin.",
           ""]
    if targets and jobs:
        out += [
           "### fio, MB/s (median)",
           "",
           md_table(["job"] + targets,
                    [[JOBS[j]] + [fmt_mbps(mbps(res, t, j)) for t in targets] for j in jobs],
                    "l" + "r" * len(targets)),
           "",
           "### fio, IOPS (median)",
           "",
           md_table(["job"] + targets,
                    [[JOBS[j]] + [f"{res['fio'][t]['jobs'][j]['iops']:,}"
                                  if j in res["fio"][t]["jobs"] else "–" for t in targets]
                     for j in jobs],
                    "l" + "r" * len(targets)),
           "",
           f"![fio MB/s per job and target]({png_name})",
           ""]

    def verdict(r, n):
        cell = fmt_ratio(r)
        if r is not None and n is not None:
            cell = f"**{cell}** {'met' if r >= n else 'MISSED'}"
        return cell

    def needs_text(pairs, j):
        by_a = {}
        for a, b in pairs:
            n = need(a, b, j)
            if n is not None:
                by_a.setdefault(short(a), []).append(f"≥ {n:.1f}x {short(b)}")
        return "; ".join(f"{a} {', '.join(x)}" for a, x in by_a.items())

    cv = [t for t in CRYPTVOL if t in res["fio"]]
    peers = [b for b in ("gocryptfs", "bindfs") if b in res["fio"]]
    pairs = [(t, b) for b in peers for t in cv]
    # The limit references: mount against the same stack without FUSE and encryption,
    # attach against the plain file.
    pairs += [(a, b) for a, b in (("cryptvol-mount", "loop-plain"), ("cryptvol-attach", "plain"))
              if a in res["fio"] and b in res["fio"]]
    if pairs:
        header = ["job"] + [f"{short(a)} / {short(b)}" for a, b in pairs] + ["targets"]
        rows = []
        for j in jobs:
            rows.append([JOBS[j]] + [verdict(ratio(res, a, b, j), need(a, b, j)) for a, b in pairs]
                        + [needs_text(pairs, j)])
        out += ["### Ratios against peers and limit references (same run)", "",
                "MB/s ratios (IOPS for the fsync jobs). `loop-plain` is ext4 on a loop device over "
                "a plain file: `mount` without FUSE and encryption; `plain` a plain file: what "
                "`attach`'s file stands for. The fsync jobs' `mount / loop-plain` ratio is shown "
                "but not judged (the random-job target of 1.0x loop-plain is for jobs without "
                "fsyncs).", "",
                md_table(header, rows, "l" + "r" * (len(header) - 2) + "l"), ""]
        if cv:
            rss = [(t, res["fio"][t].get("daemon_peak_rss_kib")) for t in cv]
            out.append("cryptvol daemon peak RSS (VmHWM of the region daemon, read every second and "
                       "after every run): " + ", ".join(
                           f"{t} {k / 1024:.0f} MiB" if k else f"{t} –" for t, k in rss) + ".")
            out.append("")

    ints = [(t, b) for t, b in INTEGRITY.items() if t in res["fio"]]
    if ints:
        ipairs = []
        for t, b in ints:
            ipairs += [(t, "gocryptfs"), (t, b)]
        ipairs = [(a, b) for a, b in ipairs if b in res["fio"]]
        header = ["job"] + [f"{short(a)} / {short(b)}" for a, b in ipairs] + ["target"]
        rows = []
        for j in jobs:
            rows.append([JOBS[j]] + [verdict(ratio(res, a, b, j), need(a, b, j)) for a, b in ipairs]
                        + [needs_text(ipairs, j)])
        out += ["### Authenticated volumes (`--integrity`), same run", "",
                md_table(header, rows, "l" + "r" * (len(header) - 2) + "l"), ""]
        rss = [(t, res["fio"][t].get("daemon_peak_rss_kib")) for t, _ in ints]
        out.append("cryptvol daemon peak RSS: " + ", ".join(
            f"{t} {k / 1024:.0f} MiB" if k else f"{t} –" for t, k in rss) + ".")
        out.append("")

    fjobs = [j for j in jobs if j in FSYNC]
    if fjobs and targets:
        header = ["target"]
        for j in fjobs:
            header += [f"{SHORT[j]} IOPS", f"{SHORT[j]} fsync p50", f"{SHORT[j]} fsync p99"]
        rows = []
        for t in targets:
            row = [f"`{t}`"]
            for j in fjobs:
                e = res["fio"][t]["jobs"].get(j, {})
                lat = e.get("fsync_lat_us", {})
                row += [f"{e['iops']:,}" if "iops" in e else "–",
                        fmt_lat(lat.get("p50")), fmt_lat(lat.get("p99"))]
            rows.append(row)
        out += ["### fsync latency (fio `--fsync=1`, 4 KiB random writes)", "",
                "Latency of the fsync after each write (fio's `sync` percentiles), median over "
                f"{p['runs_seq']} run(s); IOPS are writes/s, each write followed by its fsync.", "",
                md_table(header, rows, "l" + "r" * (len(header) - 1)), ""]

    out += render_db(res)

    micro = res["micro"]
    if micro:
        out += ["### Micro-benchmarks", ""]
        xts = micro.get("xts")
        if xts:
            out += [f"`taskset -c 0 cargo bench --bench xts` (AES-256-XTS, 4096-byte data units, "
                    f"one core; picked backend `{xts.get('backend')}`; load average before: "
                    f"{xts.get('load_before')}), with `openssl speed -evp aes-256-xts -bytes 4096` "
                    "on the same core:", ""]
            ossl = next((r for r in xts["rows"] if r["engine"].startswith("openssl")), None)
            rows = []
            for r in xts["rows"]:
                rr = "–"
                if ossl and ossl["encrypt_gbps"] and r["encrypt_gbps"] is not None:
                    rr = (f"{r['encrypt_gbps'] / ossl['encrypt_gbps']:.2f}x / "
                          f"{r['decrypt_gbps'] / ossl['decrypt_gbps']:.2f}x")
                rows.append([r["engine"], f"{r['encrypt_gbps']:.2f}", f"{r['decrypt_gbps']:.2f}", rr])
            out += [md_table(["engine", "encrypt GB/s", "decrypt GB/s", "vs openssl (enc / dec)"],
                             rows, "lrrr"), ""]
        k = micro.get("kms_ops")
        s = micro.get("kms_server")
        if k or s:
            rows = []

            def add(bench, key, figures, unit):
                for op, v in figures:
                    if v is not None:
                        rows.append([bench, key, op, f"{v:,.0f} {unit}"])
                        bench = key = ""

            if k:
                add("`taskset -c 0 cargo bench --bench kms_ops` (in process, one core)", "embedded",
                    [("GenerateDataKey", k["generate_data_key_per_s"]), ("Decrypt", k["decrypt_per_s"])], "ops/s")
                h = k.get("hsm")
                if h:
                    add("", f"custom key store ({h['token']})",
                        [("GenerateDataKey", h["generate_data_key_per_s"]), ("Decrypt", h["decrypt_per_s"])],
                        "ops/s")
            if s:
                add(f"`cargo bench --bench kms_server` (SigV4 over loopback, {s['connections']} connections)",
                    "embedded", [("GenerateDataKey", s.get("generate_data_key_req_per_s")),
                                 ("Decrypt", s["decrypt_req_per_s"])], "req/s")
                h = s.get("hsm")
                if h:
                    add("", f"custom key store ({h['token']})",
                        [("GenerateDataKey", h["generate_data_key_req_per_s"]),
                         ("Decrypt", h["decrypt_req_per_s"])], "req/s")
            out += [md_table(["bench", "key", "operation", "rate"], rows, "lllr"), ""]

    verdicts = targets_verdicts(res)
    if verdicts:
        met = sum(1 for *_, ok in verdicts if ok)
        out += [f"### Issue targets: {met} of {len(verdicts)} met", "",
                md_table(["target", "required", "measured", ""],
                         [[w, need, fig, "met" if ok else "**MISSED**"] for w, need, fig, ok in verdicts],
                         "lrrl"), ""]
    ns = notes(res)
    if ns:
        out += ["### Notes", ""] + [f"- {x}" for x in ns] + [""]
    out.append(END)
    return "\n".join(out)


def render_db(res):
    dts = [t for t in res.get("db_targets", []) if t in res.get("db", {})]
    djobs = res.get("db_jobs", [])
    if not dts or not djobs:
        return []
    p = res["params"]
    out = ["### Databases", "",
           f"On {', '.join('`' + t + '`' for t in dts)}, each set up afresh after the fio part "
           "(a new volume for the cryptvol targets; gocryptfs mounted with `-allow_other` so that "
           "PostgreSQL's user can reach it), one run of each job, "
           f"{p.get('db_runtime_s')} s, caches dropped before it (bench/db.sh). pgbench: PostgreSQL "
           "with `initdb`'s postgresql.conf (fsync on, synchronous_commit on, wal_sync_method "
           "fdatasync, shared_buffers 128MB), the data directory on the target, the server as the "
           "`postgres` user on a unix socket in the temp dir (no TCP); `pgbench -i -s "
           f"{p.get('pg_scale')}`, then per job a CHECKPOINT and `pgbench -c N -j N -T "
           f"{p.get('db_runtime_s')}` (built-in TPC-B-like script); tps without the initial "
           "connection time. SQLite (bench/sqlite_txn.py, Python's sqlite3): one row of 100 bytes "
           "per transaction (BEGIN; INSERT; COMMIT), `synchronous=FULL` in both journal modes "
           "(set explicitly: WAL is often run with NORMAL, which is not durable); txn/s.", ""]

    def unit(j):
        return DB_JOBS[j][1]

    rows = []
    for j in djobs:
        row = [DB_JOBS[j][0]]
        for t in dts:
            v = db_rate(res, t, j)
            row.append("–" if v is None else f"{v:,.0f} {unit(j)}" if v >= 100 else f"{v:.1f} {unit(j)}")
        rows.append(row)
    out += [md_table(["job"] + dts, rows, "l" + "r" * len(dts)), ""]
    pairs = [(a, b) for a in ("cryptvol-mount", "cryptvol-mount-int")
             for b in ("gocryptfs", "plain", "loop-plain") if a in dts and b in dts]
    if "cryptvol-mount" in dts and "cryptvol-mount-int" in dts:
        pairs.append(("cryptvol-mount-int", "cryptvol-mount"))
    if pairs:
        rows = []
        for j in djobs:
            row = [DB_JOBS[j][0]]
            for a, b in pairs:
                r, n = db_ratio(res, a, b, j), db_need(a, b)
                cell = fmt_ratio(r)
                if r is not None and n is not None:
                    cell = f"**{cell}** {'met' if r >= n else 'MISSED'}"
                row.append(cell)
            rows.append(row)
        out += [md_table(["job"] + [f"{short(a)} / {short(b)}" for a, b in pairs], rows,
                         "l" + "r" * len(pairs)), "",
                f"Targets: mount ≥ {DB_GOCRYPTFS_MIN:.1f}x gocryptfs and ≥ {DB_PLAIN_MIN:.1f}x "
                "plain on every database job; the other ratios are for reading, not judged.", ""]
    lat = []
    for t in dts:
        for j in djobs:
            e = res["db"][t]["jobs"].get(j, {})
            if e.get("lat_ms") is not None:
                lat.append(f"`{t}` {j} {e['lat_ms']:.2f} ms")
            elif e.get("lat_us"):
                lat.append(f"`{t}` {j} p50 {fmt_lat(e['lat_us']['p50'])}, p99 {fmt_lat(e['lat_us']['p99'])}")
    if lat:
        out += ["Commit latency (pgbench: mean; SQLite: p50/p99 of a commit): " + "; ".join(lat) + ".", ""]
    return out


COLORS = {
    "plain": "#7f7f7f", "loop-plain": "#17becf", "bindfs": "#9edae5", "gocryptfs": "#ff7f0e",
    "cryfs": "#bcbd22", "securefs": "#8c564b", "cryptvol-attach": "#d62728",
    "cryptvol-attach-int": "#ff9896", "cryptvol-mount": "#1f77b4", "cryptvol-mount-int": "#aec7e8",
    "cryptvol-mount-snap": "#9467bd",
}
SPARE = ["#2ca02c", "#98df8a", "#e377c2", "#f7b6d2", "#c49c94", "#dbdb8d"]


def color(t, i):
    return COLORS.get(t, SPARE[i % len(SPARE)])


def render_png(res, path):
    targets = [t for t in res["targets"] if t in res["fio"]]
    jobs = res["jobs"]
    vals = [mbps(res, t, j) for t in targets for j in jobs]
    vals = [x for x in vals if x]
    if not vals:
        return
    log = max(vals) / min(vals) > 30
    m = res["machine"]
    cpu = re.sub(r"\s+", " ", m["cpu"]).replace("-Core Processor", "")
    title = (f"fio MB/s per job ({res['params']['size']} file, median) — {cpu}, {m['cores']} vCPU, "
             f"kernel {m['kernel']}, {res['date']}")
    if res["params"].get("quick"):
        title += " (QUICK)"
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        with open(data, "w") as f:
            f.write("job " + " ".join(
                t if res["fio"][t]["direct"] else f"{t}(buffered)" for t in targets) + "\n")
            for j in jobs:
                cells = [f"{mbps(res, t, j):.3f}" if mbps(res, t, j) else "NaN" for t in targets]
                f.write(f'"{SHORT[j]}" ' + " ".join(cells) + "\n")
        # One colour per target, the same in every run (gnuplot's default cycle has 8).
        plot = ", ".join(
            f"'{data}' using {i + 2}:xtic(1) title columnheader({i + 2}) lc rgb '{color(t, i)}'"
            for i, t in enumerate(targets))
        script = f"""
set terminal pngcairo size 1400,720 font 'DejaVu Sans,11' noenhanced
set output '{path}'
set title "{title}"
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.9 border -1
set boxwidth 0.95
set key outside right top vertical
set grid ytics mytics
set ylabel 'MB/s{" (log scale)" if log else ""}'
set xtics nomirror
set yrange [{10 ** math.floor(math.log10(min(vals))) if log else 0}:*]
{"set logscale y" if log else ""}
plot {plot}
"""
        r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            sys.exit(f"report.py: gnuplot failed: {r.stderr}")


def write_docs(res, md_path, png_path):
    section = render_md(res, os.path.basename(png_path))
    text = open(md_path).read()
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + section + text[b:]
    else:
        # After the "## Machine" section: before the heading that follows it.
        i = text.index("## Machine")
        nxt = text.find("\n## ", i + 1)
        nxt = len(text) if nxt < 0 else nxt + 1
        text = text[:nxt] + section + "\n\n" + text[nxt:]
    with open(md_path, "w") as f:
        f.write(text)
    render_png(res, png_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", metavar="RAW_DIR", help="build the results JSON from bench/run's raw dir")
    ap.add_argument("--results", default=os.path.join(REPO, "target/bench/results.json"))
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    ap.add_argument("--md", default=os.path.join(REPO, "docs/benchmarks.md"))
    ap.add_argument("--png", default=os.path.join(REPO, "docs/benchmarks.png"))
    ap.add_argument("--summary", metavar="FIO_JSON", help="print one fio run's MB/s and IOPS")
    a = ap.parse_args()
    if a.summary:
        r = fio_figures(a.summary)
        print(f"{r['mbps']} MB/s, {r['iops']} IOPS" + (f", error {r['error']}" if r["error"] else ""))
        return
    if a.collect:
        res = collect(a.collect)
        os.makedirs(os.path.dirname(a.results), exist_ok=True)
        with open(a.results, "w") as f:
            json.dump(res, f, indent=1)
    else:
        res = load_json(a.results)
    if not a.no_docs:
        write_docs(res, a.md, a.png)
    for w, need, fig, ok in targets_verdicts(res):
        print(f"{'met   ' if ok else 'MISSED'} {w}: {fig} (required {need})")


if __name__ == "__main__":
    main()
