#!/usr/bin/env python3
"""boto3's KMS client against `cryptvol kms serve` (run by tests/compat.rs).

Environment (all required):
  CV_ENDPOINT        http://127.0.0.1:PORT
  CV_REGION          the region of the requests (SigV4 credential scope)
  CV_OTHER_REGION    a second initialised region, which must not see CV_REGION's keys
  CV_AK / CV_SK      access key of a user whose identity policy allows kms:*
  CV_DENIED_AK / CV_DENIED_SK / CV_DENIED_ARN
                     a user with no identity policy (only key policies can grant it)
  CV_CONCURRENCY     THREADSxCALLS of concurrent Decrypts, e.g. 8x50

Every step asserts real values; the first mismatch exits 1 with a message naming the
step. On success, one JSON summary line on stdout.
"""

import datetime
import hashlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

STEP = "start"
CHECKS = 0


def fail(msg):
    print(f"boto3_suite: FAIL at step {STEP!r}: {msg}", file=sys.stderr)
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


def expect_error(code, what, fn, **kw):
    """Calls fn(**kw), which must raise ClientError with error code `code`."""
    try:
        r = fn(**kw)
    except ClientError as e:
        got = e.response.get("Error", {}).get("Code")
        eq(got, code, f"{what}: error code (message {e.response.get('Error', {}).get('Message')!r})")
        return e
    fail(f"{what}: expected {code}, but the call succeeded: {r!r}")


ENV = {k: os.environ[k] for k in (
    "CV_ENDPOINT", "CV_REGION", "CV_OTHER_REGION", "CV_AK", "CV_SK",
    "CV_DENIED_AK", "CV_DENIED_SK", "CV_DENIED_ARN", "CV_CONCURRENCY")}
CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=16,
)


def client(ak, sk, region=None):
    return boto3.session.Session().client(
        "kms",
        endpoint_url=ENV["CV_ENDPOINT"],
        region_name=region or ENV["CV_REGION"],
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        config=CONFIG,
    )


def _SignedAt(amz_date):
    """SigV4Auth signing as of `amz_date` (YYYYMMDDTHHMMSSZ) instead of now."""

    class SignedAt(SigV4Auth):
        def _modify_request_before_signing(self, request):
            request.context["timestamp"] = amz_date
            super()._modify_request_before_signing(request)

    return SignedAt


