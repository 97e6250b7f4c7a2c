#!/usr/bin/env python3
"""boto3's secretsmanager client and the real `aws secretsmanager` against `cryptvol kms
serve` (run by tests/compat_secretsmanager.rs): every operation with its real values
checked against AWS Secrets Manager's documented behaviour (ARNs, versions and staging
labels, idempotent ClientRequestTokens, filters and paging, deletion and recovery,
random passwords, resource policies, a customer managed KMS key), and the refusals with
AWS's exception classes (botocore's modelled ones, so the server's `__type` must be one
botocore knows).

Each step runs on after a failed check, so that one run reports every failure; the suite
exits 1 if any check failed, naming each with its step.

Environment (all required):
  CV_AWS               the aws executable
  CV_ENDPOINT          http://127.0.0.1:PORT
  CV_REGION            the region of boto3's and most of the CLI's requests
  CV_OTHER_REGION      another initialized region
  CV_AK / CV_SK        alice: kms:* and secretsmanager:* by identity policy
  CV_DENIED_AK / CV_DENIED_SK / CV_DENIED_ARN
                       bob: secretsmanager:* by identity policy (a secret's resource
                       policy denies him its value)
  CV_SCRATCH           a directory (outside the data dir) for the AWS CLI's files

On success, one JSON summary line on stdout: the secret values the suite created (for
the test to look for them where they must not be), the ARNs and versions of the secret
under a customer managed key (for the KMS trail), and the counts.
"""

import base64
import datetime
import json
import os
import re
import secrets as pyrandom
import string
import subprocess
import sys
import time
import traceback
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

E = {k: os.environ[k] for k in (
    "CV_AWS", "CV_ENDPOINT", "CV_REGION", "CV_OTHER_REGION", "CV_AK", "CV_SK",
    "CV_DENIED_AK", "CV_DENIED_SK", "CV_DENIED_ARN", "CV_SCRATCH")}
REGION, OTHER = E["CV_REGION"], E["CV_OTHER_REGION"]

STEP = "start"
CHECKS = 0
FAILURES = []
# Every secret value the suite stores (strings, and binaries as bytes).
VALUES = []
BINARIES = []
# What the summary reports.
OUT = {}
STARTED = datetime.datetime.now(datetime.timezone.utc)
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class StepFailed(Exception):
    pass


def fail(msg):
    """A failure that ends the step (the suite goes on with the next)."""
    FAILURES.append(f"[{STEP}] {msg}")
    raise StepFailed(msg)


def check(cond, msg):
    """A failed check is recorded; the step goes on."""
    global CHECKS
    CHECKS += 1
    if not cond:
        FAILURES.append(f"[{STEP}] {msg}")
    return bool(cond)


def eq(got, want, what):
    return check(got == want, f"{what}: got {got!r}, want {want!r}")


def value(tag):
    v = f"sm-{tag}-{pyrandom.token_hex(12)}"
    VALUES.append(v)
    return v


def binary():
    b = b"\x00\xff\x10" + os.urandom(29)
    BINARIES.append(b)
    return b


def arn_pattern(region, name):
    return re.compile(r"^arn:aws:secretsmanager:" + re.escape(region) + r":\d{12}:secret:"
                      + re.escape(name) + r"-[A-Za-z0-9]{6}$")


def client(ak=None, sk=None, region=REGION, validate=True, service="secretsmanager"):
    return boto3.session.Session().client(
        service, endpoint_url=E["CV_ENDPOINT"], region_name=region,
        aws_access_key_id=ak or E["CV_AK"], aws_secret_access_key=sk or E["CV_SK"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                      connect_timeout=5, read_timeout=60, parameter_validation=validate))


def name_of(exc):
    return exc if isinstance(exc, str) else exc.__name__


def raises(exc, what, fn, message=None, **kw):
    """fn(**kw) must fail with `exc`: a botocore modelled exception class or a code, or a
    tuple of them where AWS's documentation does not say which of them."""
    options = exc if isinstance(exc, tuple) else (exc,)
    try:
        r = fn(**kw)
    except ClientError as e:
        err = e.response.get("Error", {})
        got = err.get("Code")
        # By name: a client made without parameter validation has classes of its own.
        check(got in [name_of(o) for o in options],
              f"{what}: raised {type(e).__name__} ({got}: {err.get('Message')!r}), "
              f"not {' or '.join(name_of(o) for o in options)}")
        check(bool(err.get("Message")), f"{what}: no message")
        for v in VALUES:
            check(v not in str(e.response), f"{what}: a secret value in the error {e.response!r}")
        if message is not None:
            check(message.lower() in err.get("Message", "").lower(),
                  f"{what}: message {err.get('Message')!r} lacks {message!r}")
        return e
    fail(f"{what}: expected {' or '.join(name_of(o) for o in options)}, but it succeeded: {r!r}")


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def recent(t, what, slack=60):
    check(isinstance(t, datetime.datetime) and abs((now() - t).total_seconds()) < slack,
          f"{what}: {t!r} is not now")


def stages(sm, sid):
    return {k: sorted(v) for k, v in sm.describe_secret(SecretId=sid).get("VersionIdsToStages", {}).items()}


# ---- raw requests (what boto3 will not send) ------------------------------------------

def raw_call(target, body, service="secretsmanager", ak=None, sk=None):
    """POSTs `body` with X-Amz-Target `target`, signed for `service`; (status, JSON)."""
    data = json.dumps(body).encode()
    req = AWSRequest(method="POST", url=E["CV_ENDPOINT"] + "/", data=data, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    SigV4Auth(Credentials(ak or E["CV_AK"], sk or E["CV_SK"]), service, REGION).add_auth(req)
    prepared = urllib.request.Request(E["CV_ENDPOINT"] + "/", data=data, method="POST",
                                      headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


# ---- the AWS CLI ---------------------------------------------------------------------

def aws(args, region=REGION):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": E["CV_AK"], "AWS_SECRET_ACCESS_KEY": E["CV_SK"],
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1", "AWS_PAGER": "",
    })
    cmd = [E["CV_AWS"], "--endpoint-url", E["CV_ENDPOINT"], "--region", region,
           "--output", "json", "secretsmanager"] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def aws_ok(args, region=REGION):
    code, out, err = aws(args, region)
    if code != 0:
        fail(f"`aws secretsmanager {' '.join(args)}` exited {code}: {err.strip()}")
    return json.loads(out) if out.strip() else {}


def aws_error(code_name, args, region=REGION):
    code, out, err = aws(args, region)
    check(code in (254, 255) and code_name in err,
          f"`aws secretsmanager {' '.join(args)}`: expected exit 254/255 and {code_name}, "
          f"got {code}: {err.strip()!r}")
    for v in VALUES:
        check(v not in err, f"`aws secretsmanager {args[0]}`: a secret value in stderr")
    return err


def scratch(name, data):
    p = os.path.join(E["CV_SCRATCH"], name)
    with open(p, "wb") as f:
        f.write(data)
    return "fileb://" + p


# ---- the steps -----------------------------------------------------------------------

S = {}  # what the steps share


