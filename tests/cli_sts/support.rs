//! What the tests of `cli_sts.rs` share: signed KMS and STS requests over raw HTTP (the
//! crate's SigV4 signer, with a session token when the credentials have one), and the
//! roles, policies and access keys they set up through the CLI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use cryptvol::aws::sigv4::{self, Credentials, RequestParts};
use serde_json::{Value, json};

use super::common::*;

// ---- HTTP ----------------------------------------------------------------------------

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
}

impl Resp {
    /// The KMS error code (`__type`) or STS's (`<Code>`); empty on success.
    pub fn code(&self) -> String {
        if self.status == 200 {
            return String::new();
        }
        if let Ok(v) = serde_json::from_str::<Value>(&self.body) {
            return v["__type"].as_str().unwrap_or("").to_string();
        }
        xml(&self.body, "Code")
    }

    #[track_caller]
    pub fn ok(&self) -> &Resp {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }
}

pub fn xml(body: &str, name: &str) -> String {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    body.split_once(&open)
        .and_then(|(_, r)| r.split_once(&close))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

/// Temporary or long-term credentials.
#[derive(Debug, Clone)]
pub struct Creds {
    pub id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl Creds {
    pub fn from_cli(v: &Value) -> Creds {
        let c = &v["Credentials"];
        Creds {
            id: str_field(c, "AccessKeyId"),
            secret: str_field(c, "SecretAccessKey"),
            token: Some(str_field(c, "SessionToken")),
        }
    }

    pub fn from_xml(body: &str) -> Creds {
        Creds {
            id: xml(body, "AccessKeyId"),
            secret: xml(body, "SecretAccessKey"),
            token: Some(xml(body, "SessionToken")),
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Creds {
        Creds {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }
}

/// One signed request to `addr`: KMS (`op` = `TrentService.X`) or STS (`op` = None, form body).
pub fn signed(addr: &str, op: Option<&str>, body: &str, c: &Creds) -> Resp {
    let (service, mut headers) = match op {
        Some(op) => (
            "kms",
            vec![
                ("Content-Type".into(), "application/x-amz-json-1.1".into()),
                ("X-Amz-Target".into(), format!("TrentService.{op}")),
            ],
        ),
        None => (
            "sts",
            vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
        ),
    };
    headers.push(("Host".to_string(), "127.0.0.1".to_string()));
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
    };
    let creds = Credentials {
        access_key_id: &c.id,
        secret_access_key: &c.secret,
        session_token: c.token.as_deref(),
    };
    headers.extend(sigv4::sign(
        &parts,
        &creds,
        DEFAULT_REGION,
        service,
        SystemTime::now(),
    ));
    let mut r = "POST / HTTP/1.1\r\n".to_string();
    for (k, v) in &headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(r.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Resp {
        status,
        body: body.to_string(),
    }
}

pub fn kms(addr: &str, op: &str, body: Value, c: &Creds) -> Resp {
    signed(addr, Some(op), &body.to_string(), c)
}

pub fn sts(addr: &str, form: &str, c: &Creds) -> Resp {
    signed(addr, None, &format!("{form}&Version=2011-06-15"), c)
}

// ---- setup ---------------------------------------------------------------------------

pub fn doc(env: &Env, v: &Value) -> String {
    format!("file://{}", env.file(v.to_string().as_bytes()).display())
}

pub fn allow(actions: &[&str], resource: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": resource}]})
}

pub fn trust(principal: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]})
}

pub fn create_role(env: &Env, name: &str, trust_doc: Option<&Value>) -> String {
    let mut args = vec!["iam", "create-role", "--role-name", name];
    let d = trust_doc.map(|t| doc(env, t));
    if let Some(d) = &d {
        args.extend(["--assume-role-policy-document", d.as_str()]);
    }
    str_field(&env.json(&args)["Role"], "Arn")
}

pub fn put_policy(env: &Env, kind: &str, name: &str, policy: &Value) {
    let d = doc(env, policy);
    let (cmd, flag) = match kind {
        "user" => ("put-user-policy", "--user-name"),
        _ => ("put-role-policy", "--role-name"),
    };
    env.ok(&[
        "iam",
        cmd,
        flag,
        name,
        "--policy-name",
        "p",
        "--policy-document",
        &d,
    ]);
}

pub fn access_key(env: &Env, user: &str) -> Creds {
    let k = env.json(&["iam", "create-access-key", "--user-name", user]);
    let c = Creds {
        id: str_field(&k["AccessKey"], "AccessKeyId"),
        secret: str_field(&k["AccessKey"], "SecretAccessKey"),
        token: None,
    };
    env.add_secret(c.secret.as_bytes());
    c
}

pub fn assume(env: &Env, who: &str, arn: &str, session: &str) -> Value {
    let args = [
        "sts",
        "assume-role",
        "--role-arn",
        arn,
        "--role-session-name",
        session,
    ];
    env.json(&as_(who, &args))
}

/// Percent-encoding for a form value (ARNs: `:` and `/`).
pub fn enc(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}
