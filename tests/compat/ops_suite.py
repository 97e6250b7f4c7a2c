#!/usr/bin/env python3
"""boto3 and the AWS CLI on the KMS operations beyond the key flow (run by tests/compat.rs):
GenerateRandom, UpdateKeyDescription, DryRun, paging with real paginators, KeyMaterialId,
the on-demand rotation limit, and AWS's input checks. Every error goes through botocore's
own exception class where the API model has one (client.exceptions.X), so the server's
`__type` must be the one botocore knows.

Environment (all required):
  CV_ENDPOINT, CV_REGION, CV_AK, CV_SK   as for boto3_suite.py
  CV_AWS                                 the aws executable
  CV_SCRATCH                             a directory for the AWS CLI's files

On success, one JSON summary line on stdout.
"""

import base64
import json
import os
import re
import subprocess
import sys
import time

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

STEP = "start"
CHECKS = 0
ENV = {k: os.environ[k] for k in ("CV_ENDPOINT", "CV_REGION", "CV_AK", "CV_SK", "CV_AWS", "CV_SCRATCH")}
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DRY = "The request would have succeeded, but the DryRun option is set."


def fail(msg):
    print(f"ops_suite: FAIL at step {STEP!r}: {msg}", file=sys.stderr)
    sys.exit(1)


def step(name):
    global STEP
    STEP = name


def check(cond, msg):
    global CHECKS
    CHECKS += 1
    if not cond:
        fail(msg)


def eq(got, want, what):
    check(got == want, f"{what}: got {got!r}, want {want!r}")


def raises(exc_class, what, fn, message=None, **kw):
    """fn(**kw) must raise exc_class (a botocore modelled exception class, or a code
    string for codes the model does not list); `message` must be in its message."""
    try:
        r = fn(**kw)
    except ClientError as e:
        err = e.response.get("Error", {})
        if isinstance(exc_class, str):
            eq(err.get("Code"), exc_class, f"{what}: error code (message {err.get('Message')!r})")
        else:
            check(isinstance(e, exc_class),
                  f"{what}: raised {type(e).__name__} ({err.get('Code')}: {err.get('Message')!r}), "
                  f"not {exc_class.__name__}")
        if message is not None:
            check(message in (err.get("Message") or ""), f"{what}: message {err.get('Message')!r} lacks {message!r}")
        return e
    fail(f"{what}: expected {exc_class}, but the call succeeded: {r!r}")


def client(validate=True):
    return boto3.session.Session().client(
        "kms",
        endpoint_url=ENV["CV_ENDPOINT"],
        region_name=ENV["CV_REGION"],
        aws_access_key_id=ENV["CV_AK"],
        aws_secret_access_key=ENV["CV_SK"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                      parameter_validation=validate, connect_timeout=5, read_timeout=30),
    )


def aws(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": ENV["CV_AK"], "AWS_SECRET_ACCESS_KEY": ENV["CV_SK"],
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": "",
    })
    cmd = [ENV["CV_AWS"], "--endpoint-url", ENV["CV_ENDPOINT"], "--region", ENV["CV_REGION"],
           "--output", "json", "kms"] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def aws_ok(args):
    code, out, err = aws(args)
    if code != 0:
        fail(f"`aws kms {' '.join(args)}` exited {code}: {err.strip()}")
    return json.loads(out) if out.strip() else {}


def aws_error(code_name, args):
    code, out, err = aws(args)
    check(code in (254, 255) and code_name in err,
          f"`aws kms {' '.join(args)}`: expected exit 254/255 and {code_name}, got {code}: {err.strip()!r}")
    return err


