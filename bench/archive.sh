#!/usr/bin/env bash
# Snapshot store figures, in one run against one S3 server on this machine:
#  - `snapshot archive` (foreground) of a volume with DATA MiB of random data written
#    through `cryptvol attach`, against `aws s3 cp` of a file with the same plaintext and of
#    the pool's data file (the same ciphertext the archive uploads), to the same server;
#    RUNS rounds (moto: a fresh server each round, it keeps objects in memory; radosgw:
#    one cluster, a fresh bucket each round), medians;
#  - an incremental archive after rewriting 1 % of the chunks: time and bytes uploaded;
#  - a lazy restore on a second data dir (using the first's `kms serve` and an access key,
#    as another machine would): `volume create --from-snapshot` + `attach` + the first
#    4 KiB read of a chunk, of a 10 GiB volume with LAZY MiB spread over it; and the time
#    to hydrate the rest. RUNS restores, medians.
#
#   sudo bash bench/archive.sh                      # DATA=2048 LAZY=64 RUNS=3, moto
#   sudo DATA=512 RUNS=1 bash bench/archive.sh      # quicker
#   sudo bash bench/archive.sh --server radosgw     # a one-node Ceph (bench/radosgw.sh)
#
# Needs root (FUSE, drop_caches) and moto's server with the aws CLI in target/compat-venv
# (test.sh installs them); radosgw installs the Ceph packages it lacks. Everything lives in
# one temp dir under /var/tmp, torn down on exit (the Ceph cluster too).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
SERVER=moto
while [ $# -gt 0 ]; do
  case $1 in
    --server) SERVER=${2:?--server needs moto or radosgw}; shift 2 ;;
    --server=*) SERVER=${1#--server=}; shift ;;
    *) echo "bench/archive.sh: unknown argument $1 (known: --server moto|radosgw)" >&2; exit 2 ;;
  esac
done
case $SERVER in
  moto) ;;
  radosgw) . "$repo/bench/radosgw.sh" ;;
  *) echo "bench/archive.sh: unknown server $SERVER (known: moto, radosgw)" >&2; exit 2 ;;
esac
DATA=${DATA:-2048}   # MiB written and archived
LAZY=${LAZY:-64}     # MiB written over the 10 GiB volume that is restored lazily
RUNS=${RUNS:-3}
[ "$(id -u)" = 0 ] || { echo "bench/archive.sh: needs root (FUSE, drop_caches)" >&2; exit 1; }
MOTO=$repo/target/compat-venv/bin/moto_server
AWS=$repo/target/compat-venv/bin/aws
[ -x "$MOTO" ] && [ -x "$AWS" ] || { echo "bench/archive.sh: $MOTO or $AWS is missing: run ./test.sh once to install them" >&2; exit 1; }
command -v fusermount3 >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null; }

log() { printf '[archive %s] %s\n' "$(date +%T)" "$*" >&2; }
log "building cryptvol (release)"
cargo build --release --locked --quiet
CV=$repo/target/release/cryptvol

work=$(mktemp -d /var/tmp/cryptvol-archbench.XXXXXX)
A=$work/a; B=$work/b
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
moto_pid=''; kms_pid=''
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  # ma is data dir A's mount point, mb data dir B's.
  mountpoint -q "$work/ma" && { "$CV" --data-dir "$A" detach "$work/ma" >/dev/null 2>&1 || umount -l "$work/ma"; }
  mountpoint -q "$work/mb" && { "$CV" --data-dir "$B" detach "$work/mb" >/dev/null 2>&1 || umount -l "$work/mb"; }
  [ -n "$kms_pid" ] && kill "$kms_pid" 2>/dev/null
  stop_server
  for d in "$A" "$B"; do
    p=$("$CV" --data-dir "$d" status --query DaemonPid --output text 2>/dev/null | grep -E '^[0-9]+$')
    [ -n "$p" ] && kill "$p" 2>/dev/null
  done
  sleep 0.5
  rm -rf "$work"
  [ $rc = 0 ] || log "failed or interrupted (exit $rc); temp dir $work torn down"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work/ma" "$work/mb"

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
cva() { "$CV" --data-dir "$A" "$@"; }