def create_and_get(sm, ex):
    t1 = str(uuid.uuid4())
    v1 = value("db-v1")
    before = now() - datetime.timedelta(seconds=5)
    r = sm.create_secret(Name="app/db-password", SecretString=v1, ClientRequestToken=t1,
                         Description="the database password",
                         Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "storage"}])
    arn = r["ARN"]
    check(arn_pattern(REGION, "app/db-password").match(arn), f"create_secret: ARN {arn!r}")
    eq((r["Name"], r["VersionId"]), ("app/db-password", t1), "create_secret: Name, VersionId")
    check("SecretString" not in r, f"create_secret echoes the value: {r!r}")
    S.update(db=arn, t1=t1, v1=v1)
    for sid in ("app/db-password", arn):
        g = sm.get_secret_value(SecretId=sid)
        eq((g["ARN"], g["Name"], g["VersionId"], g["SecretString"], g["VersionStages"]),
           (arn, "app/db-password", t1, v1, ["AWSCURRENT"]), f"get_secret_value({sid})")
        check("SecretBinary" not in g, f"get_secret_value: a SecretBinary on a string secret: {g!r}")
        check(isinstance(g["CreatedDate"], datetime.datetime) and before <= g["CreatedDate"] <= now(),
              f"get_secret_value: CreatedDate {g['CreatedDate']!r}")
    eq(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"], v1, "by stage AWSCURRENT")
    partial = arn[:-7]
    eq(sm.get_secret_value(SecretId=partial)["SecretString"], v1, f"by the partial ARN {partial}")
    eq(sm.get_secret_value(SecretId=arn, VersionId=t1)["SecretString"], v1, "by version id")
    eq(sm.get_secret_value(SecretId=arn, VersionId=t1, VersionStage="AWSCURRENT")["VersionId"], t1,
       "by version id and its stage")

    step("create_secret: a binary secret")
    b1 = binary()
    r = sm.create_secret(Name="app/tls-key", SecretBinary=b1)
    check(arn_pattern(REGION, "app/tls-key").match(r["ARN"]), f"create_secret binary: ARN {r['ARN']!r}")
    check(UUID.match(r["VersionId"]), f"create_secret binary: VersionId {r['VersionId']!r} (boto3's token)")
    g = sm.get_secret_value(SecretId="app/tls-key")
    eq((g["SecretBinary"], g["VersionId"]), (b1, r["VersionId"]), "get_secret_value: SecretBinary")
    check("SecretString" not in g, f"a SecretString on a binary secret: {g!r}")
    S.update(tls=r["ARN"], b1=b1)
    check(r["ARN"] != arn, "two secrets share an ARN")

    step("create_secret: a duplicate name, and bad input")
    raises(ex.ResourceExistsException, "a second app/db-password", sm.create_secret,
           Name="app/db-password", SecretString=value("dup"))
    raw = client(validate=False)
    raises(ex.InvalidParameterException, "both SecretString and SecretBinary", raw.create_secret,
           Name="app/both", SecretString=value("both"), SecretBinary=b"x" * 8)
    raises(ex.ResourceNotFoundException, "the duplicate created nothing", sm.describe_secret,
           SecretId="app/both")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v1, "the duplicate left the value")

    step("create_secret: names and sizes AWS refuses")
    for what, kw in (("a name with a space", {"Name": "bad name", "SecretString": "x" * 12}),
                     ("a name of 513 characters", {"Name": "n" * 513, "SecretString": "x" * 12}),
                     ("a SecretString over 65536 bytes", {"Name": "app/huge", "SecretString": "x" * 65537})):
        raises((ex.InvalidParameterException, "ValidationException"), what, raw.create_secret, **kw)
    raises(ex.ResourceNotFoundException, "the huge secret was not made", sm.describe_secret, SecretId="app/huge")

    step("create_secret with no value: a secret without versions")
    r = sm.create_secret(Name="app/empty", Description="no value yet")
    check("VersionId" not in r, f"create_secret without a value has a VersionId: {r!r}")
    d = sm.describe_secret(SecretId="app/empty")
    check(not d.get("VersionIdsToStages"), f"a secret without value has versions: {d!r}")
    raises(ex.ResourceNotFoundException, "get_secret_value of a secret without value", sm.get_secret_value,
           SecretId="app/empty")


def put_versions(sm, ex):
    arn, t1, v1 = S["db"], S["t1"], S["v1"]
    t2, v2 = str(uuid.uuid4()), value("db-v2")
    r = sm.put_secret_value(SecretId=arn, SecretString=v2, ClientRequestToken=t2)
    eq((r["ARN"], r["Name"], r["VersionId"], r["VersionStages"]),
       (arn, "app/db-password", t2, ["AWSCURRENT"]), "put_secret_value")
    eq(stages(sm, arn), {t1: ["AWSPREVIOUS"], t2: ["AWSCURRENT"]}, "AWSCURRENT moved, AWSPREVIOUS onto the old")
    step("put_secret_value: the same token and value again is the same version")
    r = sm.put_secret_value(SecretId=arn, SecretString=v2, ClientRequestToken=t2)
    eq((r["VersionId"], sorted(r["VersionStages"])), (t2, ["AWSCURRENT"]), "put_secret_value repeated")
    eq(stages(sm, arn), {t1: ["AWSPREVIOUS"], t2: ["AWSCURRENT"]}, "no new version after the repeat")
    eq(len(sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]), 2,
       "versions after the repeat")
    step("put_secret_value: the same token with another value")
    raises(ex.ResourceExistsException, "the same ClientRequestToken, another value", sm.put_secret_value,
           SecretId=arn, SecretString=value("db-other"), ClientRequestToken=t2)
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v2, "the value after the refused put")
    step("get_secret_value by stage and by version id")
    g = sm.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")
    eq((g["SecretString"], g["VersionId"], g["VersionStages"]), (v1, t1, ["AWSPREVIOUS"]), "AWSPREVIOUS")
    eq(sm.get_secret_value(SecretId=arn, VersionId=t1)["SecretString"], v1, "VersionId of the previous")
    eq(sm.get_secret_value(SecretId=arn, VersionId=t2)["SecretString"], v2, "VersionId of the current")
    eq(sm.get_secret_value(SecretId="app/db-password")["SecretString"], v2, "the current by name")
    raises(ex.ResourceNotFoundException, "an unknown VersionId", sm.get_secret_value,
           SecretId=arn, VersionId=str(uuid.uuid4()))
    raises(ex.ResourceNotFoundException, "an unknown VersionStage", sm.get_secret_value,
           SecretId=arn, VersionStage="NOSUCHSTAGE")
    step("put_secret_value: a third value, staged under a label of ours only")
    t3, v3 = str(uuid.uuid4()), value("db-v3")
    r = sm.put_secret_value(SecretId=arn, SecretString=v3, ClientRequestToken=t3, VersionStages=["STAGING"])
    eq((r["VersionId"], r["VersionStages"]), (t3, ["STAGING"]), "put_secret_value VersionStages=[STAGING]")
    eq(stages(sm, arn), {t1: ["AWSPREVIOUS"], t2: ["AWSCURRENT"], t3: ["STAGING"]}, "with STAGING")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v2, "AWSCURRENT stays")
    eq(sm.get_secret_value(SecretId=arn, VersionStage="STAGING")["SecretString"], v3, "by stage STAGING")
    S.update(t2=t2, v2=v2, t3=t3, v3=v3)
    step("put_secret_value: a binary version")
    tb, b2 = str(uuid.uuid4()), binary()
    r = sm.put_secret_value(SecretId=S["tls"], SecretBinary=b2, ClientRequestToken=tb)
    eq(r["VersionId"], tb, "binary put_secret_value")
    eq(sm.get_secret_value(SecretId=S["tls"])["SecretBinary"], b2, "the binary current")
    eq(sm.get_secret_value(SecretId=S["tls"], VersionStage="AWSPREVIOUS")["SecretBinary"], S["b1"],
       "the binary previous")