def main():
    t0 = time.monotonic()
    kms = client()
    loose = client(validate=False)  # sends what botocore itself would refuse
    ex = kms.exceptions

    step("GenerateRandom")
    a = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    eq((len(a), len(b)), (32, 32), "generate_random lengths")
    check(a != b, "two GenerateRandom results are equal")
    eq(len(kms.generate_random(NumberOfBytes=1024)["Plaintext"]), 1024, "1024 bytes")
    for n in (0, 1025):
        raises("ValidationException", f"NumberOfBytes={n}", loose.generate_random,
               message="at 'numberOfBytes' failed to satisfy constraint", NumberOfBytes=n)
    raises(ex.CustomKeyStoreNotFoundException, "a CustomKeyStoreId", kms.generate_random,
           NumberOfBytes=8, CustomKeyStoreId="cks-1234567890abcdef0")

    step("UpdateKeyDescription and CurrentKeyMaterialId")
    meta = kms.create_key(Description="ops one")["KeyMetadata"]
    key, arn = meta["KeyId"], meta["Arn"]
    check(HEX64.match(meta.get("CurrentKeyMaterialId", "")), f"CreateKey CurrentKeyMaterialId {meta.get('CurrentKeyMaterialId')!r}")
    kms.update_key_description(KeyId=key, Description="ops one, renamed")
    d = kms.describe_key(KeyId=arn)["KeyMetadata"]
    eq(d["Description"], "ops one, renamed", "Description after update_key_description")
    eq(d["CurrentKeyMaterialId"], meta["CurrentKeyMaterialId"], "material id unchanged by a description")
    raises("ValidationException", "a description of 8193 characters", loose.update_key_description,
           message="8192", KeyId=key, Description="d" * 8193)
    raises(ex.NotFoundException, "update_key_description of 'xyz'", kms.update_key_description,
           message="Invalid keyId 'xyz'", KeyId="xyz", Description="x")

    step("RotateKeyOnDemand: KeyMaterialId per rotation, at most 10")
    ids = [meta["CurrentKeyMaterialId"]]
    for _ in range(10):
        kms.rotate_key_on_demand(KeyId=key)
        ids.append(kms.describe_key(KeyId=key)["KeyMetadata"]["CurrentKeyMaterialId"])
    eq(len(set(ids)), 11, "a distinct KeyMaterialId per version")
    raises(ex.LimitExceededException, "the 11th on-demand rotation", kms.rotate_key_on_demand,
           message="The on-demand rotations limit has been reached for the given keyId.", KeyId=key)
    rotations = [r for page in kms.get_paginator("list_key_rotations").paginate(
        KeyId=key, PaginationConfig={"PageSize": 3}) for r in page["Rotations"]]
    eq([r["KeyMaterialId"] for r in rotations], ids[1:], "list_key_rotations KeyMaterialId, paged by 3")
    check(all(r["RotationType"] == "ON_DEMAND" for r in rotations), f"RotationType {rotations!r}")

    step("DryRun")
    ctx = {"purpose": "dry"}
    blob = kms.encrypt(KeyId=key, Plaintext=b"dry run", EncryptionContext=ctx)["CiphertextBlob"]
    other = kms.create_key(Description="ops two")["KeyMetadata"]["KeyId"]
    for what, fn, kw in (
        ("encrypt", kms.encrypt, {"KeyId": key, "Plaintext": b"x"}),
        ("decrypt", kms.decrypt, {"CiphertextBlob": blob, "EncryptionContext": ctx}),
        ("re_encrypt", kms.re_encrypt, {"CiphertextBlob": blob, "SourceEncryptionContext": ctx,
                                        "DestinationKeyId": other}),
        ("generate_data_key", kms.generate_data_key, {"KeyId": key, "KeySpec": "AES_256"}),
        ("generate_data_key_without_plaintext", kms.generate_data_key_without_plaintext,
         {"KeyId": key, "NumberOfBytes": 64}),
    ):
        e = raises(ex.DryRunOperationException, f"{what}(DryRun=True)", fn, DryRun=True, **kw)
        eq(e.response["Error"]["Message"], DRY, f"{what}: the DryRun message")
    raises(ex.InvalidCiphertextException, "decrypt(DryRun) with the wrong context", kms.decrypt,
           CiphertextBlob=blob, EncryptionContext={"purpose": "other"}, DryRun=True)
    kms.disable_key(KeyId=other)
    raises(ex.DisabledException, "encrypt(DryRun) under a disabled key", kms.encrypt,
           KeyId=other, Plaintext=b"x", DryRun=True)
    kms.enable_key(KeyId=other)

    step("paging through real paginators")
    made = [kms.create_key(Description=f"page {i}")["KeyMetadata"]["KeyId"] for i in range(7)]
    pages = list(kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}))
    listed = [k["KeyId"] for p in pages for k in p["Keys"]]
    check(all(len(p["Keys"]) <= 2 for p in pages), f"a page over PageSize 2: {[len(p['Keys']) for p in pages]}")
    check(len(pages) >= 5, f"{len(pages)} pages for {len(listed)} keys at PageSize 2")
    eq(len(listed), len(set(listed)), f"list_keys repeats a key: {listed}")
    check(set(made + [key, other]) <= set(listed), f"list_keys misses a key: {listed}")
    eq(listed, sorted(listed), "keys come in a stable (key id) order")
    # MaxItems / StartingToken, the paginator's own resume.
    first = kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2, "MaxItems": 3}).build_full_result()
    eq(len(first["Keys"]), 3, "MaxItems 3")
    rest = kms.get_paginator("list_keys").paginate(
        PaginationConfig={"PageSize": 2, "StartingToken": first["NextToken"]}).build_full_result()
    eq([k["KeyId"] for k in first["Keys"] + rest["Keys"]], listed, "MaxItems then StartingToken")
    for name in ("alias/ops-a", "alias/ops-b", "alias/ops-c"):
        kms.create_alias(AliasName=name, TargetKeyId=made[0])
    aliases = [a["AliasName"] for p in kms.get_paginator("list_aliases").paginate(
        KeyId=made[0], PaginationConfig={"PageSize": 1}) for a in p["Aliases"]]
    eq(aliases, ["alias/ops-a", "alias/ops-b", "alias/ops-c"], "list_aliases(KeyId) paged by 1")
    kms.tag_resource(KeyId=made[1], Tags=[{"TagKey": f"t{i}", "TagValue": str(i)} for i in range(5)])
    tags = [t["TagKey"] for p in kms.get_paginator("list_resource_tags").paginate(
        KeyId=made[1], PaginationConfig={"PageSize": 2}) for t in p["Tags"]]
    eq(tags, [f"t{i}" for i in range(5)], "list_resource_tags paged by 2")
    raises(ex.InvalidMarkerException, "a Marker this KMS never gave", kms.list_keys, Marker="bm90IGEgbWFya2Vy")
    one = kms.list_keys(Limit=1)
    raises(ex.InvalidMarkerException, "a ListKeys marker given to ListAliases", kms.list_aliases,
           Marker=one["NextMarker"])

    step("input checks")
    raises(ex.TagException, "duplicate tag keys in create_key", kms.create_key, message="Duplicate tag keys",
           Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}])
    for k in ("aws:team", "AWS:team"):
        raises(ex.TagException, f"tag key {k}", kms.tag_resource, message="Tags beginning with aws: are reserved",
               KeyId=key, Tags=[{"TagKey": k, "TagValue": "x"}])
    raises(ex.TagException, "51 tags", kms.create_key, message="Too many tags",
           Tags=[{"TagKey": f"k{i}", "TagValue": ""} for i in range(51)])
    raises(ex.TagException, "untag aws:x", kms.untag_resource, KeyId=key, TagKeys=["aws:x"])
    raises("ValidationException", "a tag key of 129 characters", loose.tag_resource,
           message="Member must have length less than or equal to 128",
           KeyId=key, Tags=[{"TagKey": "k" * 129, "TagValue": "x"}])
    raises("ValidationException", "an alias without alias/", loose.create_alias,
           message='Alias must start with the prefix "alias/"', AliasName="nope", TargetKeyId=key)
    raises("ValidationException", "an alias with a space", loose.create_alias,
           message="^[a-zA-Z0-9:/_-]+$", AliasName="alias/sp ace", TargetKeyId=key)
    for op in ("create_alias", "update_alias"):
        raises("NotAuthorizedException", f"{op} alias/aws/x", getattr(kms, op),
               AliasName="alias/aws/x", TargetKeyId=key)
    raises("NotAuthorizedException", "delete_alias alias/aws/ebs", kms.delete_alias, AliasName="alias/aws/ebs")
    raises(ex.NotFoundException, "describe_key('xyz')", kms.describe_key, message="Invalid keyId 'xyz'", KeyId="xyz")

    step("AWS CLI: generate-random, update-key-description, list-keys --page-size, TagException")
    r = aws_ok(["generate-random", "--number-of-bytes", "16"])
    eq(len(base64.b64decode(r["Plaintext"])), 16, "aws kms generate-random: 16 bytes")
    aws_ok(["update-key-description", "--key-id", key, "--description", "from the aws cli"])
    eq(kms.describe_key(KeyId=key)["KeyMetadata"]["Description"], "from the aws cli",
       "aws kms update-key-description")
    keys = [k["KeyId"] for k in aws_ok(["list-keys", "--page-size", "2"])["Keys"]]
    eq(keys, listed, "aws kms list-keys --page-size 2 lists every key once, in order")
    aws_error("TagException", ["tag-resource", "--key-id", key, "--tags", "TagKey=aws:x,TagValue=1"])
    aws_error("DryRunOperationException", ["generate-data-key", "--key-id", key, "--key-spec", "AES_256", "--dry-run"])

    print(json.dumps({
        "suite": "ops",
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "key_id": key,
        "list_keys_pages": len(pages),
        "checks": CHECKS,
        "seconds": round(time.monotonic() - t0, 2),
    }))


if __name__ == "__main__":
    main()
