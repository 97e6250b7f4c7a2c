#!/usr/bin/env bash
# The test command (README, and .ci/run in CI): lints, then every test.
# Installs what the tests need when it is missing; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

# System packages the tests use; installed when missing (needs root, as in CI).
packages=(fuse3 fio e2fsprogs xfsprogs)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "test.sh: cargo is not installed (https://rustup.rs)"; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