def version_stages(sm, ex):
    arn, t1, t2, t3 = S["db"], S["t1"], S["t2"], S["t3"]
    step("update_secret_version_stage: AWSCURRENT to the STAGING version")
    r = sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", RemoveFromVersionId=t2,
                                       MoveToVersionId=t3)
    eq((r["ARN"], r["Name"]), (arn, "app/db-password"), "update_secret_version_stage")
    eq(stages(sm, arn), {t2: ["AWSPREVIOUS"], t3: ["AWSCURRENT", "STAGING"]},
       "AWSPREVIOUS follows to the version AWSCURRENT left; t1 has no label left")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], S["v3"], "the new current value")
    step("update_secret_version_stage: AWSCURRENT cannot be moved without naming where from")
    raises(ex.InvalidParameterException, "move AWSCURRENT without RemoveFromVersionId",
           sm.update_secret_version_stage, SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=t2)
    raises(ex.InvalidParameterException, "RemoveFromVersionId that does not hold the label",
           sm.update_secret_version_stage, SecretId=arn, VersionStage="STAGING",
           RemoveFromVersionId=t2, MoveToVersionId=t1)
    raises((ex.ResourceNotFoundException, ex.InvalidParameterException), "MoveToVersionId unknown",
           sm.update_secret_version_stage,
           SecretId=arn, VersionStage="STAGING", RemoveFromVersionId=t3, MoveToVersionId=str(uuid.uuid4()))
    step("update_secret_version_stage: remove a label")
    sm.update_secret_version_stage(SecretId=arn, VersionStage="STAGING", RemoveFromVersionId=t3)
    eq(stages(sm, arn), {t2: ["AWSPREVIOUS"], t3: ["AWSCURRENT"]}, "STAGING removed")
    step("list_secret_version_ids")
    v = sm.list_secret_version_ids(SecretId=arn)
    eq((v["ARN"], v["Name"]), (arn, "app/db-password"), "list_secret_version_ids: ARN, Name")
    got = {x["VersionId"]: sorted(x.get("VersionStages", [])) for x in v["Versions"]}
    eq(got, {t2: ["AWSPREVIOUS"], t3: ["AWSCURRENT"]}, "list_secret_version_ids: versions with labels")
    for x in v["Versions"]:
        recent(x.get("CreatedDate"), f"version {x['VersionId']}: CreatedDate", 600)
    v = sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)
    got = {x["VersionId"]: sorted(x.get("VersionStages", [])) for x in v["Versions"]}
    eq(got, {t1: [], t2: ["AWSPREVIOUS"], t3: ["AWSCURRENT"]}, "IncludeDeprecated: the unlabelled t1 too")
    pages, token = [], None
    for _ in range(10):
        p = sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True, MaxResults=1,
                                       **({"NextToken": token} if token else {}))
        check(len(p["Versions"]) <= 1, f"MaxResults=1: {p['Versions']!r}")
        pages.append([x["VersionId"] for x in p["Versions"]])
        token = p.get("NextToken")
        if not token:
            break
    eq(sorted(sum(pages, [])), sorted([t1, t2, t3]), f"list_secret_version_ids 1 a page: {pages!r}")
    eq(sm.get_secret_value(SecretId=arn, VersionId=t1)["SecretString"], S["v1"],
       "an unlabelled version is still read by its id")


def update_and_describe(sm, ex):
    arn = S["db"]
    step("update_secret: description only (no new version, even with boto3's token)")
    before = stages(sm, arn)
    r = sm.update_secret(SecretId=arn, Description="the new description")
    eq((r["ARN"], r["Name"]), (arn, "app/db-password"), "update_secret: ARN, Name")
    check("VersionId" not in r, f"update_secret without a value made a version: {r!r}")
    eq(stages(sm, arn), before, "versions after a description update")
    step("update_secret: a new value")
    v4 = value("db-v4")
    r = sm.update_secret(SecretId="app/db-password", SecretString=v4)
    t4 = r.get("VersionId", "")
    check(UUID.match(t4), f"update_secret with a value: VersionId {t4!r}")
    eq(stages(sm, arn), {S["t3"]: ["AWSPREVIOUS"], t4: ["AWSCURRENT"]}, "after update_secret with a value")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v4, "the updated value")
    S.update(t4=t4, v4=v4)
    step("describe_secret")
    d = sm.describe_secret(SecretId="app/db-password")
    eq((d["ARN"], d["Name"], d["Description"]), (arn, "app/db-password", "the new description"),
       "describe_secret: ARN, Name, Description")
    eq(sorted((t["Key"], t["Value"]) for t in d.get("Tags", [])), [("env", "prod"), ("team", "storage")],
       "describe_secret: Tags")
    check("KmsKeyId" not in d, f"describe_secret: a KmsKeyId on a secret under the default key: {d.get('KmsKeyId')!r}")
    check("DeletedDate" not in d, f"describe_secret: a DeletedDate: {d!r}")
    check(not d.get("RotationEnabled"), f"describe_secret: RotationEnabled {d.get('RotationEnabled')!r}")
    recent(d.get("CreatedDate"), "describe_secret: CreatedDate", 600)
    recent(d.get("LastChangedDate"), "describe_secret: LastChangedDate", 120)
    la = d.get("LastAccessedDate")
    # Kept to the day (AWS's): the day the suite began or a later one, not the future.
    day = STARTED.replace(hour=0, minute=0, second=0, microsecond=0)
    check(isinstance(la, datetime.datetime) and day <= la <= now(),
          f"describe_secret: LastAccessedDate {la!r} is not today")
    for v in VALUES:
        check(v not in json.dumps(d, default=str), "describe_secret shows a value")
    step("the wire: epoch-second numbers and AWS's headers")
    body = S["raw"].get("DescribeSecret")
    if check(body is not None, "no raw DescribeSecret response was captured"):
        raw = json.loads(body)
        for f in ("CreatedDate", "LastChangedDate", "LastAccessedDate"):
            check(isinstance(raw.get(f), (int, float)) and not isinstance(raw.get(f), bool),
                  f"DescribeSecret's {f} on the wire is {raw.get(f)!r}, not epoch seconds")
        for k, stg in raw.get("VersionIdsToStages", {}).items():
            check(isinstance(stg, list), f"VersionIdsToStages[{k}] is {stg!r}")
    h = d["ResponseMetadata"]["HTTPHeaders"]
    eq(h.get("content-type"), "application/x-amz-json-1.1", "content-type")
    check(UUID.match(h.get("x-amzn-requestid", "")), f"x-amzn-requestid {h.get('x-amzn-requestid')!r}")
    st, err, _ = raw_call("secretsmanager.GetSecretValue", {"SecretId": "no/such/secret"})
    eq((st, err.get("__type")), (400, "ResourceNotFoundException"), f"the raw error envelope {err!r}")
    check(isinstance(err.get("message") or err.get("Message"), str), f"the raw error has no message: {err!r}")


def tags(sm, ex):
    arn = S["db"]
    sm.tag_resource(SecretId=arn, Tags=[{"Key": "cost-center", "Value": "42"}, {"Key": "env", "Value": "staging"}])
    eq(sorted((t["Key"], t["Value"]) for t in sm.describe_secret(SecretId=arn)["Tags"]),
       [("cost-center", "42"), ("env", "staging"), ("team", "storage")], "tag_resource: added, env replaced")
    sm.untag_resource(SecretId="app/db-password", TagKeys=["env", "no-such-tag"])
    eq(sorted((t["Key"], t["Value"]) for t in sm.describe_secret(SecretId=arn)["Tags"]),
       [("cost-center", "42"), ("team", "storage")], "untag_resource")
    raises(ex.ResourceNotFoundException, "tag_resource of an unknown secret", sm.tag_resource,
           SecretId="no/such/secret", Tags=[{"Key": "a", "Value": "b"}])
    raises(ex.ResourceNotFoundException, "untag_resource of an unknown secret", sm.untag_resource,
           SecretId="no/such/secret", TagKeys=["a"])