# start_server: an empty bucket `bench` at $EP. moto: a fresh server on a fixed port (the
# region's store URL stays valid across restarts). radosgw: the cluster is started once;
# later calls delete the bucket, collect its garbage at once (memstore keeps it in RAM)
# and make it again.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
EP=http://127.0.0.1:$port
server_desc=''
start_server() {
  case $SERVER in
    moto)
      [ -n "$moto_pid" ] && { kill "$moto_pid"; wait "$moto_pid" 2>/dev/null || true; }
      "$MOTO" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
      moto_pid=$!
      for _ in $(seq 100); do curl -s -o /dev/null "$EP" && break; sleep 0.1; done
      server_desc="moto $("$repo/target/compat-venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo '?') (moto_server, in memory)" ;;
    radosgw)
      if [ -z "$server_desc" ]; then
        # Room for a round's objects (archive and both copies) with a margin.
        RGW_MEM=${RGW_MEM:-$(( DATA * 4 + LAZY + 2048 ))} radosgw_start "$work/ceph" || exit 1
        EP=$RGW_EP
        export AWS_ACCESS_KEY_ID=$RGW_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$RGW_SECRET_KEY
        server_desc="radosgw $(radosgw --version | cut -d' ' -f3) (beast; one ceph-mon, one ceph-osd with memstore, no cephx)"
      else
        "$AWS" --endpoint-url "$EP" s3 rb --force s3://bench >/dev/null
        radosgw-admin -c "$work/ceph/ceph.conf" gc process --include-all >/dev/null 2>&1
      fi ;;
  esac
  "$AWS" --endpoint-url "$EP" s3 mb s3://bench >/dev/null
}
stop_server() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
  [ "$SERVER" = radosgw ] && radosgw_stop
  return 0
}
# The S3 server must take the access key cryptvol made (JSON in $1): machine B uses one key
# for the KMS and the store. moto takes any key; radosgw's user gets this one too.
server_add_key() {
  [ "$SERVER" = radosgw ] || return 0
  radosgw-admin -c "$work/ceph/ceph.conf" key create --uid=bench --key-type=s3 \
    --access-key="$(field '["AccessKey"]["AccessKeyId"]' <"$1")" \
    --secret="$(field '["AccessKey"]["SecretAccessKey"]' <"$1")" >/dev/null
}
aws_cp() { "$AWS" --endpoint-url "$EP" s3 cp --quiet "$1" "$2"; }

# --- 1. archive throughput against aws s3 cp ------------------------------------------
cva init >/dev/null
chunk_mib=1   # the default chunk size (data-1024k.pool)
pool=$A/regions/local-1/pool/data-1024k.pool
log "writing $DATA MiB of random data (plaintext file, then the volume through attach)"
head -c $(( DATA * 1048576 )) /dev/urandom > "$work/plain"
cva volume create --size "${DATA}M" --name tput >/dev/null
cva attach tput "$work/ma" >/dev/null
dd if="$work/plain" of="$work/ma/volume" bs=1M oflag=direct conv=fsync,notrunc status=none
cva detach "$work/ma" >/dev/null
# The pool's data file holds exactly this volume's ciphertext (nothing else was written).
head -c $(( DATA * 1048576 )) "$pool" > "$work/cipher"

archives=(); cps=(); cpcs=(); last=''
for r in $(seq "$RUNS"); do
  log "round $r/$RUNS: archive, aws s3 cp (plaintext), aws s3 cp (pool ciphertext)"
  start_server
  snap=$(cva snapshot create tput --query SnapshotId --output text)
  drop_caches
  t=$(date +%s%N)
  cva snapshot archive "$snap" --snapshot-store "s3://bench/store$r" --s3-endpoint "$EP" --output json >"$work/archive-$r.json"
  archives+=("$(ms "$t")")
  drop_caches
  t=$(date +%s%N); aws_cp "$work/plain" "s3://bench/cp$r/plain"; cps+=("$(ms "$t")")
  drop_caches
  t=$(date +%s%N); aws_cp "$work/cipher" "s3://bench/cp$r/cipher"; cpcs+=("$(ms "$t")")
  last=$r
