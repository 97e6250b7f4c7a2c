#!/usr/bin/env bash
# The main job on the embedded defaults: build cryptvol, make the default region, create
# an encrypted volume whose data key the region's KMS wraps, and mount it as a directory.
# Safe to re-run. Needs root (loop device, mount); installs fuse3 and e2fsprogs if missing.
#   CRYPTVOL_DATA_DIR   where keys and volumes live (default /var/lib/cryptvol as root)
#   CRYPTVOL_REGION     region (default local-1)
#   CRYPTVOL_MOUNT      where to mount (default /mnt/cryptvol)
set -euo pipefail
cd "$(dirname "$0")"
mnt=${CRYPTVOL_MOUNT:-/mnt/cryptvol}

if [ "$(id -u)" != 0 ]; then
  echo "quickstart: run as root (it binds a loop device and mounts ext4)"; exit 1
fi
missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v losetup >/dev/null || missing+=(mount)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "quickstart: cargo is not installed (https://rustup.rs)"; exit 1; }
echo "== building cryptvol (release)"
cargo build --release --locked --quiet
cv() { ./target/release/cryptvol "$@"; }

echo "== cryptvol init"
cv init --output table

if ! cv volume describe quickstart >/dev/null 2>&1; then
  echo "== creating volume 'quickstart' (10 GiB, thin; data key from alias/aws/ebs)"
  cv volume create --size 10G --name quickstart --output table
fi

if mountpoint -q "$mnt"; then
  echo "== $mnt is already mounted"
else
  mkdir -p "$mnt"
  echo "== mounting it on $mnt (ext4 on first use)"
  cv mount quickstart "$mnt" --output table
fi
date > "$mnt/hello.txt"
sync
echo "== $mnt/hello.txt: $(cat "$mnt/hello.txt")"
cv status --output table
cv volume describe quickstart --output table
echo
echo "Your encrypted directory is $mnt. Every 4 KiB block is AES-256-XTS encrypted in"
echo "${CRYPTVOL_DATA_DIR:-/var/lib/cryptvol}/regions/${CRYPTVOL_REGION:-local-1}/pool/."
echo "Unmount:  ./target/release/cryptvol unmount $mnt"