def listing(sm, ex):
    made = {}
    for name, desc, tag in (("list/alpha", "First of three", {"Key": "tier", "Value": "gold"}),
                            ("list/beta", "Second of three", {"Key": "tier", "Value": "silver"}),
                            ("list/gamma", "Third of three", {"Key": "owner", "Value": "ops"})):
        made[name] = sm.create_secret(Name=name, SecretString=value(name.replace("/", "-")),
                                      Description=desc, Tags=[tag])["ARN"]
        # Apart in CreatedDate, which SortOrder sorts by.
        time.sleep(1.1)
    S["listed"] = made

    def names(**kw):
        out, token, calls = [], None, 0
        while True:
            args = dict(kw)
            if token:
                args["NextToken"] = token
            r = sm.list_secrets(**args)
            calls += 1
            out += [s["Name"] for s in r["SecretList"]]
            token = r.get("NextToken")
            if not token or calls > 50:
                return sorted(out), calls

    step("list_secrets: every secret, with its members")
    everything = sm.list_secrets(MaxResults=100)
    byname = {s["Name"]: s for s in everything["SecretList"]}
    for n in ("app/db-password", "app/tls-key", "app/empty", "list/alpha", "list/beta", "list/gamma"):
        check(n in byname, f"list_secrets lacks {n}: {sorted(byname)}")
    a = byname.get("list/alpha", {})
    eq((a.get("ARN"), a.get("Description"), [(t["Key"], t["Value"]) for t in a.get("Tags", [])]),
       (made["list/alpha"], "First of three", [("tier", "gold")]), "list_secrets: list/alpha's entry")
    check(isinstance(a.get("SecretVersionsToStages"), dict)
          and sorted(sum(a["SecretVersionsToStages"].values(), [])) == ["AWSCURRENT"],
          f"list_secrets: SecretVersionsToStages {a.get('SecretVersionsToStages')!r}")
    for v in VALUES:
        check(v not in json.dumps(everything, default=str), "list_secrets shows a value")
    step("list_secrets: Filters")
    eq(names(Filters=[{"Key": "name", "Values": ["list/"]}])[0], ["list/alpha", "list/beta", "list/gamma"],
       "name prefix list/")
    eq(names(Filters=[{"Key": "name", "Values": ["list/b"]}])[0], ["list/beta"], "name prefix list/b")
    eq(names(Filters=[{"Key": "name", "Values": ["LIST/B"]}])[0], [], "name prefix, case-sensitive")
    eq(names(Filters=[{"Key": "tag-key", "Values": ["tier"]}])[0], ["list/alpha", "list/beta"], "tag-key tier")
    eq(names(Filters=[{"Key": "tag-value", "Values": ["ops"]}])[0], ["list/gamma"], "tag-value ops")
    eq(names(Filters=[{"Key": "description", "Values": ["third"]}])[0], ["list/gamma"],
       "description prefix, not case-sensitive")
    eq(names(Filters=[{"Key": "name", "Values": ["list/"]}, {"Key": "tag-key", "Values": ["tier"]}])[0],
       ["list/alpha", "list/beta"], "two filters: both must match")
    eq(names(Filters=[{"Key": "name", "Values": ["list/alpha", "list/gamma"]}])[0],
       ["list/alpha", "list/gamma"], "two values of one filter: either matches")
    eq(names(Filters=[{"Key": "name", "Values": ["list/"]}, {"Key": "name", "Values": ["!list/b"]}])[0],
       ["list/alpha", "list/gamma"], "a negated value (!)")
    eq(names(Filters=[{"Key": "all", "Values": ["silver"]}])[0], ["list/beta"], "all: a tag value")
    eq(names(Filters=[{"Key": "all", "Values": ["SILVER"]}])[0], ["list/beta"], "all: not case-sensitive")
    eq(names(Filters=[{"Key": "tag-value", "Values": ["OPS"]}])[0], [], "tag-value: case-sensitive")
    eq(names(Filters=[{"Key": "name", "Values": ["nothing-matches"]}])[0], [], "no match")
    raw = client(validate=False)
    raises((ex.InvalidParameterException, "ValidationException"), "an unknown filter key", raw.list_secrets,
           Filters=[{"Key": "colour", "Values": ["x"]}])
    step("list_secrets: paging with MaxResults and NextToken")
    got, calls = names(MaxResults=1, Filters=[{"Key": "name", "Values": ["list/"]}])
    eq(got, ["list/alpha", "list/beta", "list/gamma"], "MaxResults=1, every page")
    check(calls >= 3, f"MaxResults=1 over 3 secrets took {calls} calls")
    first = sm.list_secrets(MaxResults=2, Filters=[{"Key": "name", "Values": ["list/"]}])
    eq(len(first["SecretList"]), 2, "MaxResults=2: the first page")
    check(bool(first.get("NextToken")), f"MaxResults=2 of 3: no NextToken: {first!r}")
    raises(ex.InvalidNextTokenException, "a forged NextToken", sm.list_secrets,
           MaxResults=2, NextToken="forged-token-" + "A" * 20)
    pages = list(sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": ["list/"]}], PaginationConfig={"PageSize": 2}))
    eq(sorted(s["Name"] for p in pages for s in p["SecretList"]), ["list/alpha", "list/beta", "list/gamma"],
       "boto3's paginator, 2 a page")
    check(len(pages) >= 2, f"boto3's paginator made {len(pages)} pages of 2 for 3 secrets")
    step("list_secrets: SortOrder")
    asc = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": ["list/"]}],
                                              SortOrder="asc")["SecretList"]]
    desc = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": ["list/"]}],
                                               SortOrder="desc")["SecretList"]]
    eq((asc, desc), (["list/alpha", "list/beta", "list/gamma"], ["list/gamma", "list/beta", "list/alpha"]),
       "SortOrder asc and desc (by CreatedDate)")


