# shellcheck shell=bash disable=SC2154  # work, raw, repo, file: bench/run's
# The database jobs of bench/run, sourced by it after its fio part: `db_target TARGET` sets
# TARGET up afresh (setup TARGET db), runs the jobs named in $DB on it and tears it down.
#
#   pgbench1, pgbench4  PostgreSQL 15 (Debian's, $PG_BIN): initdb on the target, the
#                       server as the `postgres` user with postgresql.conf's defaults
#                       (fsync on, synchronous_commit on, wal_sync_method fdatasync,
#                       shared_buffers 128MB) but no TCP: a unix socket in the temp dir,
#                       off the target. `pgbench -i -s $PG_SCALE`, then per job a
#                       CHECKPOINT, the caches dropped, and `pgbench -c N -j N -T
#                       $DB_RUNTIME` (the built-in TPC-B-like script); tps without the
#                       initial connection time.
#   sqliteDelete,       bench/sqlite_txn.py: one row per transaction, journal_mode DELETE
#   sqliteWal           or WAL, synchronous=FULL in both, for $DB_RUNTIME s; txn/s.
#
# Uses bench/run's $work, $raw, $repo, $DB, $DB_RUNTIME, $PG_SCALE, $PG_BIN, setup,
# teardown, drop_caches, interruptible and log. $pg_data names the data directory while a
# server runs: bench/run's cleanup trap stops that server on any exit.

pg_run=$work/pgrun   # the server's socket directory and log: in the temp dir, not the target
pg_data=""

pg_as() { runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; }
pg_sql() { "$PG_BIN/psql" -h "$pg_run" -U postgres -d postgres -qAtX -c "$1"; }

# pg_up DIR LOG: a new cluster in DIR, started.
pg_up() {
  local dir=$1 log_file=$2
  mkdir -p "$dir" "$pg_run" || return 1
  chown postgres: "$dir" "$pg_run" && chmod 700 "$dir" "$pg_run" || return 1
  pg_as initdb -D "$dir" -U postgres -A trust -E UTF8 --locale=C --no-instructions >"$log_file" 2>&1 || return 1
  pg_data=$dir
  pg_as pg_ctl -D "$dir" -l "$pg_run/server.log" -w -t 300 \
    -o "-c listen_addresses='' -c unix_socket_directories='$pg_run'" start >>"$log_file" 2>&1
}

pg_down() {
  [ -n "$pg_data" ] || return 0
  pg_as pg_ctl -D "$pg_data" -m fast -w -t 300 stop >/dev/null 2>&1 ||
    pg_as pg_ctl -D "$pg_data" -m immediate -w -t 30 stop >/dev/null 2>&1
  pg_data=""
}

db_target() {
  local t=$1
  local tdir=$raw/db/$t dir j mode load_before init_s=null start pg_jobs="" sq_jobs=""
  mkdir -p "$tdir"
  for j in $DB; do
    case $j in pgbench*) pg_jobs+=" $j" ;; sqlite*) sq_jobs+=" $j" ;; esac
  done
  # PostgreSQL's user must reach its data directory below the temp dir (0700 from mktemp):
  # search permission only, no listing.
  chmod 711 "$work"
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  log "db $t: setting up (load average $load_before)"
  setup "$t" db
  dir=$(dirname "$file")/db
  rm -rf "$dir"; mkdir -p "$dir"
  if [ -n "$pg_jobs" ]; then
    log "db $t: initdb, pgbench -i -s $PG_SCALE"
    start=$(date +%s.%N)
    if pg_up "$dir/pg" "$tdir/initdb.log" &&
       interruptible "$PG_BIN/pgbench" -h "$pg_run" -U postgres -i -s "$PG_SCALE" -q postgres \
         >"$tdir/pgbench-init.log" 2>&1; then
      init_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
      for j in $pg_jobs; do
        local clients=${j#pgbench}
        pg_sql CHECKPOINT >/dev/null 2>>"$tdir/$j.err" || true
        drop_caches
        if interruptible "$PG_BIN/pgbench" -h "$pg_run" -U postgres -c "$clients" -j "$clients" \
             -T "$DB_RUNTIME" postgres >"$tdir/$j.txt" 2>"$tdir/$j.err"; then
          log "db $t: $j: $(grep -E '^(tps|latency average)' "$tdir/$j.txt" | tr '\n' ' ')"
        else
          log "db $t: $j failed: $(tail -c 300 "$tdir/$j.err")"
        fi
      done
    else
      log "db $t: PostgreSQL did not start: $(tail -c 300 "$tdir/initdb.log" "$tdir/pgbench-init.log" 2>/dev/null)"
    fi
    pg_down
    [ -f "$pg_run/server.log" ] && cp "$pg_run/server.log" "$tdir/server.log"
    rm -rf "$pg_run"
  fi
  for j in $sq_jobs; do
    case $j in sqliteDelete) mode=delete ;; sqliteWal) mode=wal ;; esac
    drop_caches
    if interruptible python3 "$repo/bench/sqlite_txn.py" "$dir/$j.db" "$mode" "$DB_RUNTIME" \
         "$tdir/$j.json" >/dev/null 2>"$tdir/$j.err"; then
      log "db $t: $j: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["txn_per_s"], "txn/s, p50", r["lat_us"]["p50"], "us, p99", r["lat_us"]["p99"], "us")' "$tdir/$j.json")"
    else
      log "db $t: $j failed: $(tail -c 300 "$tdir/$j.err")"
    fi
  done
  cat >"$tdir/target.json" <<EOF
{"load_before": "$load_before", "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "pg_init_s": $init_s, "pg_scale": $PG_SCALE, "runtime_s": $DB_RUNTIME}
EOF
  log "db $t: tearing down"
  teardown "$t"
}
