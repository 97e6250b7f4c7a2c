#!/usr/bin/env bash
# The main job on the embedded defaults: build cryptvol, make the default region, and use
# its KMS the way a volume will (envelope encryption). Safe to re-run.
#   CRYPTVOL_DATA_DIR   where keys live (default /var/lib/cryptvol as root)
#   CRYPTVOL_REGION     region (default local-1)
set -euo pipefail
cd "$(dirname "$0")"

command -v cargo >/dev/null || { echo "quickstart: cargo is not installed (https://rustup.rs)"; exit 1; }
echo "== building cryptvol (release)"
cargo build --release --locked --quiet
cv() { ./target/release/cryptvol "$@"; }

echo "== cryptvol init"
cv init --output table

if ! cv kms describe-key --key-id alias/quickstart >/dev/null 2>&1; then
  key=$(cv kms create-key --description "quickstart key" --tag purpose=quickstart \
        --query KeyMetadata.KeyId --output text)
  cv kms create-alias --alias-name alias/quickstart --target-key-id "$key"
  cv kms enable-key-rotation --key-id alias/quickstart
fi
echo "== the key behind alias/quickstart"
cv kms describe-key --key-id alias/quickstart --output table

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== envelope encryption: a 64-byte data key for a volume, wrapped by the CMK"
cv kms generate-data-key --key-id alias/quickstart --number-of-bytes 64 \
   --encryption-context cryptvol:lineage=vol-00000000000000001 \
   --ciphertext-out "$work/dek.blob" --plaintext-out "$work/dek.plain" --output table
cv inspect blob --ciphertext-blob "fileb://$work/dek.blob" --output table
echo "== unwrapping it again (what attach will do, once per attach)"
cv kms decrypt --ciphertext-blob "fileb://$work/dek.blob" \
   --encryption-context cryptvol:lineage=vol-00000000000000001 --plaintext-out "$work/dek.again" \
   --output table
cmp "$work/dek.plain" "$work/dek.again" && echo "data key round trip: OK"
echo "== a wrong encryption context is refused"
if cv kms decrypt --ciphertext-blob "fileb://$work/dek.blob" \
     --encryption-context cryptvol:lineage=vol-00000000000000002 >/dev/null; then
  echo "quickstart: decrypt with the wrong context succeeded"; exit 1
fi
echo "== rotate, and the old blob still decrypts"
cv kms rotate-key-on-demand --key-id alias/quickstart >/dev/null
cv kms re-encrypt --ciphertext-blob "fileb://$work/dek.blob" --destination-key-id alias/quickstart \
   --source-encryption-context cryptvol:lineage=vol-00000000000000001 \
   --destination-encryption-context cryptvol:lineage=vol-00000000000000001 \
   --ciphertext-out "$work/dek.rotated" >/dev/null
cv inspect blob --ciphertext-blob "fileb://$work/dek.rotated" --query KeyVersion --output text \
  | sed 's/^/re-encrypted under key version /'
cv kms list-keys --output table
echo "quickstart: done. Keys live in ${CRYPTVOL_DATA_DIR:-the default data dir}; try 'cryptvol --help'."
