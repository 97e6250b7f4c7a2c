#!/usr/bin/env python3
"""The real `aws` CLI against `cryptvol kms serve` (run by tests/compat.rs).

Environment (all required):
  CV_AWS             the aws executable
  CV_ENDPOINT        http://127.0.0.1:PORT
  CV_REGION          the region of the requests
  CV_AK / CV_SK      access key of a user whose identity policy allows kms:*
  CV_DENIED_AK / CV_DENIED_SK
                     a user with no identity policy
  CV_SCRATCH         a directory for blobs

Binary arguments go through fileb:// (raw bytes with AWS CLI v1 and v2 alike); the one
inline --plaintext uses v1's rule (text sent as its bytes) or, on v2,
--cli-binary-format raw-in-base64-out. On success, one JSON summary line on stdout.
"""

import base64
import json
import os
import subprocess
import sys
import time
import uuid

STEP = "start"
CALLS = 0
ENV = {k: os.environ[k] for k in (
    "CV_AWS", "CV_ENDPOINT", "CV_REGION", "CV_AK", "CV_SK", "CV_DENIED_AK", "CV_DENIED_SK", "CV_SCRATCH")}


def fail(msg):
    print(f"awscli_suite: FAIL at step {STEP!r}: {msg}", file=sys.stderr)
    sys.exit(1)


def step(name):
    global STEP
    STEP = name


def eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def run(args, ak=None, sk=None):
    """Runs `aws --endpoint-url E --region R --output json kms ARGS`: (exit code, stdout, stderr)."""
    global CALLS
    CALLS += 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": ak or ENV["CV_AK"],
        "AWS_SECRET_ACCESS_KEY": sk or ENV["CV_SK"],
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "AWS_PAGER": "",
    })
    cmd = [ENV["CV_AWS"], "--endpoint-url", ENV["CV_ENDPOINT"], "--region", ENV["CV_REGION"],
           "--output", "json", "kms"] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def ok(args, **kw):
    code, out, err = run(args, **kw)
    if code != 0:
        fail(f"`aws kms {' '.join(args)}` exited {code}: {err.strip()}")
    try:
        return json.loads(out) if out.strip() else {}
    except ValueError:
        fail(f"`aws kms {' '.join(args)}` printed no JSON: {out!r}")


def error(code_name, args, **kw):
    code, out, err = run(args, **kw)
    if code not in (254, 255) or code_name not in err:
        fail(f"`aws kms {' '.join(args)}`: expected exit 254/255 and {code_name}, got {code}: {err.strip()!r}")
    return err


def scratch(name, data):
    p = os.path.join(ENV["CV_SCRATCH"], name)
    with open(p, "wb") as f:
        f.write(data)
    return "fileb://" + p


