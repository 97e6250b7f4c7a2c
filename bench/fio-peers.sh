#!/usr/bin/env bash
# fio on cryptvol (attach: raw file; mount: ext4 over loop) and its peers (plain disk,
# gocryptfs) in one run, on the same disk. Prints a markdown table of MB/s (median of
# RUNS runs per job) and the ratios that issue 3 targets, plus the daemon's peak RSS.
#
#   sudo bash bench/fio-peers.sh            # RUNS=3 RUNTIME=10 SIZE=1G by default
#   RUNS=1 RUNTIME=5 bash bench/fio-peers.sh
#
# Needs root (loop devices, mounts, drop_caches). Installs fio and gocryptfs if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-1G}
TARGETS=${TARGETS:-"plain gocryptfs attach mount"}

need=()
for t in fio gocryptfs mkfs.ext4; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio gocryptfs e2fsprogs fuse3 >/dev/null
fi
cargo build --release --locked --quiet
CV=$PWD/target/release/cryptvol

work=$(mktemp -d /var/tmp/cryptvol-bench.XXXXXX)
export CRYPTVOL_DATA_DIR=$work/data
cleanup() {
  set +e
  mountpoint -q "$work/mnt-mount" && "$CV" unmount "$work/mnt-mount"
  mountpoint -q "$work/mnt-attach" && "$CV" detach "$work/mnt-attach"
  mountpoint -q "$work/gocrypt-plain" && fusermount3 -u "$work/gocrypt-plain"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{plain,gocrypt-cipher,gocrypt-plain,mnt-attach,mnt-mount}

"$CV" init >/dev/null
head -c 32 /dev/urandom | base64 > "$work/pass"

# job name | fio arguments
jobs=(
  "seqW 1M|--rw=write --bs=1M --ioengine=psync --iodepth=1 --numjobs=1"
  "seqR 1M|--rw=read --bs=1M --ioengine=psync --iodepth=1 --numjobs=1"
  "randR qd16|--rw=randread --bs=4k --ioengine=libaio --iodepth=16 --numjobs=1"
  "randW qd16|--rw=randwrite --bs=4k --ioengine=libaio --iodepth=16 --numjobs=1"
  "randR 4j psync|--rw=randread --bs=4k --ioengine=psync --iodepth=1 --numjobs=4"
  "randW 4j psync|--rw=randwrite --bs=4k --ioengine=psync --iodepth=1 --numjobs=4"
)

daemon_pid() { "$CV" status --query DaemonPid --output text 2>/dev/null | grep -E '^[0-9]+$' || true; }
peak_rss=0
sample_rss() {
  local pid; pid=$(daemon_pid)
  [ -n "$pid" ] || return 0
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt "$peak_rss" ] && peak_rss=$rss
  return 0
}

setup() {
  case $1 in
    plain) echo "$work/plain/f" ;;
    gocryptfs)
      gocryptfs -q -init -passfile "$work/pass" "$work/gocrypt-cipher" >/dev/null
      gocryptfs -q -passfile "$work/pass" "$work/gocrypt-cipher" "$work/gocrypt-plain"
      echo "$work/gocrypt-plain/f" ;;
    attach)
      "$CV" volume create --size 4G --name bench-attach >/dev/null
      "$CV" attach bench-attach "$work/mnt-attach" >/dev/null
      echo "$work/mnt-attach/volume" ;;
    mount)
      "$CV" volume create --size 4G --name bench-mount >/dev/null
      "$CV" mount bench-mount "$work/mnt-mount" >/dev/null
      echo "$work/mnt-mount/f" ;;
  esac
}

teardown() {
  case $1 in
    gocryptfs) fusermount3 -u "$work/gocrypt-plain" ;;
    attach) "$CV" detach "$work/mnt-attach" ;;
    mount) "$CV" unmount "$work/mnt-mount" ;;
  esac
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A result
for t in $TARGETS; do
  file=$(setup "$t")
  # Lay the file out once, so reads and overwrites see allocated data.
  fio --name=prep --filename="$file" --size="$SIZE" --rw=write --bs=1M --direct=1 \
      --ioengine=psync --output-format=terse >/dev/null
  for j in "${jobs[@]}"; do
    name=${j%%|*}; args=${j#*|}
    vals=()
    for _ in $(seq "$RUNS"); do
      sync; echo 3 > /proc/sys/vm/drop_caches
      ( while sleep 1; do sample_rss; done ) & sampler=$!
      # shellcheck disable=SC2086
      mbps=$(fio --name=b --filename="$file" --size="$SIZE" --direct=1 --time_based \
               --runtime="$RUNTIME" --group_reporting --output-format=json $args 2>/dev/null |
             python3 -c 'import json,sys; d=json.load(sys.stdin)["jobs"][0]; print(round((d["read"]["bw_bytes"]+d["write"]["bw_bytes"])/1e6,1))')
      kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
      sample_rss
      vals+=("$mbps")
    done
    result[$t,$name]=$(printf '%s\n' "${vals[@]}" | median)
    echo "$t / $name: ${vals[*]} -> ${result[$t,$name]} MB/s" >&2
  done
  teardown "$t"
done

ratio() { python3 -c "a,b=$1,$2; print(f'{a/b:.2f}x' if b else '-')"; }
echo
echo "Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); fio $(fio --version | sed 's/fio-//'), gocryptfs $(gocryptfs -version 2>/dev/null | head -1 | awk '{print $2}' | tr -d ';'); $RUNS runs x ${RUNTIME}s, file $SIZE, O_DIRECT, median MB/s"
echo
printf '| job |'; for t in $TARGETS; do printf ' %s |' "$t"; done; echo ' mount / gocryptfs | attach / gocryptfs |'
printf '|---|'; for _ in $TARGETS; do printf -- '--:|'; done; echo '--:|--:|'
for j in "${jobs[@]}"; do
  name=${j%%|*}
  printf '| %s |' "$name"
  for t in $TARGETS; do printf ' %s |' "${result[$t,$name]:--}"; done
  g=${result[gocryptfs,$name]:-0}
  printf ' %s | %s |\n' "$(ratio "${result[mount,$name]:-0}" "$g")" "$(ratio "${result[attach,$name]:-0}" "$g")"
done
echo
echo "cryptvol daemon peak RSS (VmHWM): $((peak_rss / 1024)) MiB"
