#!/usr/bin/env python3
"""boto3's sts client and the real `aws sts` against `cryptvol kms serve` (run by
tests/compat.rs): AssumeRole and GetSessionToken over STS's Query protocol, then the
temporary credentials (with their session token) for KMS calls: what the role's policy
allows works, what it does not is denied, and expired, tampered or missing tokens are
refused with AWS's error codes.

Environment (all required):
  CV_AWS             the aws executable
  CV_ENDPOINT        http://127.0.0.1:PORT
  CV_REGION          the region of the requests
  CV_AK / CV_SK      access key of alice, whom the role's trust policy names
  CV_DENIED_AK / CV_DENIED_SK
                     bob, whom it does not
  CV_ROLE_ARN        a role allowing kms:Encrypt, kms:Decrypt, kms:GenerateDataKey
  CV_KEY             a key (default key policy: the account's IAM policies decide)
  CV_EXPIRED         JSON of expired role credentials (AccessKeyId, SecretAccessKey,
                     SessionToken), issued by `cryptvol sts` with the clock moved back

On success, one JSON summary line on stdout.
"""

import base64
import datetime
import json
import os
import subprocess
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

STEP = "start"
CHECKS = 0
E = {k: os.environ[k] for k in (
    "CV_AWS", "CV_ENDPOINT", "CV_REGION", "CV_AK", "CV_SK", "CV_DENIED_AK", "CV_DENIED_SK",
    "CV_ROLE_ARN", "CV_KEY", "CV_EXPIRED")}


def fail(msg):
    print(f"sts_suite: FAIL at step {STEP!r}: {msg}", file=sys.stderr)
    sys.exit(1)


def step(name):
    global STEP
    STEP = name


def check(cond, msg):
    global CHECKS
    CHECKS += 1
    if not cond:
        fail(msg)


def client(service, ak, sk, token=None):
    return boto3.client(
        service, endpoint_url=E["CV_ENDPOINT"], region_name=E["CV_REGION"],
        aws_access_key_id=ak, aws_secret_access_key=sk, aws_session_token=token,
        config=Config(retries={"max_attempts": 1}))


def refused(code, fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == code, f"{fn.__name__}: got {got}, want {code}: {e}")
        return e
    fail(f"{fn.__name__} succeeded; want {code}")


def kms_flow(kms, who):
    """Encrypt, Decrypt, GenerateDataKey allowed; CreateKey and DescribeKey denied."""
    step(f"{who}: encrypt/decrypt")
    ct = kms.encrypt(KeyId=E["CV_KEY"], Plaintext=b"sts compat")["CiphertextBlob"]
    check(kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"sts compat", f"{who}: round trip")
    dk = kms.generate_data_key(KeyId=E["CV_KEY"], KeySpec="AES_256")
    check(len(dk["Plaintext"]) == 32, f"{who}: data key length")
    step(f"{who}: denied")
    e = refused("AccessDeniedException", kms.create_key)
    check("assumed-role" in str(e) or "user/alice" in str(e), f"{who}: denial names the caller: {e}")
    refused("AccessDeniedException", kms.describe_key, KeyId=E["CV_KEY"])


