#!/usr/bin/env python3
"""boto3 and the AWS CLI on the custom key store operations (AWS_CLOUDHSM) against
`cryptvol kms serve` (run by tests/compat_custom_key_stores.rs), with a SoftHSM2 token as
the "cluster": CloudHsmClusterId is the token's pkcs11: URI, KeyStorePassword its user PIN.

Every error goes through botocore's modelled exception class (kms.exceptions.X), so the
server's `__type` must be one botocore knows. botocore checks only the *minimum* length of
CloudHsmClusterId (19) on the client, not its maximum (24) nor its pattern, so a pkcs11:
URI goes through boto3 with parameter validation on (checked below).

One server process serves every step, and PKCS#11 keeps one login per token per process:
the wrong password is tried before the right one ever logs in, and the AWS CLI's store
(in the other region, on the same token) comes after the boto3 store was disconnected.

Environment (all required):
  CV_ENDPOINT, CV_REGION, CV_OTHER_REGION, CV_AK, CV_SK   as for boto3_suite.py
  CV_AWS          the aws executable
  CV_SCRATCH      a directory for the AWS CLI's files
  CV_HSM_URI      the token: pkcs11:token=LABEL?module-path=/path/to/module.so
  CV_HSM_PIN      the token's user PIN
  CV_WRONG_PIN    a PIN of valid length that is not the token's

On success, one JSON summary line on stdout.
"""

import base64
import datetime
import json
import os
import re
import subprocess
import sys
import time

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

STEP = "start"
CHECKS = 0
ENV = {k: os.environ[k] for k in (
    "CV_ENDPOINT", "CV_REGION", "CV_OTHER_REGION", "CV_AK", "CV_SK", "CV_AWS", "CV_SCRATCH",
    "CV_HSM_URI", "CV_HSM_PIN", "CV_WRONG_PIN")}
URI, PIN, WRONG = ENV["CV_HSM_URI"], ENV["CV_HSM_PIN"], ENV["CV_WRONG_PIN"]
STORE_ID = re.compile(r"^cks-[0-9a-f]{17}$")
UNKNOWN = "cks-00000000000000000"


def fail(msg):
    print(f"custom_key_stores_suite: FAIL at step {STEP!r}: {msg}", file=sys.stderr)
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
    """fn(**kw) must raise exc_class, a botocore modelled exception class (or a code string
    for the codes the model does not list); `message` must be in its message."""
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
        check(bool(err.get("Message")), f"{what}: no message")
        check(PIN not in str(e.response) and WRONG not in str(e.response), f"{what}: a password in {e.response!r}")
        if message is not None:
            check(message in err.get("Message", ""), f"{what}: message {err.get('Message')!r} lacks {message!r}")
        return e
    fail(f"{what}: expected {exc_class}, but the call succeeded: {r!r}")


def client(region):
    return boto3.session.Session().client(
        "kms",
        endpoint_url=ENV["CV_ENDPOINT"],
        region_name=region,
        aws_access_key_id=ENV["CV_AK"],
        aws_secret_access_key=ENV["CV_SK"],
        # parameter_validation stays on: the URI must pass botocore's own checks.
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                      connect_timeout=5, read_timeout=60),
    )