def main():
    t0 = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    version = subprocess.run([ENV["CV_AWS"], "--version"], capture_output=True, text=True).stdout.strip() \
        or subprocess.run([ENV["CV_AWS"], "--version"], capture_output=True, text=True).stderr.strip()
    major = version.split("/")[1].split(".")[0] if "/" in version else "?"

    step("create-key")
    meta = ok(["create-key", "--description", "cli key", "--tags", "TagKey=via,TagValue=cli"])["KeyMetadata"]
    key, arn = meta["KeyId"], meta["Arn"]
    eq((meta["Description"], meta["KeyState"]), ("cli key", "Enabled"), "create-key: Description, KeyState")
    eq(ok(["list-resource-tags", "--key-id", key])["Tags"], [{"TagKey": "via", "TagValue": "cli"}], "tags")

    step("create-alias, describe-key by alias")
    alias = f"alias/cli-{suffix}"
    ok(["create-alias", "--alias-name", alias, "--target-key-id", key])
    eq(ok(["describe-key", "--key-id", alias])["KeyMetadata"]["Arn"], arn, "describe-key(alias)")

    step("encrypt / decrypt with --encryption-context")
    plaintext = b"cli plaintext \x00\x01\xfe\xff" + os.urandom(16)
    ctx = "app=cli,run=" + suffix
    enc = ok(["encrypt", "--key-id", alias, "--plaintext", scratch("pt", plaintext), "--encryption-context", ctx])
    eq(enc["KeyId"], arn, "encrypt: KeyId")
    blob = base64.b64decode(enc["CiphertextBlob"])
    blob_arg = scratch("blob", blob)
    dec = ok(["decrypt", "--ciphertext-blob", blob_arg, "--encryption-context", ctx])
    eq(base64.b64decode(dec["Plaintext"]), plaintext, "decrypt: Plaintext")
    eq(dec["KeyId"], arn, "decrypt: KeyId")
    error("InvalidCiphertextException",
          ["decrypt", "--ciphertext-blob", blob_arg, "--encryption-context", "app=cli,run=other"])
    # The JSON form of the context, as the docs show it.
    dec = ok(["decrypt", "--ciphertext-blob", blob_arg, "--encryption-context",
              json.dumps({"app": "cli", "run": suffix})])
    eq(base64.b64decode(dec["Plaintext"]), plaintext, "decrypt with a JSON --encryption-context")

    step("inline --plaintext")
    inline = ["--plaintext", "hello inline"]
    if major != "1":
        inline = ["--cli-binary-format", "raw-in-base64-out"] + inline
    b = ok(["encrypt", "--key-id", key] + inline)["CiphertextBlob"]
    eq(base64.b64decode(ok(["decrypt", "--ciphertext-blob", scratch("inline", base64.b64decode(b))])["Plaintext"]),
       b"hello inline", "an inline --plaintext round-trips")

    step("generate-data-key")
    dk = ok(["generate-data-key", "--key-id", key, "--key-spec", "AES_256", "--encryption-context", ctx])
    dk_plain = base64.b64decode(dk["Plaintext"])
    eq(len(dk_plain), 32, "generate-data-key: Plaintext length")
    dec = ok(["decrypt", "--ciphertext-blob", scratch("dk", base64.b64decode(dk["CiphertextBlob"])),
              "--encryption-context", ctx])
    eq(base64.b64decode(dec["Plaintext"]), dk_plain, "decrypt of the data key")

    step("rotation")
    ok(["enable-key-rotation", "--key-id", key])
    eq(ok(["get-key-rotation-status", "--key-id", key])["KeyRotationEnabled"], True, "get-key-rotation-status")
    rotated = ok(["rotate-key-on-demand", "--key-id", key])["KeyId"]
    if rotated not in (key, arn):
        fail(f"rotate-key-on-demand: KeyId {rotated!r} names neither {key} nor {arn}")
    rot = ok(["list-key-rotations", "--key-id", key])["Rotations"]
    eq([r.get("RotationType") for r in rot], ["ON_DEMAND"], "list-key-rotations")
    eq(base64.b64decode(ok(["decrypt", "--ciphertext-blob", blob_arg, "--encryption-context", ctx])["Plaintext"]),
       plaintext, "decrypt after the rotation")

    step("list-keys (the CLI pages through all of them)")
    keys = [k["KeyId"] for k in ok(["list-keys", "--page-size", "1"])["Keys"]]
    if key not in keys:
        fail(f"list-keys misses {key}: {keys}")

    step("schedule-key-deletion / cancel-key-deletion")
    s = ok(["schedule-key-deletion", "--key-id", key, "--pending-window-in-days", "7"])
    eq((s["KeyId"], s.get("KeyState"), s.get("PendingWindowInDays")), (arn, "PendingDeletion", 7),
       "schedule-key-deletion")
    eq(ok(["describe-key", "--key-id", key])["KeyMetadata"]["KeyState"], "PendingDeletion", "KeyState")
    error("KMSInvalidStateException", ["encrypt", "--key-id", key, "--plaintext", scratch("pt2", b"x")])
    eq(ok(["cancel-key-deletion", "--key-id", key])["KeyId"], arn, "cancel-key-deletion")
    ok(["enable-key", "--key-id", key])

    step("AccessDenied for a user without identity policy")
    err = error("AccessDeniedException",
                ["encrypt", "--key-id", key, "--plaintext", scratch("pt3", b"denied")],
                ak=ENV["CV_DENIED_AK"], sk=ENV["CV_DENIED_SK"])

    step("bad credentials")
    error("InvalidSignatureException", ["list-keys"], sk=ENV["CV_SK"][::-1])
    error("UnrecognizedClientException", ["list-keys"], ak="AKIAUNKNOWNUNKNOWN00", sk="x" * 40)

    print(json.dumps({
        "suite": "awscli",
        "aws": version,
        "key_id": key,
        "access_key_id": ENV["CV_AK"],
        "denied_stderr": err.strip().splitlines()[-1],
        "calls": CALLS,
        "seconds": round(time.monotonic() - t0, 2),
    }))


if __name__ == "__main__":
    main()
