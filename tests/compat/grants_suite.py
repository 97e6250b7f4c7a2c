#!/usr/bin/env python3
"""Grants through boto3 and the AWS CLI against `cryptvol kms serve` (run by tests/compat.rs).

Environment (all required):
  CV_ENDPOINT, CV_REGION        the server and the region of the requests
  CV_AK / CV_SK                 a user whose identity policy allows kms:*
  CV_DENIED_AK / CV_DENIED_SK / CV_DENIED_ARN
                                a user with no identity policy: the grantee
  CV_AWS                        the aws executable

Every step asserts real values; the first mismatch exits 1 naming the step. On success,
one JSON summary line on stdout.
"""

import json
import os
import subprocess
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

STEP = "start"
ENV = {k: os.environ[k] for k in (
    "CV_ENDPOINT", "CV_REGION", "CV_AK", "CV_SK", "CV_DENIED_AK", "CV_DENIED_SK",
    "CV_DENIED_ARN", "CV_AWS")}


def fail(msg):
    print(f"grants_suite: FAIL at step {STEP!r}: {msg}", file=sys.stderr)
    sys.exit(1)


def step(name):
    global STEP
    STEP = name


def eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def client(ak, sk):
    return boto3.client(
        "kms", endpoint_url=ENV["CV_ENDPOINT"], region_name=ENV["CV_REGION"],
        aws_access_key_id=ak, aws_secret_access_key=sk,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def raises(exc_class, what, fn, **kw):
    try:
        r = fn(**kw)
    except exc_class as e:
        return e
    except ClientError as e:
        fail(f"{what}: expected {exc_class.__name__}, got {e.response['Error']}")
    fail(f"{what}: expected {exc_class.__name__}, but the call succeeded: {r!r}")


def aws(args, ak, sk):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": ak, "AWS_SECRET_ACCESS_KEY": sk,
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": "",
    })
    p = subprocess.run(
        [ENV["CV_AWS"], "--endpoint-url", ENV["CV_ENDPOINT"], "--region", ENV["CV_REGION"],
         "--output", "json", "kms"] + args,
        env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


alice = client(ENV["CV_AK"], ENV["CV_SK"])
bob = client(ENV["CV_DENIED_AK"], ENV["CV_DENIED_SK"])
bob_arn = ENV["CV_DENIED_ARN"]

step("a key and a blob bob may not decrypt")
key = alice.create_key(Description="grants")["KeyMetadata"]["KeyId"]
ctx = {"lineage": "vol-1"}
blob = alice.encrypt(KeyId=key, Plaintext=b"granted", EncryptionContext=ctx)["CiphertextBlob"]
e = raises(bob.exceptions.ClientError, "bob's decrypt before a grant",
           bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
eq(e.response["Error"]["Code"], "AccessDeniedException", "error code")

step("create-grant")
g = alice.create_grant(KeyId=key, GranteePrincipal=bob_arn, RetiringPrincipal=bob_arn,
                       Operations=["Decrypt", "DescribeKey"],
                       Constraints={"EncryptionContextSubset": ctx}, Name="compat-grant")
grant_id, token = g["GrantId"], g["GrantToken"]
eq(len(grant_id), 64, "GrantId length")
again = alice.create_grant(KeyId=key, GranteePrincipal=bob_arn, RetiringPrincipal=bob_arn,
                           Operations=["Decrypt", "DescribeKey"],
                           Constraints={"EncryptionContextSubset": ctx}, Name="compat-grant")
eq(again["GrantId"], grant_id, "the same Name and parameters give the same grant")

step("bob decrypts through the grant, with its own access key")
out = bob.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, GrantTokens=[token])
eq(out["Plaintext"], b"granted", "plaintext")
eq(bob.describe_key(KeyId=key, GrantTokens=[again["GrantToken"]])["KeyMetadata"]["KeyId"], key, "DescribeKey")
e = raises(bob.exceptions.ClientError, "decrypt outside the constraint",
           bob.decrypt, CiphertextBlob=alice.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"])
eq(e.response["Error"]["Code"], "AccessDeniedException", "error code")

step("list-grants and list-retirable-grants")
lg = alice.list_grants(KeyId=key)
eq(len(lg["Grants"]), 1, "one grant")
entry = lg["Grants"][0]
eq(entry["GrantId"], grant_id, "GrantId")
eq(entry["GranteePrincipal"], bob_arn, "GranteePrincipal")
eq(entry["Operations"], ["Decrypt", "DescribeKey"], "Operations")
eq(entry["Constraints"], {"EncryptionContextSubset": ctx}, "Constraints")
eq(entry["Name"], "compat-grant", "Name")
eq(lg["Truncated"], False, "Truncated")
if not hasattr(entry["CreationDate"], "year"):
    fail(f"CreationDate is not a timestamp: {entry['CreationDate']!r}")
eq(alice.list_grants(KeyId=key, GrantId=grant_id)["Grants"][0]["GrantId"], grant_id, "by GrantId")
eq(alice.list_grants(KeyId=key, GranteePrincipal=bob_arn)["Grants"][0]["GrantId"], grant_id, "by grantee")
eq(alice.list_retirable_grants(RetiringPrincipal=bob_arn)["Grants"][0]["GrantId"], grant_id, "retirable")
pages = list(alice.get_paginator("list_grants").paginate(KeyId=key, PaginationConfig={"PageSize": 1}))
eq(sum(len(p["Grants"]) for p in pages), 1, "paginator")

step("errors through botocore's exception classes")
raises(bob.exceptions.InvalidGrantTokenException, "a forged token",
       bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx, GrantTokens=["Zm9yZ2Vk"])
raises(alice.exceptions.InvalidGrantTokenException, "retire with a forged token",
       alice.retire_grant, GrantToken="Zm9yZ2Vk")
raises(alice.exceptions.InvalidGrantIdException, "revoke a malformed id",
       alice.revoke_grant, KeyId=key, GrantId="not-a-grant-id")
raises(alice.exceptions.NotFoundException, "revoke an unknown grant",
       alice.revoke_grant, KeyId=key, GrantId="0" * 64)
step("DryRun on the grant operations")
raises(alice.exceptions.DryRunOperationException, "create-grant DryRun",
       alice.create_grant, KeyId=key, GranteePrincipal=bob_arn, Operations=["Decrypt"],
       DryRun=True)
raises(alice.exceptions.DryRunOperationException, "revoke-grant DryRun",
       alice.revoke_grant, KeyId=key, GrantId=grant_id, DryRun=True)
raises(bob.exceptions.DryRunOperationException, "retire-grant DryRun by the retiring principal",
       bob.retire_grant, KeyId=key, GrantId=grant_id, DryRun=True)
e = raises(alice.exceptions.ClientError, "retire-grant DryRun by a non-retiring principal",
           alice.retire_grant, KeyId=key, GrantId=grant_id, DryRun=True)
eq(e.response["Error"]["Code"], "AccessDeniedException", "retire DryRun by alice")
raises(alice.exceptions.NotFoundException, "revoke-grant DryRun of an unknown grant",
       alice.revoke_grant, KeyId=key, GrantId="0" * 64, DryRun=True)
eq([x["GrantId"] for x in alice.list_grants(KeyId=key, GrantId=grant_id)["Grants"]],
   [grant_id], "the grant after the dry runs")
# KMS's model has no ValidationException class: botocore raises ClientError with its code.
for what, kw in [("a bad grantee", {"GranteePrincipal": "bob", "Operations": ["Decrypt"]}),
                 ("an operation of another key type", {"GranteePrincipal": bob_arn, "Operations": ["Sign"]})]:
    e = raises(alice.exceptions.ClientError, what, alice.create_grant, KeyId=key, **kw)
    eq(e.response["Error"]["Code"], "ValidationException", what)
raises(alice.exceptions.NotFoundException, "an unknown key",
       alice.create_grant, KeyId="1234abcd-12ab-34cd-56ef-1234567890ab",
       GranteePrincipal=bob_arn, Operations=["Decrypt"])

step("bob retires the grant with its token; then nothing")
bob.retire_grant(GrantToken=token)
raises(bob.exceptions.ClientError, "decrypt after retire",
       bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
eq(alice.list_grants(KeyId=key)["Grants"], [], "no grants left")

step("AWS CLI: create-grant, list-grants, revoke-grant")
code, out, err = aws(["create-grant", "--key-id", key, "--grantee-principal", bob_arn,
                      "--operations", "Decrypt", "Encrypt",
                      "--constraints", "EncryptionContextSubset={lineage=vol-1}"],
                     ENV["CV_AK"], ENV["CV_SK"])
eq(code, 0, f"aws create-grant exit ({err})")
cli_grant = json.loads(out)["GrantId"]
code, out, err = aws(["list-grants", "--key-id", key], ENV["CV_AK"], ENV["CV_SK"])
eq(code, 0, f"aws list-grants exit ({err})")
listed = json.loads(out)["Grants"]
eq([g["GrantId"] for g in listed], [cli_grant], "aws list-grants")
eq(listed[0]["Constraints"], {"EncryptionContextSubset": {"lineage": "vol-1"}}, "aws constraints")
eq(bob.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"], b"granted", "through the CLI's grant")
code, out, err = aws(["revoke-grant", "--key-id", key, "--grant-id", cli_grant], ENV["CV_DENIED_AK"], ENV["CV_DENIED_SK"])
if code == 0 or "AccessDeniedException" not in err:
    fail(f"bob's revoke-grant: exit {code}, stderr {err!r}")
code, out, err = aws(["revoke-grant", "--key-id", key, "--grant-id", cli_grant], ENV["CV_AK"], ENV["CV_SK"])
eq(code, 0, f"aws revoke-grant exit ({err})")
code, out, err = aws(["revoke-grant", "--key-id", key, "--grant-id", cli_grant], ENV["CV_AK"], ENV["CV_SK"])
if code == 0 or "NotFoundException" not in err:
    fail(f"second revoke-grant: exit {code}, stderr {err!r}")
raises(bob.exceptions.ClientError, "decrypt after revoke",
       bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)

print(json.dumps({"key_id": key, "grant_id": grant_id, "cli_grant_id": cli_grant}))