done
uploaded=$(field '["BytesUploaded"]' <"$work/archive-$last.json")
[ "$uploaded" = $(( DATA * 1048576 )) ] || { echo "bench/archive.sh: the archive uploaded $uploaded bytes, not $(( DATA * 1048576 ))" >&2; exit 1; }

# Incremental: rewrite 1 % of the chunks (spread: every 100th chunk), archive again into
# the last round's store (its parent is there).
chunks=$(( DATA / chunk_mib )); changed=$(( chunks / 100 )); [ "$changed" -ge 1 ] || changed=1
cva attach tput "$work/ma" >/dev/null
for i in $(seq 0 $(( changed - 1 ))); do
  openssl rand $(( chunk_mib * 1048576 )) | dd of="$work/ma/volume" bs=1M seek=$(( i * 100 * chunk_mib )) oflag=direct conv=fsync,notrunc status=none
done
cva detach "$work/ma" >/dev/null
snap=$(cva snapshot create tput --query SnapshotId --output text)
drop_caches
t=$(date +%s%N)
cva snapshot archive "$snap" --snapshot-store "s3://bench/store$last" --s3-endpoint "$EP" --output json >"$work/incr.json"
incr_ms=$(ms "$t")
incr_chunks=$(field '["ChunksUploaded"]' <"$work/incr.json")
incr_bytes=$(field '["BytesUploaded"]' <"$work/incr.json")
incr_reused=$(field '["ChunksReused"]' <"$work/incr.json")

# --- 2. lazy restore on a second data dir ----------------------------------------------
log "lazy restore: a 10 GiB volume with $LAZY MiB spread over it"
start_server
cva region set-snapshot-store s3://bench/lazy --s3-endpoint "$EP" >/dev/null
cva iam create-user --user-name restorer >/dev/null
acct=$(field '["account_id"]' <"$A/account.json")
key=$(cva kms create-key --user "arn:aws:iam::$acct:user/restorer" --output json | field '["KeyMetadata"]["Arn"]')
cva iam create-access-key --user-name restorer --output json >"$work/ak.json"
server_add_key "$work/ak.json"
cva volume create --size 10G --name lazy --kms-key "$key" >/dev/null
cva attach lazy "$work/ma" >/dev/null
stride=$(( 10240 / LAZY ))
for i in $(seq 0 $(( LAZY - 1 ))); do
  openssl rand 1048576 | dd of="$work/ma/volume" bs=1M seek=$(( i * stride )) oflag=direct conv=fsync,notrunc status=none
done
cva detach "$work/ma" >/dev/null
lsnap=$(cva snapshot create lazy --query SnapshotId --output text)
# `snapshot create` archives in the background here (the region has a store); wait.
for _ in $(seq 600); do
  [ "$(cva snapshot describe "$lsnap" --query State --output text)" = completed ] && break; sleep 0.5