def deletion(sm, ex):
    raw = client(validate=False)
    arn = S["listed"]["list/beta"]
    step("delete_secret: bounds of RecoveryWindowInDays")
    for days in (6, 31):
        raises(ex.InvalidParameterException, f"RecoveryWindowInDays={days}", raw.delete_secret,
               SecretId=arn, RecoveryWindowInDays=days)
    raises(ex.InvalidParameterException, "a window and ForceDeleteWithoutRecovery", raw.delete_secret,
           SecretId=arn, RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True)
    check("DeletedDate" not in sm.describe_secret(SecretId=arn), "a refused deletion deleted")
    step("delete_secret with a 7-day window")
    r = sm.delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    eq((r["ARN"], r["Name"]), (arn, "list/beta"), "delete_secret: ARN, Name")
    due = now() + datetime.timedelta(days=7)
    check(abs((r["DeletionDate"] - due).total_seconds()) < 120, f"DeletionDate {r['DeletionDate']!r}, want ~{due}")
    d = sm.describe_secret(SecretId=arn)
    recent(d.get("DeletedDate"), "describe_secret of a deleted secret: DeletedDate")
    step("a secret scheduled for deletion: no value operations")
    raises(ex.InvalidRequestException, "get_secret_value of a deleted secret", sm.get_secret_value, SecretId=arn)
    raises(ex.InvalidRequestException, "put_secret_value on a deleted secret", sm.put_secret_value,
           SecretId=arn, SecretString=value("deleted"))
    raises(ex.InvalidRequestException, "update_secret of a deleted secret", sm.update_secret,
           SecretId=arn, Description="x")
    raises(ex.InvalidRequestException, "delete_secret again", sm.delete_secret, SecretId=arn,
           RecoveryWindowInDays=7)
    raises(ex.InvalidRequestException, "create_secret with the name of a secret scheduled for deletion",
           sm.create_secret, Name="list/beta", SecretString=value("beta-again"))
    listed = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": ["list/"]}])["SecretList"]]
    eq(sorted(listed), ["list/alpha", "list/gamma"], "list_secrets leaves out a secret scheduled for deletion")
    planned = sm.list_secrets(IncludePlannedDeletion=True, Filters=[{"Key": "name", "Values": ["list/"]}])
    beta = [s for s in planned["SecretList"] if s["Name"] == "list/beta"]
    check(len(beta) == 1 and "DeletedDate" in beta[0], f"IncludePlannedDeletion: {planned['SecretList']!r}")
    step("restore_secret")
    r = sm.restore_secret(SecretId="list/beta")
    eq((r["ARN"], r["Name"]), (arn, "list/beta"), "restore_secret")
    check("DeletedDate" not in sm.describe_secret(SecretId=arn), "DeletedDate after restore")
    check(sm.get_secret_value(SecretId=arn)["SecretString"].startswith("sm-list-beta-"), "the value after restore")
    step("delete_secret with the default window (30 days)")
    r = sm.delete_secret(SecretId=arn)
    due = now() + datetime.timedelta(days=30)
    check(abs((r["DeletionDate"] - due).total_seconds()) < 120, f"default DeletionDate {r['DeletionDate']!r}")
    sm.restore_secret(SecretId=arn)
    step("delete_secret ForceDeleteWithoutRecovery")
    gamma = S["listed"]["list/gamma"]
    r = sm.delete_secret(SecretId=gamma, ForceDeleteWithoutRecovery=True)
    eq((r["ARN"], r["Name"]), (gamma, "list/gamma"), "force delete: ARN, Name")
    recent(r["DeletionDate"], "force delete: DeletionDate")
    raises(ex.ResourceNotFoundException, "describe_secret after a force delete", sm.describe_secret, SecretId=gamma)
    raises(ex.ResourceNotFoundException, "restore_secret after a force delete", sm.restore_secret, SecretId=gamma)
    r = sm.create_secret(Name="list/gamma", SecretString=value("gamma-again"))
    check(r["ARN"] != gamma and arn_pattern(REGION, "list/gamma").match(r["ARN"]),
          f"the name again after a force delete: {r['ARN']!r} (was {gamma!r})")
    raises(ex.ResourceNotFoundException, "the old ARN does not name the new secret", sm.get_secret_value,
           SecretId=gamma)


def not_found(sm, ex):
    unknown = "no/such/secret"
    fake_arn = S["db"][:-len("app/db-password-XXXXXX")] + "app/db-password-ZZZZZZ"
    for what, fn, kw in (
        ("get_secret_value", sm.get_secret_value, {"SecretId": unknown}),
        ("get_secret_value by an ARN of another suffix", sm.get_secret_value, {"SecretId": fake_arn}),
        ("describe_secret", sm.describe_secret, {"SecretId": unknown}),
        ("put_secret_value", sm.put_secret_value, {"SecretId": unknown, "SecretString": "x" * 12}),
        ("update_secret", sm.update_secret, {"SecretId": unknown, "Description": "x"}),
        ("delete_secret", sm.delete_secret, {"SecretId": unknown}),
        ("restore_secret", sm.restore_secret, {"SecretId": unknown}),
        ("list_secret_version_ids", sm.list_secret_version_ids, {"SecretId": unknown}),
        ("update_secret_version_stage", sm.update_secret_version_stage,
         {"SecretId": unknown, "VersionStage": "X", "MoveToVersionId": str(uuid.uuid4())}),
        ("get_resource_policy", sm.get_resource_policy, {"SecretId": unknown}),
        ("put_resource_policy", sm.put_resource_policy, {"SecretId": unknown, "ResourcePolicy": json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": {"AWS": E["CV_DENIED_ARN"]},
                                                    "Action": "secretsmanager:*", "Resource": "*"}]})}),
        ("delete_resource_policy", sm.delete_resource_policy, {"SecretId": unknown}),
    ):
        raises(ex.ResourceNotFoundException, f"{what} of {kw['SecretId']}", fn, **kw)


def random_password(sm, ex):
    p = sm.get_random_password()["RandomPassword"]
    eq(len(p), 32, "the default length")
    allowed = string.ascii_letters + string.digits + PUNCTUATION
    check(all(c in allowed for c in p), f"default password {p!r}: characters outside the default set")
    for cls, name in ((string.ascii_lowercase, "lowercase"), (string.ascii_uppercase, "uppercase"),
                      (string.digits, "digit"), (PUNCTUATION, "punctuation")):
        check(any(c in cls for c in p), f"default password {p!r} has no {name} (RequireEachIncludedType)")
    check(" " not in p, "a space without IncludeSpace")
    many = {sm.get_random_password(PasswordLength=20)["RandomPassword"] for _ in range(5)}
    check(len(many) == 5 and all(len(x) == 20 for x in many), f"5 passwords of 20: {many!r}")
    p = sm.get_random_password(PasswordLength=64, ExcludeCharacters="abcdefABCDEF012345", ExcludePunctuation=True)[
        "RandomPassword"]
    eq(len(p), 64, "PasswordLength=64")
    check(not set(p) & set("abcdefABCDEF012345" + PUNCTUATION), f"{p!r}: excluded characters")
    check(all(c.isalnum() and c.isascii() for c in p), f"{p!r}: not alphanumeric")
    p = sm.get_random_password(PasswordLength=40, ExcludeNumbers=True, ExcludeUppercase=True,
                               ExcludePunctuation=True)["RandomPassword"]
    check(len(p) == 40 and all(c in string.ascii_lowercase for c in p), f"lowercase only: {p!r}")
    p = sm.get_random_password(PasswordLength=30, ExcludeLowercase=True, ExcludeUppercase=True,
                               ExcludePunctuation=True)["RandomPassword"]
    check(len(p) == 30 and all(c in string.digits for c in p), f"digits only: {p!r}")
    p = sm.get_random_password(PasswordLength=50, IncludeSpace=True, RequireEachIncludedType=True)["RandomPassword"]
    check(len(p) == 50 and " " in p, f"IncludeSpace with RequireEachIncludedType: {p!r}")
    p = sm.get_random_password(PasswordLength=4, RequireEachIncludedType=True)["RandomPassword"]
    check(len(p) == 4 and any(c.islower() for c in p) and any(c.isupper() for c in p)
          and any(c.isdigit() for c in p) and any(c in PUNCTUATION for c in p), f"4 of 4 types: {p!r}")
    raw = client(validate=False)
    # Out of the model's range: AWS's model validation (ValidationException) or its own.
    raises((ex.InvalidParameterException, "ValidationException"), "PasswordLength=4097",
           raw.get_random_password, PasswordLength=4097)
    raises((ex.InvalidParameterException, "ValidationException"), "PasswordLength=0",
           raw.get_random_password, PasswordLength=0)
    raises(ex.InvalidParameterException, "every class excluded", raw.get_random_password,
           ExcludeLowercase=True, ExcludeUppercase=True, ExcludeNumbers=True, ExcludePunctuation=True)
    eq(len(sm.get_random_password(PasswordLength=4096)["RandomPassword"]), 4096, "PasswordLength=4096")


