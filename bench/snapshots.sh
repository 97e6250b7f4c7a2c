#!/usr/bin/env bash
# Snapshot figures (time, growth, copy vs cp), in one run on one disk:
#  - `snapshot create` time on a 10 GiB volume with DATA (default 2 GiB) written, attached and offline,
#    and the time of a restore of it (`volume create --from-snapshot`);
#  - pool growth of an incremental snapshot after changing 1 % of the data;
#  - `snapshot copy` to another region (decrypt + re-encrypt + verify) against
#    `cp --sparse=always` of the same amount of data on the same disk.
#   sudo bash bench/snapshots.sh           # DATA=2048 (MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-2048}
command -v fio >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio fuse3 >/dev/null; }
cargo build --release --locked --quiet
CV=$PWD/target/release/cryptvol
work=$(mktemp -d /var/tmp/cryptvol-snapbench.XXXXXX)
export CRYPTVOL_DATA_DIR=$work/data
cleanup() { set +e; mountpoint -q "$work/m" && "$CV" detach "$work/m"; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/m"
"$CV" init >/dev/null
"$CV" --region bench-b init >/dev/null
pool="$work/data/regions/local-1/pool/data-1024k.pool"
alloc() { echo $(( $(stat -c %b "$1") * 512 )); }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

"$CV" volume create --size 10G --name bench >/dev/null
"$CV" attach bench "$work/m" >/dev/null
fio --name=fill --filename="$work/m/volume" --rw=write --bs=1M --size="${DATA}M" --direct=1 \
    --ioengine=psync --end_fsync=1 --output-format=terse >/dev/null

t=$(date +%s%N); s1=$("$CV" snapshot create bench --query SnapshotId --output text); create_attached=$(ms "$t")
before=$(alloc "$pool")
# Change 1 % of the data (contiguous, in the middle) and snapshot again.
change=$(( DATA / 100 )); [ "$change" -ge 1 ] || change=1
fio --name=chg --filename="$work/m/volume" --rw=write --bs=1M --offset=$(( DATA / 2 ))M --size="${change}M" \
    --direct=1 --ioengine=psync --end_fsync=1 --output-format=terse >/dev/null
t=$(date +%s%N); s2=$("$CV" snapshot create bench --query SnapshotId --output text); create_attached2=$(ms "$t")
after=$(alloc "$pool")
unique=$("$CV" snapshot describe "$s2" --query UniqueBytes --output text)
"$CV" detach "$work/m"
t=$(date +%s%N); "$CV" snapshot create bench --query SnapshotId --output text >/dev/null; create_offline=$(ms "$t")
# Restore (same key: a new volume sharing the snapshot's chunks, copy-on-write).
before_restore=$(alloc "$pool")
t=$(date +%s%N); "$CV" volume create --from-snapshot "$s1" --name bench-restored >/dev/null; restore_ms=$(ms "$t")
restore_growth=$(( $(alloc "$pool") - before_restore ))

# Copy vs cp of the same bytes on the same disk, cold caches, alternating, 3 rounds each
# (this VM's disk varies by 2x between runs: compare medians from the same run).
head -c "$(( DATA * 1048576 ))" "$pool" > "$work/cp-src"   # same data size, dense
copies=(); cps=()
for round in 1 2 3; do
  sync; echo 3 > /proc/sys/vm/drop_caches
  t=$(date +%s%N); "$CV" snapshot copy "$s1" --destination-region bench-b --output json >/dev/null; copies+=("$(ms "$t")")
  sync; echo 3 > /proc/sys/vm/drop_caches
  t=$(date +%s%N); cp --sparse=always "$work/cp-src" "$work/cp-dst"; sync; cps+=("$(ms "$t")")
  rm -f "$work/cp-dst"
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
copy_ms=$(median "${copies[@]}"); cp_ms=$(median "${cps[@]}")
rate() { python3 -c "print(f'{$DATA/($1/1000):.0f}')"; }
echo "Machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); data ${DATA} MiB on a 10 GiB volume"
echo
echo "| measure | value |"
echo "|---|--:|"
echo "| snapshot create, attached (daemon, I/O quiesced), first | ${create_attached} ms |"
echo "| snapshot create, attached, second | ${create_attached2} ms |"
echo "| snapshot create, offline | ${create_offline} ms |"
echo "| restore (volume create --from-snapshot, same key) | ${restore_ms} ms, pool growth $(( restore_growth / 1048576 )) MiB |"
echo "| data changed between snapshots | ${change} MiB ($(python3 -c "print(f'{$change/$DATA*100:.1f}')") %) |"
echo "| pool growth from the second snapshot's copy-on-write | $(( (after - before) / 1048576 )) MiB ($(python3 -c "print(f'{($after-$before)/($DATA*1048576)*100:.1f}')") % of the data) |"
echo "| second snapshot's UniqueBytes | $(( unique / 1048576 )) MiB |"
echo "| snapshot copy to another region (decrypt, re-encrypt, verify), median of 3 | $(rate "$copy_ms") MiB/s (${copies[*]} ms) |"
echo "| cp --sparse=always of the same amount, same disk, median of 3 | $(rate "$cp_ms") MiB/s (${cps[*]} ms) |"
echo "| copy / cp (medians) | $(python3 -c "print(f'{$cp_ms/$copy_ms:.2f}x')") |"