def raw_signed(target, body, *, sk=None, amz_date=None, tamper=None):
    """A POST / signed by botocore's own SigV4 signer, sent with urllib: for bodies
    boto3 would never send. Returns (status, parsed JSON body)."""
    url = ENV["CV_ENDPOINT"] + "/"
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"TrentService.{target}",
    }
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    creds = Credentials(ENV["CV_AK"], sk or ENV["CV_SK"])
    signer = (SigV4Auth if amz_date is None else _SignedAt(amz_date))(creds, "kms", ENV["CV_REGION"])
    signer.add_auth(req)
    prepared = req.prepare()
    data = prepared.body if tamper is None else tamper
    if isinstance(data, str):
        data = data.encode()
    http = urllib.request.Request(url, data=data, method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            fail(f"{target}: HTTP {e.code} with a body that is not JSON: {raw[:200]!r}")


def expect_raw_error(status, code, what, **kw):
    got_status, body = raw_signed(**kw)
    eq((got_status, body.get("__type")), (status, code), f"{what}: status and __type (body {body!r})")
    check(isinstance(body.get("message"), str) and body["message"], f"{what}: no message in {body!r}")
    return body


def main():
    t0 = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    kms = client(ENV["CV_AK"], ENV["CV_SK"])
    denied = client(ENV["CV_DENIED_AK"], ENV["CV_DENIED_SK"])

    step("create_key with description and tags")
    meta = kms.create_key(
        Description="compat key one",
        Tags=[{"TagKey": "team", "TagValue": "storage"}],
    )["KeyMetadata"]
    key1 = meta["KeyId"]
    arn1 = meta["Arn"]
    check(arn1.startswith(f"arn:aws:kms:{ENV['CV_REGION']}:"), f"Arn {arn1!r} is not in region {ENV['CV_REGION']}")
    eq(arn1.rsplit(":key/", 1)[-1], key1, "the Arn ends with the KeyId")
    eq(meta["Description"], "compat key one", "Description")
    eq(meta["KeyState"], "Enabled", "KeyState")
    eq(meta["Enabled"], True, "Enabled")
    eq(meta["KeyUsage"], "ENCRYPT_DECRYPT", "KeyUsage")
    eq(meta["KeySpec"], "SYMMETRIC_DEFAULT", "KeySpec")
    eq(meta["KeyManager"], "CUSTOMER", "KeyManager")
    check(isinstance(meta["CreationDate"], datetime.datetime), f"CreationDate {meta['CreationDate']!r} is not a timestamp")
    age = abs((datetime.datetime.now(datetime.timezone.utc) - meta["CreationDate"]).total_seconds())
    check(age < 300, f"CreationDate {meta['CreationDate']} is {age:.0f} s from now")

    step("describe_key by id and by ARN")
    for ref in (key1, arn1):
        m = kms.describe_key(KeyId=ref)["KeyMetadata"]
        eq((m["KeyId"], m["Arn"], m["Description"]), (key1, arn1, "compat key one"), f"describe_key({ref})")

    step("create_alias, describe_key by alias")
    alias = f"alias/compat-{suffix}"
    kms.create_alias(AliasName=alias, TargetKeyId=key1)
    eq(kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"], key1, "describe_key(alias)")
    expect_error("AlreadyExistsException", "create_alias twice", kms.create_alias, AliasName=alias, TargetKeyId=key1)
    expect_error("NotFoundException", "describe_key(unknown alias)", kms.describe_key, KeyId=f"alias/none-{suffix}")
    expect_error("NotFoundException", "describe_key(unknown id)", kms.describe_key, KeyId=str(uuid.uuid4()))

    step("encrypt / decrypt with an encryption context")
    plaintext = b"compat plaintext \x00\xff" + os.urandom(32)
    ctx = {"app": "compat", "run": suffix}
    enc = kms.encrypt(KeyId=alias, Plaintext=plaintext, EncryptionContext=ctx)
    eq(enc["KeyId"], arn1, "encrypt: KeyId (AWS answers with the key ARN)")
    eq(enc["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT", "encrypt: EncryptionAlgorithm")
    blob1 = enc["CiphertextBlob"]
    check(isinstance(blob1, bytes) and len(blob1) > len(plaintext), "encrypt: CiphertextBlob is not longer bytes")
    check(plaintext not in blob1, "encrypt: the plaintext is in the blob")
    dec = kms.decrypt(CiphertextBlob=blob1, EncryptionContext=ctx)
    eq(dec["Plaintext"], plaintext, "decrypt: Plaintext")
    eq(dec["KeyId"], arn1, "decrypt: KeyId")
    eq(kms.decrypt(CiphertextBlob=blob1, EncryptionContext=ctx, KeyId=key1)["Plaintext"], plaintext, "decrypt with KeyId")
    expect_error("InvalidCiphertextException", "decrypt with a wrong context", kms.decrypt,
                 CiphertextBlob=blob1, EncryptionContext={"app": "compat", "run": "other"})
    expect_error("InvalidCiphertextException", "decrypt without the context", kms.decrypt, CiphertextBlob=blob1)
    expect_error("InvalidCiphertextException", "decrypt of a flipped blob", kms.decrypt,
                 CiphertextBlob=blob1[:-1] + bytes([blob1[-1] ^ 1]), EncryptionContext=ctx)
    expect_error("ValidationException", "encrypt of 4097 bytes", kms.encrypt, KeyId=key1, Plaintext=b"x" * 4097)

    step("generate_data_key AES_256 and NumberOfBytes")
    dk = kms.generate_data_key(KeyId=key1, KeySpec="AES_256", EncryptionContext=ctx)
    eq(len(dk["Plaintext"]), 32, "generate_data_key: Plaintext length")
    eq(dk["KeyId"], arn1, "generate_data_key: KeyId")
    eq(kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"], dk["Plaintext"],
       "decrypt of the data key blob")
    dk64 = kms.generate_data_key(KeyId=alias, NumberOfBytes=64)
    eq(len(dk64["Plaintext"]), 64, "generate_data_key(NumberOfBytes=64)")
    check(dk64["Plaintext"] != kms.generate_data_key(KeyId=alias, NumberOfBytes=64)["Plaintext"],
          "two data keys are equal")

    step("generate_data_key_without_plaintext")
    wp = kms.generate_data_key_without_plaintext(KeyId=key1, KeySpec="AES_128", EncryptionContext=ctx)
    check("Plaintext" not in wp, f"generate_data_key_without_plaintext returned a Plaintext: {sorted(wp)}")
    eq(wp["KeyId"], arn1, "generate_data_key_without_plaintext: KeyId")
    eq(len(kms.decrypt(CiphertextBlob=wp["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"]), 16,
       "the AES_128 data key is 16 bytes")

    step("re_encrypt to a second key and context")
    meta2 = kms.create_key(Description="compat key two")["KeyMetadata"]
    key2, arn2 = meta2["KeyId"], meta2["Arn"]
    ctx2 = {"app": "compat", "moved": "yes"}
    re = kms.re_encrypt(CiphertextBlob=blob1, SourceEncryptionContext=ctx,
                        DestinationKeyId=key2, DestinationEncryptionContext=ctx2)
    eq((re["SourceKeyId"], re["KeyId"]), (arn1, arn2), "re_encrypt: SourceKeyId, KeyId")
    dec2 = kms.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext=ctx2)
    eq((dec2["Plaintext"], dec2["KeyId"]), (plaintext, arn2), "decrypt of the re-encrypted blob")
    expect_error("IncorrectKeyException", "decrypt naming the wrong key", kms.decrypt,
                 CiphertextBlob=blob1, EncryptionContext=ctx, KeyId=key2)

    step("rotation: enable, status, on demand, list")
    eq(kms.get_key_rotation_status(KeyId=key1)["KeyRotationEnabled"], False, "rotation status of a new key")
    kms.enable_key_rotation(KeyId=key1)
    eq(kms.get_key_rotation_status(KeyId=key1)["KeyRotationEnabled"], True, "rotation status after enable")
    # AWS's examples show the key id; the ARN names the key as well.
    check(kms.rotate_key_on_demand(KeyId=key1)["KeyId"] in (key1, arn1), "rotate_key_on_demand: KeyId")
    rotations = kms.list_key_rotations(KeyId=key1)["Rotations"]
    eq(len(rotations), 1, f"list_key_rotations after one rotation ({rotations!r})")
    eq(rotations[0].get("RotationType"), "ON_DEMAND", "RotationType")
    eq(rotations[0].get("KeyId"), key1, "rotation KeyId")
    eq(kms.decrypt(CiphertextBlob=blob1, EncryptionContext=ctx)["Plaintext"], plaintext,
       "a blob made before the rotation still decrypts")
    blob_new = kms.encrypt(KeyId=key1, Plaintext=b"after rotation")["CiphertextBlob"]
    eq(kms.decrypt(CiphertextBlob=blob_new)["Plaintext"], b"after rotation", "encrypt after the rotation")
    kms.disable_key_rotation(KeyId=key1)
    eq(kms.get_key_rotation_status(KeyId=key1)["KeyRotationEnabled"], False, "rotation status after disable")

    step("key policy: get, list, put, and what it grants")
    eq(kms.list_key_policies(KeyId=key1)["PolicyNames"], ["default"], "list_key_policies")
    default = json.loads(kms.get_key_policy(KeyId=key1, PolicyName="default")["Policy"])
    check(isinstance(default.get("Statement"), list) and default["Statement"], f"default key policy: {default!r}")
    root_arn = arn1.split(":key/")[0].replace(":kms:" + ENV["CV_REGION"] + ":", ":iam::") + ":root"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Account", "Effect": "Allow", "Principal": {"AWS": root_arn},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "Denied user may encrypt", "Effect": "Allow", "Principal": {"AWS": ENV["CV_DENIED_ARN"]},
             "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"},
        ],
    }
    kms.put_key_policy(KeyId=key1, PolicyName="default", Policy=json.dumps(policy))
    got = json.loads(kms.get_key_policy(KeyId=key1, PolicyName="default")["Policy"])
    eq(got["Statement"], policy["Statement"], "get_key_policy after put_key_policy")
    expect_error("AccessDeniedException", "a user without identity policy encrypts under the default policy",
                 denied.encrypt, KeyId=key2, Plaintext=b"nope")
    expect_error("AccessDeniedException", "the key policy grants no DescribeKey",
                 denied.describe_key, KeyId=key1)
    b = denied.encrypt(KeyId=key1, Plaintext=b"granted by the key policy")["CiphertextBlob"]
    eq(denied.decrypt(CiphertextBlob=b)["Plaintext"], b"granted by the key policy",
       "the key policy grants Decrypt")

    step("tags: tag, untag, list")

    def tags(key):
        return sorted((t["TagKey"], t["TagValue"]) for t in kms.list_resource_tags(KeyId=key)["Tags"])

    eq(tags(key1), [("team", "storage")], "tags from create_key")
    kms.tag_resource(KeyId=key1, Tags=[{"TagKey": "env", "TagValue": "test"}, {"TagKey": "team", "TagValue": "kms"}])
    eq(tags(key1), [("env", "test"), ("team", "kms")], "tags after tag_resource (a value replaced)")
    kms.untag_resource(KeyId=key1, TagKeys=["team"])
    eq(tags(key1), [("env", "test")], "tags after untag_resource")
    eq(tags(key2), [], "tags of an untagged key")

    step("list_keys and list_aliases, with paginators")
    keys = [k for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 1})
            for k in page["Keys"]]
    ids = [k["KeyId"] for k in keys]
    check(key1 in ids and key2 in ids, f"list_keys misses a key: {ids}")
    eq(len(ids), len(set(ids)), f"list_keys pages repeat keys: {ids}")
    eq({k["KeyId"]: k["KeyArn"] for k in keys}[key1], arn1, "list_keys: KeyArn")
    aliases = {a["AliasName"]: a for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]}
    check(alias in aliases, f"list_aliases misses {alias}: {sorted(aliases)}")
    eq(aliases[alias].get("TargetKeyId"), key1, "list_aliases: TargetKeyId")
    check(aliases[alias].get("AliasArn", "").endswith(":" + alias), f"AliasArn {aliases[alias].get('AliasArn')!r}")
    eq([a["AliasName"] for a in kms.list_aliases(KeyId=key1)["Aliases"]], [alias], "list_aliases(KeyId)")

    step("disable_key / enable_key")
    kms.disable_key(KeyId=key1)
    m = kms.describe_key(KeyId=key1)["KeyMetadata"]
    eq((m["KeyState"], m["Enabled"]), ("Disabled", False), "describe_key after disable_key")
    expect_error("DisabledException", "encrypt under a disabled key", kms.encrypt, KeyId=key1, Plaintext=b"x")
    expect_error("DisabledException", "decrypt under a disabled key", kms.decrypt,
                 CiphertextBlob=blob1, EncryptionContext=ctx)
    kms.enable_key(KeyId=key1)
    eq(kms.describe_key(KeyId=key1)["KeyMetadata"]["KeyState"], "Enabled", "KeyState after enable_key")
    eq(kms.decrypt(CiphertextBlob=blob1, EncryptionContext=ctx)["Plaintext"], plaintext, "decrypt after enable_key")

    step("schedule_key_deletion (7 days) / cancel_key_deletion")
    s = kms.schedule_key_deletion(KeyId=key2, PendingWindowInDays=7)
    eq((s["KeyId"], s.get("KeyState"), s.get("PendingWindowInDays")), (arn2, "PendingDeletion", 7),
       "schedule_key_deletion: KeyId, KeyState, PendingWindowInDays")
    days = (s["DeletionDate"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400
    check(6.9 < days < 7.1, f"DeletionDate {s['DeletionDate']} is {days:.2f} days away, not 7")
    m = kms.describe_key(KeyId=key2)["KeyMetadata"]
    eq(m["KeyState"], "PendingDeletion", "describe_key: KeyState")
    eq(m.get("DeletionDate"), s["DeletionDate"], "describe_key: DeletionDate")
    expect_error("KMSInvalidStateException", "encrypt under a key pending deletion", kms.encrypt,
                 KeyId=key2, Plaintext=b"x")
    expect_error("ValidationException", "PendingWindowInDays=6", kms.schedule_key_deletion,
                 KeyId=key1, PendingWindowInDays=6)
    eq(kms.cancel_key_deletion(KeyId=key2)["KeyId"], arn2, "cancel_key_deletion: KeyId")
    eq(kms.describe_key(KeyId=key2)["KeyMetadata"]["KeyState"], "Disabled", "a cancelled deletion leaves the key Disabled")
    kms.enable_key(KeyId=key2)

    step("update_alias / delete_alias")
    kms.update_alias(AliasName=alias, TargetKeyId=key2)
    eq(kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"], key2, "describe_key(alias) after update_alias")
    kms.delete_alias(AliasName=alias)
    expect_error("NotFoundException", "describe_key of a deleted alias", kms.describe_key, KeyId=alias)

    step("regions are separate")
    other = client(ENV["CV_AK"], ENV["CV_SK"], region=ENV["CV_OTHER_REGION"])
    other_ids = [k["KeyId"] for k in other.list_keys()["Keys"]]
    check(key1 not in other_ids, f"{ENV['CV_OTHER_REGION']} lists a key of {ENV['CV_REGION']}")
    expect_error("NotFoundException", "describe_key of another region's key", other.describe_key, KeyId=key1)
    other_key = other.create_key()["KeyMetadata"]["Arn"]
    check(f":kms:{ENV['CV_OTHER_REGION']}:" in other_key, f"a key made in {ENV['CV_OTHER_REGION']} has Arn {other_key}")

    step("authentication failures")
    expect_error("InvalidSignatureException", "a wrong secret key",
                 client(ENV["CV_AK"], ENV["CV_SK"][:-1] + ("A" if ENV["CV_SK"][-1] != "A" else "B")).list_keys)
    expect_error("UnrecognizedClientException", "an unknown access key",
                 client("AKIAUNKNOWNUNKNOWN00", "x" * 40).list_keys)

    step("hand-made signed requests")
    ok_status, ok_body = raw_signed(target="ListKeys", body=b"{}")
    eq(ok_status, 200, f"a signed ListKeys by hand ({ok_body!r})")
    expect_raw_error(400, "SerializationException", "a body that is not JSON", target="ListKeys", body=b"{not json")
    expect_raw_error(400, "SerializationException", "a JSON array body", target="ListKeys", body=b"[1,2]")
    expect_raw_error(400, "UnknownOperationException", "an unknown operation", target="NoSuchOperation", body=b"{}")
    expect_raw_error(400, "InvalidSignatureException", "a body changed after signing",
                     target="ListKeys", body=b'{"Limit": 1}', tamper=b'{"Limit": 2}')
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)).strftime("%Y%m%dT%H%M%SZ")
    body = expect_raw_error(400, "InvalidSignatureException", "a signature 10 minutes old",
                            target="ListKeys", body=b"{}", amz_date=old)
    check("expired" in body["message"].lower(), f"the message of an expired signature: {body['message']!r}")

    step("concurrent decrypts")
    threads_n, calls_n = (int(x) for x in ENV["CV_CONCURRENCY"].split("x"))
    errors = []
    blobs = [(kms.encrypt(KeyId=key1, Plaintext=f"thread {i}".encode(), EncryptionContext={"t": str(i)})["CiphertextBlob"], i)
             for i in range(threads_n)]

    def worker(blob, i):
        c = client(ENV["CV_AK"], ENV["CV_SK"])
        try:
            for _ in range(calls_n):
                r = c.decrypt(CiphertextBlob=blob, EncryptionContext={"t": str(i)})
                if r["Plaintext"] != f"thread {i}".encode():
                    errors.append(f"thread {i}: wrong plaintext {r['Plaintext']!r}")
                    return
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    t1 = time.monotonic()
    ts = [threading.Thread(target=worker, args=bi) for bi in blobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    concurrent_s = time.monotonic() - t1
    check(not errors, f"{len(errors)} concurrent decrypt failures: {errors[:5]}")
    eq(kms.decrypt(CiphertextBlob=blob1, EncryptionContext=ctx)["Plaintext"], plaintext, "a call after the load")

    step("paging with Limit and Marker")
    # Last, so that everything above is checked even where paging is missing. Two aliases
    # of our own, so that ListAliases has more than one page whatever ran before.
    for name in ("alias/page-a", "alias/page-b"):
        kms.create_alias(AliasName=name, TargetKeyId=key1)
    for op, field in (("list_keys", "Keys"), ("list_aliases", "Aliases")):
        page = getattr(kms, op)(Limit=1)
        eq((len(page[field]), page.get("Truncated"), bool(page.get("NextMarker"))), (1, True, True),
           f"{op}(Limit=1): one item, Truncated, NextMarker")
        nxt = getattr(kms, op)(Limit=1, Marker=page["NextMarker"])
        eq(len(nxt[field]), 1, f"{op}(Limit=1, Marker): one item")
        check(nxt[field][0] != page[field][0], f"{op}: the second page repeats the first: {nxt[field]}")

    print(json.dumps({
        "suite": "boto3",
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "key_id": key1,
        "access_key_id": ENV["CV_AK"],
        "checks": CHECKS,
        "concurrent_decrypts": threads_n * calls_n,
        "concurrent_seconds": round(concurrent_s, 2),
        "seconds": round(time.monotonic() - t0, 2),
        "digest": hashlib.sha256(plaintext).hexdigest()[:16],
    }))


if __name__ == "__main__":
    main()