def resource_policy(sm, ex):
    bob = client(E["CV_DENIED_AK"], E["CV_DENIED_SK"])
    arn = S["db"]
    step("bob reads the secret while no resource policy denies him")
    eq(bob.get_secret_value(SecretId=arn)["SecretString"], S["v4"], "bob's read before the policy")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "NoValueForBob", "Effect": "Deny", "Principal": {"AWS": E["CV_DENIED_ARN"]},
        "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}
    step("validate_resource_policy")
    v = sm.validate_resource_policy(SecretId=arn, ResourcePolicy=json.dumps(policy))
    eq((v["PolicyValidationPassed"], v.get("ValidationErrors", [])), (True, []), "validate_resource_policy")
    v = sm.validate_resource_policy(ResourcePolicy=json.dumps(policy))
    eq(v["PolicyValidationPassed"], True, "validate_resource_policy without a SecretId")
    # Not JSON: AWS documents MalformedPolicyDocumentException for the operation, and a
    # SYNTAX check among its results; either is a refusal.
    try:
        v = sm.validate_resource_policy(ResourcePolicy="{not json")
        check(v["PolicyValidationPassed"] is False and v.get("ValidationErrors"),
              f"validate a policy that is not JSON: {v!r}")
    except ex.MalformedPolicyDocumentException:
        pass
    step("put_resource_policy and get_resource_policy")
    r = sm.put_resource_policy(SecretId=arn, ResourcePolicy=json.dumps(policy))
    eq((r["ARN"], r["Name"]), (arn, "app/db-password"), "put_resource_policy")
    g = sm.get_resource_policy(SecretId="app/db-password")
    eq((g["ARN"], g["Name"], json.loads(g["ResourcePolicy"])), (arn, "app/db-password", policy),
       "get_resource_policy")
    raises(ex.MalformedPolicyDocumentException, "put a policy that is not JSON", sm.put_resource_policy,
           SecretId=arn, ResourcePolicy="{not json")
    public = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}
    raises(ex.PublicPolicyException, "a public policy with BlockPublicPolicy", sm.put_resource_policy,
           SecretId=arn, ResourcePolicy=json.dumps(public), BlockPublicPolicy=True)
    eq(json.loads(sm.get_resource_policy(SecretId=arn)["ResourcePolicy"]), policy, "the policy after refusals")
    step("the policy denies bob the value, not the description")
    raises("AccessDeniedException", "bob's get_secret_value under the deny", bob.get_secret_value, SecretId=arn)
    eq(bob.describe_secret(SecretId=arn)["ARN"], arn, "bob's describe_secret under the deny")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], S["v4"], "alice still reads")
    step("delete_resource_policy")
    r = sm.delete_resource_policy(SecretId=arn)
    eq((r["ARN"], r["Name"]), (arn, "app/db-password"), "delete_resource_policy")
    g = sm.get_resource_policy(SecretId=arn)
    check("ResourcePolicy" not in g, f"get_resource_policy after delete: {g!r}")
    eq(bob.get_secret_value(SecretId=arn)["SecretString"], S["v4"], "bob reads again")


def customer_key(sm, ex):
    kms = client(service="kms")
    meta = kms.create_key(Description="for secrets")["KeyMetadata"]
    key, key_arn = meta["KeyId"], meta["Arn"]
    kms.create_alias(AliasName="alias/secrets-cmk", TargetKeyId=key)
    OUT.update(cmk=key_arn)
    step("create_secret with KmsKeyId")
    v, t = value("cmk"), str(uuid.uuid4())
    r = sm.create_secret(Name="cmk/secret", SecretString=v, KmsKeyId=key_arn, ClientRequestToken=t)
    arn = r["ARN"]
    d = sm.describe_secret(SecretId=arn)
    check(d.get("KmsKeyId") in (key, key_arn), f"describe_secret: KmsKeyId {d.get('KmsKeyId')!r}, want {key_arn}")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v, "the value under the customer key")
    OUT.update(cmk_secret=arn, cmk_versions=[t], cmk_create_request_id=r["ResponseMetadata"]["RequestId"])
    step("put_secret_value under the customer key, then the key disabled")
    t2, v2 = str(uuid.uuid4()), value("cmk-2")
    sm.put_secret_value(SecretId=arn, SecretString=v2, ClientRequestToken=t2)
    OUT["cmk_versions"].append(t2)
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v2, "the second value")
    kms.disable_key(KeyId=key)
    raises(ex.DecryptionFailure, "get_secret_value with the key disabled", sm.get_secret_value, SecretId=arn)
    raises(ex.EncryptionFailure, "put_secret_value with the key disabled", sm.put_secret_value,
           SecretId=arn, SecretString=value("cmk-disabled"))
    kms.enable_key(KeyId=key)
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v2, "the value with the key enabled again")
    step("the managed key alias/aws/secretsmanager: only through Secrets Manager")
    aliases = [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    check("alias/aws/secretsmanager" in aliases, f"no alias/aws/secretsmanager after secrets were made: {aliases}")
    raises("AccessDeniedException", "a direct GenerateDataKey on alias/aws/secretsmanager", kms.generate_data_key,
           KeyId="alias/aws/secretsmanager", KeySpec="AES_256")
    step("bob may use Secrets Manager but not the customer key: no value for him")
    bob = client(E["CV_DENIED_AK"], E["CV_DENIED_SK"])
    eq(bob.describe_secret(SecretId=arn)["ARN"], arn, "bob describes the secret under the customer key")
    raises(("AccessDeniedException", ex.DecryptionFailure), "bob's get_secret_value without kms:Decrypt",
           bob.get_secret_value, SecretId=arn)
    step("a secret under the key's alias")
    r = sm.create_secret(Name="cmk/by-alias", SecretString=value("cmk-alias"), KmsKeyId="alias/secrets-cmk")
    check(sm.get_secret_value(SecretId=r["ARN"])["SecretString"].startswith("sm-cmk-alias-"), "by alias")
    step("update_secret to another key: the next version is under it")
    other = kms.create_key(Description="second key")["KeyMetadata"]
    v3 = value("cmk-3")
    r = sm.update_secret(SecretId=arn, KmsKeyId=other["Arn"], SecretString=v3)
    OUT["cmk_other"] = other["Arn"]
    OUT["cmk_other_version"] = r.get("VersionId")
    check(sm.describe_secret(SecretId=arn).get("KmsKeyId") in (other["KeyId"], other["Arn"]), "the new KmsKeyId")
    eq(sm.get_secret_value(SecretId=arn)["SecretString"], v3, "the value under the second key")


def rotation(sm, ex):
    arn = S["db"]
    lam = f"arn:aws:lambda:{REGION}:123456789012:function:rotate-db"
    e = raises(ex.InvalidParameterException, "rotate_secret with a RotationLambdaARN", sm.rotate_secret,
               SecretId=arn, RotationLambdaARN=lam, RotationRules={"AutomaticallyAfterDays": 30})
    msg = e.response["Error"]["Message"]
    check("lambda" in msg.lower() or "rotation" in msg.lower(), f"the refusal does not say why: {msg!r}")
    d = sm.describe_secret(SecretId=arn)
    check(not d.get("RotationEnabled") and "RotationLambdaARN" not in d, f"rotation after the refusal: {d!r}")
    step("RotationCommand over the network: refused by the server, not run")
    marker = os.path.join(E["CV_SCRATCH"], "rotation-ran")
    st, err, _ = raw_call("secretsmanager.RotateSecret", {
        "SecretId": arn, "RotationCommand": f"/bin/touch {marker}",
        "RotationRules": {"AutomaticallyAfterDays": 1}})
    eq((st, err.get("__type")), (400, "InvalidParameterException"), f"RotationCommand: {err!r}")
    check("/bin/touch" not in json.dumps(err), f"the command is echoed: {err!r}")
    time.sleep(0.5)
    check(not os.path.exists(marker), "the rotation command ran")
    eq(stages(sm, arn), {S["t3"]: ["AWSPREVIOUS"], S["t4"]: ["AWSCURRENT"]}, "no rotation happened")


def protocol(sm, ex):
    st, err, _ = raw_call("secretsmanager.GetSecretValues", {"SecretId": S["db"]})
    eq((st, err.get("__type")), (400, "UnknownOperationException"), f"an unknown operation: {err!r}")
    st, err, _ = raw_call("secretsmanager.ListSecrets", {}, service="kms")
    eq((st, err.get("__type")), (400, "InvalidSignatureException"), f"signed for kms: {err!r}")
    check("'secretsmanager'" in err.get("message", ""), f"the scope refusal: {err!r}")
    st, err, _ = raw_call("TrentService.ListKeys", {}, service="secretsmanager")
    eq((st, err.get("__type")), (400, "InvalidSignatureException"), f"KMS signed for secretsmanager: {err!r}")
    st, ok, _ = raw_call("TrentService.ListKeys", {}, service="kms")
    eq(st, 200, f"KMS on the same port: {ok!r}")
    step("temporary credentials from the same port's STS sign Secrets Manager requests")
    sts = client(service="sts")
    c = sts.get_session_token(DurationSeconds=900)["Credentials"]
    OUT["session_key"] = c["AccessKeyId"]
    temp = boto3.session.Session().client(
        "secretsmanager", endpoint_url=E["CV_ENDPOINT"], region_name=REGION,
        aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"], config=Config(retries={"total_max_attempts": 1}))
    eq(temp.get_secret_value(SecretId=S["db"])["SecretString"], S["v4"], "a read with session credentials")
    bad = boto3.session.Session().client(
        "secretsmanager", endpoint_url=E["CV_ENDPOINT"], region_name=REGION,
        aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"][:-4] + "AAAA", config=Config(retries={"total_max_attempts": 1}))
    raises("UnrecognizedClientException", "a tampered session token", bad.get_secret_value, SecretId=S["db"])
    st, err, _ = raw_call("secretsmanager.ListSecrets", {}, ak="AKIAUNKNOWNKEY000001", sk="x" * 40)
    eq((st, err.get("__type")), (400, "UnrecognizedClientException"), f"an unknown access key: {err!r}")


def concurrency(sm, ex):
    """Clients at once on one secret: each answer is whole, and the labels end consistent."""
    from concurrent.futures import ThreadPoolExecutor
    clients = [client() for _ in range(8)]

    def create(i):
        try:
            return clients[i].create_secret(Name="race/one", SecretString=value(f"race-create-{i}"))["ARN"]
        except ClientError as e:
            return e.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(create, range(8)))
    arns = [g for g in got if g.startswith("arn:")]
    eq((len(arns), sorted(g for g in got if not g.startswith("arn:"))), (1, ["ResourceExistsException"] * 7),
       f"8 creates of one name at once: {got!r}")
    if not arns:
        return
    arn = arns[0]
    tokens = [str(uuid.uuid4()) for _ in range(8)]
    vals = [value(f"race-put-{i}") for i in range(8)]

    def put(i):
        r = clients[i].put_secret_value(SecretId=arn, SecretString=vals[i], ClientRequestToken=tokens[i])
        return r["VersionId"]

    with ThreadPoolExecutor(8) as pool:
        eq(sorted(pool.map(put, range(8))), sorted(tokens), "8 puts at once: their versions")
    st = stages(sm, arn)
    current = [k for k, v in st.items() if "AWSCURRENT" in v]
    previous = [k for k, v in st.items() if "AWSPREVIOUS" in v]
    check(len(current) == 1 and len(previous) == 1 and current != previous,
          f"after 8 puts at once: one AWSCURRENT, one AWSPREVIOUS: {st!r}")
    if current:
        eq(sm.get_secret_value(SecretId=arn)["SecretString"], vals[tokens.index(current[0])]
           if current[0] in tokens else None, "the current value is the current version's")
    all_versions = sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]
    eq(len(all_versions), 9, "versions after 8 puts at once")
    for i in (0, 5):
        eq(sm.get_secret_value(SecretId=arn, VersionId=tokens[i])["SecretString"], vals[i],
           f"version {i} holds its own value")
    t, v = str(uuid.uuid4()), value("race-same")

    def same(i):
        try:
            return clients[i].put_secret_value(SecretId=arn, SecretString=v, ClientRequestToken=t)["VersionId"]
        except ClientError as e:
            return e.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        eq(list(pool.map(same, range(8))), [t] * 8, "8 puts of one token and value at once: one version")
    eq(len(sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]), 10,
       "one version more after the 8 identical puts")