def aws(args, ak, sk, token=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": ak, "AWS_SECRET_ACCESS_KEY": sk,
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": ""})
    if token:
        env["AWS_SESSION_TOKEN"] = token
    cmd = [E["CV_AWS"], "--endpoint-url", E["CV_ENDPOINT"], "--region", E["CV_REGION"],
           "--output", "json"] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def aws_ok(args, *creds):
    code, out, err = aws(args, *creds)
    check(code == 0, f"`aws {' '.join(args)}` exited {code}: {err.strip()}")
    return json.loads(out) if out.strip() else {}


def aws_refused(code_name, args, *creds):
    code, _, err = aws(args, *creds)
    check(code in (254, 255) and code_name in err, f"`aws {' '.join(args)}`: {code} {err!r}")


def main():
    account = E["CV_ROLE_ARN"].split(":")[4]
    session_arn = f"arn:aws:sts::{account}:assumed-role/{E['CV_ROLE_ARN'].split('/')[-1]}"

    step("boto3 assume-role")
    sts = client("sts", E["CV_AK"], E["CV_SK"])
    who = sts.get_caller_identity()
    check(who["Arn"] == f"arn:aws:iam::{account}:user/alice" and who["Account"] == account, f"{who}")
    r = sts.assume_role(RoleArn=E["CV_ROLE_ARN"], RoleSessionName="boto3-session",
                        DurationSeconds=900)
    c = r["Credentials"]
    check(c["AccessKeyId"].startswith("ASIA"), f"{c['AccessKeyId']}")
    left = c["Expiration"] - datetime.datetime.now(datetime.timezone.utc)
    check(datetime.timedelta(seconds=800) < left <= datetime.timedelta(seconds=900), f"{left}")
    check(r["AssumedRoleUser"]["Arn"] == f"{session_arn}/boto3-session", f"{r['AssumedRoleUser']}")
    role = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    who = client("sts", *role).get_caller_identity()
    check(who["Arn"] == f"{session_arn}/boto3-session", f"{who}")
    kms_flow(client("kms", *role), "boto3 role session")

    step("boto3 refusals")
    refused("AccessDenied", client("sts", E["CV_DENIED_AK"], E["CV_DENIED_SK"]).assume_role,
            RoleArn=E["CV_ROLE_ARN"], RoleSessionName="bob-try")
    refused("ValidationError", sts.assume_role, RoleArn=E["CV_ROLE_ARN"], RoleSessionName="bad name!")
    refused("ValidationError", sts.assume_role, RoleArn=E["CV_ROLE_ARN"], RoleSessionName="ok",
            DurationSeconds=43201)
    refused("AccessDenied", client("sts", *role).get_session_token)
    no_token = client("kms", role[0], role[1])
    refused("UnrecognizedClientException", no_token.list_keys)
    tampered = role[2][:-8] + ("A" * 8 if not role[2].endswith("A" * 8) else "B" * 8)
    refused("UnrecognizedClientException", client("kms", role[0], role[1], tampered).list_keys)
    refused("InvalidClientTokenId", client("sts", role[0], role[1], tampered).get_caller_identity)
    x = json.loads(E["CV_EXPIRED"])
    expired = (x["AccessKeyId"], x["SecretAccessKey"], x["SessionToken"])
    refused("ExpiredTokenException", client("kms", *expired).encrypt, KeyId=E["CV_KEY"],
            Plaintext=b"x")
    refused("ExpiredToken", client("sts", *expired).get_caller_identity)

    step("boto3 get-session-token")
    c = sts.get_session_token(DurationSeconds=900)["Credentials"]
    user = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    who = client("sts", *user).get_caller_identity()
    check(who["Arn"] == f"arn:aws:iam::{account}:user/alice", f"{who}")
    ct = client("kms", *user).encrypt(KeyId=E["CV_KEY"], Plaintext=b"u")["CiphertextBlob"]
    check(len(ct) > 0, "alice's session encrypts")

    step("aws sts assume-role")
    alice = (E["CV_AK"], E["CV_SK"])
    r = aws_ok(["sts", "assume-role", "--role-arn", E["CV_ROLE_ARN"],
                "--role-session-name", "cli-session"], *alice)
    c = r["Credentials"]
    check(r["AssumedRoleUser"]["Arn"] == f"{session_arn}/cli-session", f"{r}")
    cli_role = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    who = aws_ok(["sts", "get-caller-identity"], *cli_role)
    check(who["Arn"] == f"{session_arn}/cli-session", f"{who}")
    pt = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sts-suite-{os.getpid()}.txt")
    with open(pt, "wb") as f:
        f.write(b"temporary credentials at work")
    out = aws_ok(["kms", "encrypt", "--key-id", E["CV_KEY"], "--plaintext", f"fileb://{pt}"],
                 *cli_role)
    blob = base64.b64decode(out["CiphertextBlob"])
    ct_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sts-suite-{os.getpid()}.bin")
    with open(ct_file, "wb") as f:
        f.write(blob)
    try:
        out = aws_ok(["kms", "decrypt", "--ciphertext-blob", f"fileb://{ct_file}"], *cli_role)
    finally:
        os.unlink(ct_file)
    with open(pt, "rb") as f:
        check(base64.b64decode(out["Plaintext"]) == f.read(), "aws decrypt round trip")
    out = aws_ok(["kms", "generate-data-key", "--key-id", E["CV_KEY"], "--key-spec", "AES_256"],
                 *cli_role)
    check(len(base64.b64decode(out["Plaintext"])) == 32, "aws data key")
    aws_refused("AccessDeniedException", ["kms", "create-key"], *cli_role)
    aws_refused("UnrecognizedClientException", ["kms", "list-keys"], cli_role[0], cli_role[1])
    aws_refused("ExpiredTokenException", ["kms", "list-keys"], *expired)

    step("aws sts get-session-token")
    r = aws_ok(["sts", "get-session-token", "--duration-seconds", "900"], *alice)
    c = r["Credentials"]
    check(c["AccessKeyId"].startswith("ASIA") and "AssumedRoleUser" not in r, f"{r.keys()}")
    cli_user = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    aws_ok(["kms", "encrypt", "--key-id", E["CV_KEY"], "--plaintext", f"fileb://{pt}"], *cli_user)
    aws_refused("ValidationError", ["sts", "get-session-token", "--duration-seconds", "129601"], *alice)
    os.unlink(pt)

    print(json.dumps({"checks": CHECKS, "sessions": [role[0], cli_role[0], user[0], cli_user[0]]}))


if __name__ == "__main__":
    main()
