#!/usr/bin/env bash
# The test command (README, and .ci/run in CI): lints, then every test.
# Installs what the tests need when it is missing; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

# System packages the tests use; installed when missing (needs root, as in CI).
packages=(fuse3 fio e2fsprogs xfsprogs openssl softhsm2 opensc util-linux-extra)
# tests/compat.rs runs the real AWS CLI and boto3 from a venv (below): Debian's python3
# makes venvs only with python3-venv.
command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' >/dev/null 2>&1 \
  || packages+=(python3 python3-venv)
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

# The real AWS clients for tests/compat.rs, and moto's server (a real S3 / KMS / STS
# endpoint for the object store and remote KMS tests), in a venv outside git, reused
# between runs.
# CI (or CRYPTVOL_REQUIRE_MOUNT=1) fails here when they cannot be installed, and the
# tests then fail too; elsewhere the tests skip and say why.
compat_venv="$PWD/target/compat-venv"
compat_pins=(awscli==1.45.11 boto3==1.43.11 "moto[server]==5.2.5")
compat_required=false
if [ "${CI:-}" = true ] || [ "${CRYPTVOL_REQUIRE_MOUNT:-}" = 1 ]; then compat_required=true; fi
if [ "$(cat "$compat_venv/.pins" 2>/dev/null)" != "${compat_pins[*]}" ]; then
  echo "installing into $compat_venv: ${compat_pins[*]}"
  if rm -rf "$compat_venv" \
    && python3 -m venv "$compat_venv" \
    && "$compat_venv/bin/pip" install --quiet --disable-pip-version-check "${compat_pins[@]}" \
    && "$compat_venv/bin/python" -c 'import boto3, moto' && "$compat_venv/bin/aws" --version; then
    echo "${compat_pins[*]}" >"$compat_venv/.pins"
  elif [ "$compat_required" = true ]; then
    echo "test.sh: could not install ${compat_pins[*]} into $compat_venv (see above)" >&2
    exit 1
  else
    echo "test.sh: warning: no AWS CLI/boto3 venv; tests/compat.rs will skip its client tests" >&2
  fi
fi
if [ -f "$compat_venv/.pins" ]; then
  export CRYPTVOL_COMPAT_PYTHON="$compat_venv/bin/python"
  export CRYPTVOL_COMPAT_AWS="$compat_venv/bin/aws"
  export CRYPTVOL_COMPAT_MOTO="$compat_venv/bin/moto_server"
fi

# A SoftHSM2 token directory for this run (the PKCS#11 tests make their tokens in it);
# a fresh one each time, removed on exit.
softhsm_dir="$(mktemp -d)"
trap 'rm -rf "$softhsm_dir"' EXIT
mkdir "$softhsm_dir/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$softhsm_dir/tokens" >"$softhsm_dir/softhsm2.conf"
export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"
# The token every PKCS#11 test uses (src/kms/hsm/test_token.rs has its label and PINs).
softhsm2-util --init-token --free --label cryptvol-test --so-pin cv-so-pin-12 \
  --pin cv-user-pin-1 >/dev/null

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
# The volume suites run twice: over the default transport (FUSE over io_uring where the
# kernel has it) and over the classic one (/dev/fuse), so both pass them, crash and stress
# tests included (tests/volume_attach.rs checks each run used the transport it names).
volume_suites=(volume_attach volume_mount volume_errors volume_grants stress crash_cycles
  integrity integrity_attack integrity_foreground wait_attack loop_cleanup snapshot)
suite_args=()
for t in "${volume_suites[@]}"; do suite_args+=(--test "$t"); done
if cargo nextest --version >/dev/null 2>&1; then
  run_tests() { cargo nextest run --locked --no-fail-fast "$@"; }
else
  run_tests() { cargo test --locked --no-fail-fast "$@"; }
fi
status=0
echo "== tests"
run_tests || status=$?
echo "== the volume suites again over the classic FUSE transport (CRYPTVOL_FUSE_TRANSPORT=classic)"
# Shorter crash and stress runs here (12 kill -9 cycles, 25 s of stress) keep the whole
# suite within 20 minutes on 2 cores.
CRYPTVOL_FUSE_TRANSPORT=classic CRYPTVOL_CRASH_CYCLES=12 CRYPTVOL_STRESS_SECS=25 \
  run_tests "${suite_args[@]}" || status=$?
exit $status