def aws_cli(sm, ex):
    step("aws secretsmanager create-secret, get-secret-value")
    v1, t1 = value("cli-1"), str(uuid.uuid4())
    r = aws_ok(["create-secret", "--name", "cli/secret", "--secret-string", v1, "--client-request-token", t1,
                "--description", "made by the CLI", "--tags", "Key=made-by,Value=cli"])
    arn = r["ARN"]
    check(arn_pattern(REGION, "cli/secret").match(arn), f"aws create-secret: ARN {arn!r}")
    eq(r["VersionId"], t1, "aws create-secret: VersionId")
    g = aws_ok(["get-secret-value", "--secret-id", "cli/secret"])
    eq((g["SecretString"], g["VersionId"], g["VersionStages"], g["ARN"]), (v1, t1, ["AWSCURRENT"], arn),
       "aws get-secret-value")
    check(isinstance(g["CreatedDate"], (str, int, float)), f"aws get-secret-value: CreatedDate {g['CreatedDate']!r}")
    step("aws put-secret-value --secret-binary, and its token twice")
    b, t2 = binary(), str(uuid.uuid4())
    blob = scratch("binary", b)
    r = aws_ok(["put-secret-value", "--secret-id", arn, "--secret-binary", blob, "--client-request-token", t2])
    eq((r["VersionId"], r["VersionStages"]), (t2, ["AWSCURRENT"]), "aws put-secret-value")
    r = aws_ok(["put-secret-value", "--secret-id", arn, "--secret-binary", blob, "--client-request-token", t2])
    eq(r["VersionId"], t2, "aws put-secret-value again: the same version")
    aws_error("ResourceExistsException", ["put-secret-value", "--secret-id", arn, "--secret-string",
                                          value("cli-clash"), "--client-request-token", t2])
    g = aws_ok(["get-secret-value", "--secret-id", arn])
    eq(base64.b64decode(g["SecretBinary"]), b, "aws get-secret-value: SecretBinary")
    g = aws_ok(["get-secret-value", "--secret-id", arn, "--version-stage", "AWSPREVIOUS"])
    eq(g["SecretString"], v1, "aws get-secret-value --version-stage AWSPREVIOUS")
    g = aws_ok(["get-secret-value", "--secret-id", arn, "--version-id", t1])
    eq(g["SecretString"], v1, "aws get-secret-value --version-id")
    step("aws describe-secret, update-secret, tag-resource, list-secret-version-ids")
    d = aws_ok(["describe-secret", "--secret-id", arn])
    eq({k: sorted(v) for k, v in d["VersionIdsToStages"].items()}, {t1: ["AWSPREVIOUS"], t2: ["AWSCURRENT"]},
       "aws describe-secret: VersionIdsToStages")
    eq(d["Description"], "made by the CLI", "aws describe-secret: Description")
    aws_ok(["update-secret", "--secret-id", arn, "--description", "changed by the CLI"])
    aws_ok(["tag-resource", "--secret-id", arn, "--tags", "Key=stage,Value=test"])
    aws_ok(["untag-resource", "--secret-id", arn, "--tag-keys", "made-by"])
    d = aws_ok(["describe-secret", "--secret-id", "cli/secret"])
    eq((d["Description"], [(t["Key"], t["Value"]) for t in d.get("Tags", [])]),
       ("changed by the CLI", [("stage", "test")]), "aws update-secret and tags")
    v = aws_ok(["list-secret-version-ids", "--secret-id", arn])
    eq(sorted(x["VersionId"] for x in v["Versions"]), sorted([t1, t2]), "aws list-secret-version-ids")
    aws_ok(["update-secret-version-stage", "--secret-id", arn, "--version-stage", "AWSCURRENT",
            "--remove-from-version-id", t2, "--move-to-version-id", t1])
    eq(aws_ok(["get-secret-value", "--secret-id", arn])["SecretString"], v1, "aws update-secret-version-stage")
    step("aws list-secrets: filters and the CLI's own paging")
    names = [s["Name"] for s in aws_ok(["list-secrets", "--filters", "Key=name,Values=cli/"])["SecretList"]]
    eq(names, ["cli/secret"], "aws list-secrets --filters name")
    names = [s["Name"] for s in aws_ok(["list-secrets", "--filters", "Key=description,Values=changed"])[
        "SecretList"]]
    eq(names, ["cli/secret"], "aws list-secrets --filters description")
    names = [s["Name"] for s in aws_ok(["list-secrets", "--filters", "Key=tag-key,Values=stage"])["SecretList"]]
    eq(names, ["cli/secret"], "aws list-secrets --filters tag-key")
    everything = sorted(s["Name"] for s in aws_ok(["list-secrets"])["SecretList"])
    paged = sorted(s["Name"] for s in aws_ok(["list-secrets", "--page-size", "1"])["SecretList"])
    eq(paged, everything, "aws list-secrets --page-size 1 (the CLI follows NextToken)")
    check(len(everything) >= 5, f"aws list-secrets: {everything!r}")
    first = aws_ok(["list-secrets", "--max-items", "2"])
    eq(len(first["SecretList"]), 2, "aws list-secrets --max-items 2")
    check(bool(first.get("NextToken")), "aws list-secrets --max-items 2: no NextToken")
    step("aws get-random-password")
    p = aws_ok(["get-random-password", "--password-length", "24", "--exclude-punctuation",
                "--exclude-characters", "xyzXYZ"])["RandomPassword"]
    check(len(p) == 24 and all(c.isalnum() and c.isascii() and c not in "xyzXYZ" for c in p),
          f"aws get-random-password: {p!r}")
    step("aws delete-secret, restore-secret, force delete")
    r = aws_ok(["delete-secret", "--secret-id", arn, "--recovery-window-in-days", "7"])
    eq(r["ARN"], arn, "aws delete-secret")
    check(isinstance(r.get("DeletionDate"), (str, int, float)), f"aws delete-secret: DeletionDate {r!r}")
    aws_error("InvalidRequestException", ["get-secret-value", "--secret-id", arn])
    check("DeletedDate" in aws_ok(["describe-secret", "--secret-id", arn]), "aws describe-secret: DeletedDate")
    aws_ok(["restore-secret", "--secret-id", "cli/secret"])
    eq(aws_ok(["get-secret-value", "--secret-id", arn])["SecretString"], v1, "after aws restore-secret")
    aws_ok(["delete-secret", "--secret-id", arn, "--force-delete-without-recovery"])
    aws_error("ResourceNotFoundException", ["describe-secret", "--secret-id", arn])
    aws_error("ResourceNotFoundException", ["get-secret-value", "--secret-id", "cli/no-such-secret"])
    step("the CLI reads boto3's secret, and boto3 the CLI's")
    eq(aws_ok(["get-secret-value", "--secret-id", S["db"]])["SecretString"], S["v4"], "aws reads boto3's secret")
    eq(base64.b64decode(aws_ok(["get-secret-value", "--secret-id", "app/tls-key", "--version-stage",
                                "AWSPREVIOUS"])["SecretBinary"]), S["b1"], "aws reads boto3's binary")
    aws_ok(["create-secret", "--name", "cli/for-boto3", "--secret-string", value("cli-for-boto3")])
    check(sm.get_secret_value(SecretId="cli/for-boto3")["SecretString"].startswith("sm-cli-for-boto3-"),
          "boto3 reads the CLI's secret")
    aws_error("ResourceExistsException", ["create-secret", "--name", "app/db-password", "--secret-string",
                                          value("cli-dup")])
    aws_error("InvalidParameterException", ["rotate-secret", "--secret-id", S["db"], "--rotation-lambda-arn",
                                            f"arn:aws:lambda:{REGION}:123456789012:function:f"])
    step("another region: its own secrets")
    r = aws_ok(["create-secret", "--name", "app/db-password", "--secret-string", value("other-region")], OTHER)
    check(arn_pattern(OTHER, "app/db-password").match(r["ARN"]), f"the other region's ARN {r['ARN']!r}")
    eq(aws_ok(["get-secret-value", "--secret-id", "app/db-password"], OTHER)["SecretString"], VALUES[-1],
       "the other region's value")
    eq(sm.get_secret_value(SecretId="app/db-password")["SecretString"], S["v4"], "this region's, unchanged")
    aws_error("ResourceNotFoundException", ["get-secret-value", "--secret-id", S["db"]], OTHER)
    eq([s["Name"] for s in aws_ok(["list-secrets"], OTHER)["SecretList"]], ["app/db-password"],
       "aws list-secrets in the other region")
    OUT["other_region_secret"] = r["ARN"]