def aws(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": ENV["CV_AK"], "AWS_SECRET_ACCESS_KEY": ENV["CV_SK"],
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": "",
    })
    cmd = [ENV["CV_AWS"], "--endpoint-url", ENV["CV_ENDPOINT"], "--region", ENV["CV_OTHER_REGION"],
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


def scratch(name, data):
    p = os.path.join(ENV["CV_SCRATCH"], name)
    with open(p, "wb") as f:
        f.write(data)
    return "fileb://" + p


def one_store(kms, what, **kw):
    stores = kms.describe_custom_key_stores(**kw)["CustomKeyStores"]
    eq(len(stores), 1, f"{what}: number of stores")
    return stores[0]


def state(kms, store):
    s = one_store(kms, f"describe {store}", CustomKeyStoreId=store)
    return s["ConnectionState"], s.get("ConnectionErrorCode")


def main():
    t0 = time.monotonic()
    kms = client(ENV["CV_REGION"])
    ex = kms.exceptions

    step("botocore's client-side checks on CloudHsmClusterId")
    shape = kms.meta.service_model.shape_for("CloudHsmClusterIdType").metadata
    check(len(URI) > shape["max"], f"the URI ({len(URI)}) is within the model's max {shape['max']}: nothing shown")
    try:
        kms.create_custom_key_store(CustomKeyStoreName="short", CloudHsmClusterId="pkcs11:token=x",
                                    KeyStorePassword=PIN)
        fail("botocore sent a CloudHsmClusterId under its min length")
    except ParamValidationError as e:
        check("valid min length: 19" in str(e), f"botocore's refusal: {e}")

    step("create and delete a store with no keys")
    temp = kms.create_custom_key_store(CustomKeyStoreName="temporary", CloudHsmClusterId=URI,
                                       KeyStorePassword=PIN, CustomKeyStoreType="AWS_CLOUDHSM")
    temp = temp["CustomKeyStoreId"]
    check(STORE_ID.match(temp), f"CustomKeyStoreId {temp!r}")
    eq(state(kms, temp), ("DISCONNECTED", None), "a new store")
    kms.delete_custom_key_store(CustomKeyStoreId=temp)
    raises(ex.CustomKeyStoreNotFoundException, "describe a deleted store", kms.describe_custom_key_stores,
           CustomKeyStoreId=temp)
    raises(ex.CustomKeyStoreNotFoundException, "delete a deleted store", kms.delete_custom_key_store,
           CustomKeyStoreId=temp)

    step("create_custom_key_store with a wrong password")
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    store = kms.create_custom_key_store(CustomKeyStoreName="boto3-store", CloudHsmClusterId=URI,
                                        KeyStorePassword=WRONG, CustomKeyStoreType="AWS_CLOUDHSM")
    store = store["CustomKeyStoreId"]
    check(STORE_ID.match(store), f"CustomKeyStoreId {store!r}")
    check(store != temp, "a deleted store's id was given again")
    s = one_store(kms, "describe by id", CustomKeyStoreId=store)
    eq(s["CustomKeyStoreId"], store, "CustomKeyStoreId")
    eq(s["CustomKeyStoreName"], "boto3-store", "CustomKeyStoreName")
    eq(s["CloudHsmClusterId"], URI, "CloudHsmClusterId")
    eq(s["CustomKeyStoreType"], "AWS_CLOUDHSM", "CustomKeyStoreType")
    eq(s["ConnectionState"], "DISCONNECTED", "ConnectionState")
    check("ConnectionErrorCode" not in s, f"ConnectionErrorCode on a disconnected store: {s!r}")
    check(isinstance(s["CreationDate"], datetime.datetime), f"CreationDate {s['CreationDate']!r}")
    check(before <= s["CreationDate"] <= datetime.datetime.now(datetime.timezone.utc),
          f"CreationDate {s['CreationDate']!r} is not now")
    check("KeyStorePassword" not in json.dumps(s, default=str), "the password member is described")
    eq(one_store(kms, "describe by name", CustomKeyStoreName="boto3-store")["CustomKeyStoreId"], store,
       "describe by name")
    everything = kms.describe_custom_key_stores()
    eq(([x["CustomKeyStoreId"] for x in everything["CustomKeyStores"]], everything["Truncated"]),
       ([store], False), "describe all: the stores, Truncated")
    paged = [x["CustomKeyStoreId"] for page in kms.get_paginator("describe_custom_key_stores").paginate(
        PaginationConfig={"PageSize": 1}) for x in page["CustomKeyStores"]]
    eq(paged, [store], "describe_custom_key_stores through boto3's paginator")

    step("AWS's bounds on the password (botocore checks only the minimum)")
    raises("ValidationException", "a 33-character KeyStorePassword", kms.create_custom_key_store,
           message="keyStorePassword", CustomKeyStoreName="long-pin", CloudHsmClusterId=URI,
           KeyStorePassword="p" * 33)

    step("one name per store, one store per token")
    raises(ex.CustomKeyStoreNameInUseException, "a second store named boto3-store", kms.create_custom_key_store,
           CustomKeyStoreName="boto3-store", CloudHsmClusterId=URI, KeyStorePassword=PIN)
    raises(ex.CloudHsmClusterInUseException, "a second store on the token", kms.create_custom_key_store,
           message=store, CustomKeyStoreName="another", CloudHsmClusterId=URI, KeyStorePassword=PIN)
    raises(ex.CloudHsmClusterNotFoundException, "a token that does not exist", kms.create_custom_key_store,
           CustomKeyStoreName="absent", KeyStorePassword=PIN,
           CloudHsmClusterId=URI.replace("token=", "token=absent-", 1))

    step("no external key stores")
    raises(ex.UnsupportedOperationException, "CustomKeyStoreType EXTERNAL_KEY_STORE", kms.create_custom_key_store,
           CustomKeyStoreName="xks", CustomKeyStoreType="EXTERNAL_KEY_STORE",
           XksProxyUriEndpoint="https://xks.example.com", XksProxyUriPath="/kms/xks/v1",
           XksProxyConnectivity="PUBLIC_ENDPOINT",
           XksProxyAuthenticationCredential={"AccessKeyId": "A" * 20, "RawSecretAccessKey": "B" * 43})

    step("keys only in a connected store")
    raises(ex.CustomKeyStoreInvalidStateException, "create_key in a DISCONNECTED store", kms.create_key,
           Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)

    step("connect with the wrong password: FAILED, INVALID_CREDENTIALS")
    eq(kms.connect_custom_key_store(CustomKeyStoreId=store)["ResponseMetadata"]["HTTPStatusCode"], 200,
       "connect_custom_key_store")
    eq(state(kms, store), ("FAILED", "INVALID_CREDENTIALS"), "after a connect with a wrong password")
    raises(ex.CustomKeyStoreInvalidStateException, "connect a FAILED store", kms.connect_custom_key_store,
           message="is FAILED (INVALID_CREDENTIALS", CustomKeyStoreId=store)
    raises(ex.CustomKeyStoreInvalidStateException, "create_key in a FAILED store", kms.create_key,
           message="INVALID_CREDENTIALS", Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)
    raises(ex.CustomKeyStoreInvalidStateException, "a new password while not DISCONNECTED",
           kms.update_custom_key_store, CustomKeyStoreId=store, KeyStorePassword=PIN)

    step("disconnect, fix the password, rename, connect")
    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    eq(state(kms, store), ("DISCONNECTED", None), "after disconnect")
    raises(ex.CustomKeyStoreInvalidStateException, "disconnect a DISCONNECTED store",
           kms.disconnect_custom_key_store, CustomKeyStoreId=store)
    kms.update_custom_key_store(CustomKeyStoreId=store, KeyStorePassword=PIN)
    kms.update_custom_key_store(CustomKeyStoreId=store, NewCustomKeyStoreName="boto3-renamed")
    eq(one_store(kms, "describe by the new name", CustomKeyStoreName="boto3-renamed")["CustomKeyStoreId"],
       store, "describe by the new name")
    raises(ex.CustomKeyStoreNotFoundException, "describe by the old name", kms.describe_custom_key_stores,
           CustomKeyStoreName="boto3-store")
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    eq(state(kms, store), ("CONNECTED", None), "after connect with the right password")
    # Connecting a CONNECTED store succeeds, as AWS.
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    eq(state(kms, store), ("CONNECTED", None), "after a second connect")

    step("create_key(Origin=AWS_CLOUDHSM) and describe_key")
    meta = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store, Description="in the token")["KeyMetadata"]
    key, arn = meta["KeyId"], meta["Arn"]
    eq(meta["Origin"], "AWS_CLOUDHSM", "create_key: Origin")
    eq(meta["CustomKeyStoreId"], store, "create_key: CustomKeyStoreId")
    eq(meta["CloudHsmClusterId"], URI, "create_key: CloudHsmClusterId")
    eq((meta["KeySpec"], meta["KeyUsage"], meta["KeyState"], meta["KeyManager"]),
       ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Enabled", "CUSTOMER"), "create_key: spec, usage, state, manager")
    d = kms.describe_key(KeyId=key)["KeyMetadata"]
    eq((d["Origin"], d["CustomKeyStoreId"], d["CloudHsmClusterId"], d["Description"]),
       ("AWS_CLOUDHSM", store, URI, "in the token"), "describe_key")
    raises("ValidationException", "Origin=AWS_CLOUDHSM without a store", kms.create_key,
           Origin="AWS_CLOUDHSM")
    raises(ex.CustomKeyStoreNotFoundException, "create_key in an unknown store", kms.create_key,
           Origin="AWS_CLOUDHSM", CustomKeyStoreId=UNKNOWN)

    step("encrypt, decrypt, generate_data_key, re_encrypt on the token's key")
    ctx = {"purpose": "custom key store"}
    plaintext = b"sealed in softhsm \x00\xff" + os.urandom(16)
    enc = kms.encrypt(KeyId=key, Plaintext=plaintext, EncryptionContext=ctx)
    eq(enc["KeyId"], arn, "encrypt: KeyId")
    blob = enc["CiphertextBlob"]
    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
    eq((dec["Plaintext"], dec["KeyId"]), (plaintext, arn), "decrypt")
    eq(kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, KeyId=key)["Plaintext"], plaintext,
       "decrypt naming the key")
    raises(ex.InvalidCiphertextException, "decrypt with another context", kms.decrypt,
           CiphertextBlob=blob, EncryptionContext={"purpose": "other"})
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    raises(ex.InvalidCiphertextException, "decrypt a tampered blob", kms.decrypt,
           CiphertextBlob=tampered, EncryptionContext=ctx)
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ctx)
    eq((len(dk["Plaintext"]), dk["KeyId"]), (32, arn), "generate_data_key")
    eq(kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"], dk["Plaintext"],
       "decrypt of the data key")
    wo = kms.generate_data_key_without_plaintext(KeyId=key, NumberOfBytes=64, EncryptionContext=ctx)
    eq(len(kms.decrypt(CiphertextBlob=wo["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"]), 64,
       "generate_data_key_without_plaintext, decrypted")
    embedded = kms.create_key(Description="embedded")["KeyMetadata"]
    eq(embedded["Origin"], "AWS_KMS", "an embedded key's Origin")
    check("CustomKeyStoreId" not in embedded, f"an embedded key has a CustomKeyStoreId: {embedded!r}")
    out = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx,
                         DestinationKeyId=embedded["KeyId"], DestinationEncryptionContext=ctx)
    eq((out["SourceKeyId"], out["KeyId"]), (arn, embedded["Arn"]), "re_encrypt to the embedded key")
    back = kms.re_encrypt(CiphertextBlob=out["CiphertextBlob"], SourceEncryptionContext=ctx,
                          DestinationKeyId=key, DestinationEncryptionContext=ctx)
    eq((back["SourceKeyId"], back["KeyId"]), (embedded["Arn"], arn), "re_encrypt back into the token's key")
    eq(kms.decrypt(CiphertextBlob=back["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"], plaintext,
       "decrypt after two re_encrypts")

    step("generate_random(CustomKeyStoreId)")
    a = kms.generate_random(NumberOfBytes=32, CustomKeyStoreId=store)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=1024, CustomKeyStoreId=store)["Plaintext"]
    eq((len(a), len(b)), (32, 1024), "generate_random lengths")
    check(a != b[:32], "two draws from the token are equal")
    raises(ex.CustomKeyStoreNotFoundException, "generate_random from an unknown store", kms.generate_random,
           NumberOfBytes=8, CustomKeyStoreId=UNKNOWN)

    step("a CONNECTED store: renamed yes; new password or deletion no")
    kms.update_custom_key_store(CustomKeyStoreId=store, NewCustomKeyStoreName="boto3-connected")
    eq(one_store(kms, "renamed while connected", CustomKeyStoreId=store)["CustomKeyStoreName"],
       "boto3-connected", "the name after a rename while connected")
    eq(kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"], plaintext, "decrypt after the rename")
    raises(ex.CustomKeyStoreInvalidStateException, "a new password while CONNECTED", kms.update_custom_key_store,
           message="DISCONNECTED", CustomKeyStoreId=store, KeyStorePassword=PIN)
    raises(ex.CustomKeyStoreInvalidStateException, "delete a CONNECTED store", kms.delete_custom_key_store,
           message="DISCONNECTED", CustomKeyStoreId=store)

    step("a DISCONNECTED store's key refuses every operation")
    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    for what, fn, kw in (
        ("encrypt", kms.encrypt, {"KeyId": key, "Plaintext": b"x", "EncryptionContext": ctx}),
        ("decrypt", kms.decrypt, {"CiphertextBlob": blob, "EncryptionContext": ctx}),
        ("generate_data_key", kms.generate_data_key, {"KeyId": key, "KeySpec": "AES_256"}),
        ("re_encrypt", kms.re_encrypt, {"CiphertextBlob": blob, "SourceEncryptionContext": ctx,
                                        "DestinationKeyId": embedded["KeyId"]}),
    ):
        raises(ex.KMSInvalidStateException, f"{what} with the store disconnected", fn,
               message="which is disconnected", **kw)
    raises(ex.CustomKeyStoreInvalidStateException, "generate_random from a DISCONNECTED store",
           kms.generate_random, NumberOfBytes=8, CustomKeyStoreId=store)
    raises(ex.CustomKeyStoreHasCMKsException, "delete a store that has keys", kms.delete_custom_key_store,
           CustomKeyStoreId=store)
    eq(kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"], "Enabled", "the key's state is its own")

    step("unknown store ids")
    for what, fn, kw in (
        ("describe", kms.describe_custom_key_stores, {"CustomKeyStoreId": UNKNOWN}),
        ("describe by name", kms.describe_custom_key_stores, {"CustomKeyStoreName": "no-such-store"}),
        ("connect", kms.connect_custom_key_store, {"CustomKeyStoreId": UNKNOWN}),
        ("disconnect", kms.disconnect_custom_key_store, {"CustomKeyStoreId": UNKNOWN}),
        ("update", kms.update_custom_key_store, {"CustomKeyStoreId": UNKNOWN, "NewCustomKeyStoreName": "x"}),
        ("delete", kms.delete_custom_key_store, {"CustomKeyStoreId": UNKNOWN}),
    ):
        raises(ex.CustomKeyStoreNotFoundException, f"{what} {UNKNOWN}", fn, **kw)

    step("AWS CLI (other region, same token): create, describe, connect, create-key, encrypt")
    created = aws_ok(["create-custom-key-store", "--custom-key-store-name", "cli-store",
                      "--cloud-hsm-cluster-id", URI, "--key-store-password", PIN,
                      "--custom-key-store-type", "AWS_CLOUDHSM"])
    cli_store = created["CustomKeyStoreId"]
    check(STORE_ID.match(cli_store), f"aws kms create-custom-key-store: {created!r}")
    d = aws_ok(["describe-custom-key-stores", "--custom-key-store-id", cli_store])["CustomKeyStores"]
    eq([(x["CustomKeyStoreName"], x["CloudHsmClusterId"], x["ConnectionState"]) for x in d],
       [("cli-store", URI, "DISCONNECTED")], "aws kms describe-custom-key-stores")
    aws_ok(["connect-custom-key-store", "--custom-key-store-id", cli_store])
    d = aws_ok(["describe-custom-key-stores", "--custom-key-store-name", "cli-store"])["CustomKeyStores"]
    eq([x["ConnectionState"] for x in d], ["CONNECTED"], "aws kms describe-custom-key-stores after connect")
    m = aws_ok(["create-key", "--origin", "AWS_CLOUDHSM", "--custom-key-store-id", cli_store])["KeyMetadata"]
    eq((m["Origin"], m["CustomKeyStoreId"], m["CloudHsmClusterId"]), ("AWS_CLOUDHSM", cli_store, URI),
       "aws kms create-key --origin AWS_CLOUDHSM")
    cli_plain = b"through the aws cli " + os.urandom(8)
    e = aws_ok(["encrypt", "--key-id", m["KeyId"], "--plaintext", scratch("pt", cli_plain)])
    eq(e["KeyId"], m["Arn"], "aws kms encrypt: KeyId")
    dec = aws_ok(["decrypt", "--ciphertext-blob", scratch("blob", base64.b64decode(e["CiphertextBlob"]))])
    eq(base64.b64decode(dec["Plaintext"]), cli_plain, "aws kms decrypt")
    r = aws_ok(["generate-random", "--number-of-bytes", "16", "--custom-key-store-id", cli_store])
    eq(len(base64.b64decode(r["Plaintext"])), 16, "aws kms generate-random --custom-key-store-id")
    aws_error("CustomKeyStoreInvalidStateException", ["delete-custom-key-store", "--custom-key-store-id", cli_store])
    aws_ok(["disconnect-custom-key-store", "--custom-key-store-id", cli_store])
    aws_error("KMSInvalidStateException", ["encrypt", "--key-id", m["KeyId"], "--plaintext", scratch("pt2", b"x")])
    aws_error("CustomKeyStoreHasCMKsException", ["delete-custom-key-store", "--custom-key-store-id", cli_store])
    aws_error("CustomKeyStoreNotFoundException", ["connect-custom-key-store", "--custom-key-store-id", UNKNOWN])
    # The boto3 store lives in the other region: this one does not see it.
    eq([x["CustomKeyStoreId"] for x in aws_ok(["describe-custom-key-stores"])["CustomKeyStores"]], [cli_store],
       "aws kms describe-custom-key-stores lists this region's store only")

    print(json.dumps({
        "suite": "custom_key_stores",
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "store_id": store,
        "key_id": key,
        "cli_store_id": cli_store,
        "cli_key_id": m["KeyId"],
        "checks": CHECKS,
        "seconds": round(time.monotonic() - t0, 2),
    }))


if __name__ == "__main__":
    main()