done
[ "$(cva snapshot describe "$lsnap" --query State --output text)" = completed ] || { echo "bench/archive.sh: the archive of $lsnap did not complete" >&2; exit 1; }
# Directly, not through cva: $! must be the server itself, for the teardown to stop it.
"$CV" --data-dir "$A" kms serve --listen 127.0.0.1:0 >"$work/kms.out" 2>/dev/null &
kms_pid=$!
for _ in $(seq 100); do [ -s "$work/kms.out" ] && break; sleep 0.1; done
kms_ep=$(head -1 "$work/kms.out" | field '["Endpoint"]')
# Machine B: its own data dir, the restorer's access key (for the store too: see
# server_add_key). Read once, here: a python3 per command inside the timed commands,
# cold after drop_caches, cost more than cryptvol itself.
b_key=$(field '["AccessKey"]["AccessKeyId"]' <"$work/ak.json")
b_secret=$(field '["AccessKey"]["SecretAccessKey"]' <"$work/ak.json")
cvb() { AWS_ACCESS_KEY_ID=$b_key AWS_SECRET_ACCESS_KEY=$b_secret "$CV" --data-dir "$B" "$@"; }
cvb init --snapshot-store s3://bench/lazy --s3-endpoint "$EP" >/dev/null
creates=(); attaches=(); reads=(); firsts=(); hydrates=()
for r in $(seq "$RUNS"); do
  drop_caches
  t0=$(date +%s%N)
  vol=$(cvb --kms-endpoint "$kms_ep" volume create --from-snapshot "$lsnap" --name "copy$r" --query VolumeId --output text)
  t1=$(date +%s%N)
  cvb attach "copy$r" "$work/mb" >/dev/null
  t2=$(date +%s%N)
  # The first 4 KiB of the 2nd written chunk (at stride MiB): fetched from the store now.
  dd if="$work/mb/volume" of=/dev/null bs=4096 count=1 skip=$(( stride * 256 )) iflag=direct status=none
  t3=$(date +%s%N)
  creates+=($(( (t1 - t0) / 1000000 ))); attaches+=($(( (t2 - t1) / 1000000 )))
  reads+=($(( (t3 - t2) / 1000000 ))); firsts+=($(( (t3 - t0) / 1000000 )))
  t=$(date +%s%N)
  fetched=$(cvb volume hydrate "$vol" --output json | field '["BytesFetched"]')
  hydrates+=("$(ms "$t")")
  cvb detach "$work/mb" >/dev/null
  # Each restore starts as the first did, with no daemon: it stops a few seconds after
  # its last detach, and one still running would be found by the next create and attach.
  for _ in $(seq 100); do
    cvb status --query DaemonPid --output text 2>/dev/null | grep -qE '^[0-9]+$' || break; sleep 0.2
  done
done

# --- report --------------------------------------------------------------------------
mbs() { python3 -c "print(f'{$1*1048576/1e6/($2/1000):.0f}')"; }
secs() { python3 -c "print(', '.join(f'{int(x)/1000:.2f}' for x in '$*'.split()))"; }
a_ms=$(median "${archives[@]}"); c_ms=$(median "${cps[@]}"); cc_ms=$(median "${cpcs[@]}")
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "Machine: $(nproc) vCPU $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), load average $(cut -d" " -f1-3 /proc/loadavg) at the end; S3 server: $server_desc on 127.0.0.1; $("$AWS" --version 2>&1 | cut -d' ' -f1)"
echo "Archive: ${DATA} MiB of random data, ${chunk_mib} MiB chunks; lazy restore: 10 GiB volume, ${LAZY} MiB written; median of ${RUNS}"
echo
echo "| measure | value |"
echo "|---|--:|"
echo "| \`snapshot archive\` (foreground), ${DATA} MiB | $(mbs "$DATA" "$a_ms") MB/s ($(secs "${archives[*]}") s) |"
echo "| \`aws s3 cp\` of the same plaintext | $(mbs "$DATA" "$c_ms") MB/s ($(secs "${cps[*]}") s) |"
echo "| \`aws s3 cp\` of the pool's data file (the same ciphertext) | $(mbs "$DATA" "$cc_ms") MB/s ($(secs "${cpcs[*]}") s) |"
echo "| **archive / aws s3 cp** (plaintext, ciphertext) | **$(python3 -c "print(f'{$c_ms/$a_ms:.2f}x, {$cc_ms/$a_ms:.2f}x')")** (target ≥ 0.8x) |"
echo "| incremental archive after rewriting ${changed} of ${chunks} chunks | ${incr_ms} ms, ${incr_chunks} chunks / $(( incr_bytes / 1048576 )) MiB uploaded, ${incr_reused} reused |"
echo "| lazy restore: \`volume create --from-snapshot\` | $(median "${creates[@]}") ms ($(secs "${creates[*]}") s) |"
echo "| lazy restore: \`attach\` | $(median "${attaches[@]}") ms ($(secs "${attaches[*]}") s) |"
echo "| lazy restore: first 4 KiB read of a chunk (\`dd\`, O_DIRECT) | $(median "${reads[@]}") ms ($(secs "${reads[*]}") s) |"
echo "| **time to first read** (create + attach + read) | **$(median "${firsts[@]}") ms** ($(secs "${firsts[*]}") s; target ≤ 1 s) |"
echo "| \`volume hydrate\` of the rest ($(( fetched / 1048576 )) MiB fetched) | $(median "${hydrates[@]}") ms ($(secs "${hydrates[*]}") s) |"