def main():
    global STEP
    t0 = time.monotonic()
    sm = client()
    ex = sm.exceptions
    # The raw body of DescribeSecret's answers, to check the wire format.
    S["raw"] = {}

    def keep(http_response=None, model=None, **_):
        if http_response is not None and http_response.status_code == 200:
            S["raw"][model.name] = http_response.content

    sm.meta.events.register("after-call.secretsmanager.DescribeSecret", keep)

    steps = [
        ("create_secret and get_secret_value", create_and_get),
        ("put_secret_value and versions", put_versions),
        ("staging labels", version_stages),
        ("update_secret and describe_secret", update_and_describe),
        ("tag_resource and untag_resource", tags),
        ("list_secrets", listing),
        ("delete_secret and restore_secret", deletion),
        ("ResourceNotFoundException for unknown ids", not_found),
        ("get_random_password", random_password),
        ("resource policies", resource_policy),
        ("a customer managed KMS key", customer_key),
        ("rotate_secret", rotation),
        ("the protocol", protocol),
        ("clients at once", concurrency),
        ("the AWS CLI", aws_cli),
    ]
    for name, fn in steps:
        STEP = name
        try:
            fn(sm, ex)
        except StepFailed:
            pass
        except Exception as e:  # noqa: BLE001 - every failure is reported, the suite goes on
            here = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            at = f" (line {here[-1].lineno}, in {here[-1].name})" if here else ""
            FAILURES.append(f"[{STEP}] {type(e).__name__}: {e}{at}")
    summary = {
        "suite": "secretsmanager",
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "values": VALUES,
        "binaries_b64": [base64.b64encode(b).decode() for b in BINARIES],
        "db_secret": S.get("db"),
        "checks": CHECKS,
        "failures": FAILURES,
        "seconds": round(time.monotonic() - t0, 2),
    }
    summary.update(OUT)
    if FAILURES:
        print(f"secretsmanager_suite: {len(FAILURES)} failed checks of {CHECKS}:", file=sys.stderr)
        for f in FAILURES:
            print(f"  - {f}", file=sys.stderr)
        print(json.dumps(summary))
        sys.exit(1)
    print(json.dumps(summary))


def step(name):
    global STEP
    STEP = name


if __name__ == "__main__":
    main()
