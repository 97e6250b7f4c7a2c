//! The object store a region archives its snapshots into: any S3-compatible service
//! (AWS S3, Ceph's radosgw, MinIO, moto), named `s3://BUCKET/PREFIX` with an optional
//! endpoint. This module is the only one that speaks to it; it offers the handful of
//! operations the archive format needs, synchronously (each call runs on a private
//! tokio runtime), with the conditional writes that make concurrent machines safe:
//! create-if-absent (`If-None-Match: *`) and replace-if-unchanged (`If-Match: ETAG`).
//!
//! Why object_store (Apache Arrow's): it is the S3 client of DataFusion, delta-rs and
//! others, does SigV4, retries, multipart uploads and conditional puts, and builds in a
//! fraction of the time of aws-sdk-s3 (which brings the Smithy runtime).

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
    WriteMultipart,
};
use serde::{Deserialize, Serialize};

/// Objects at least this large are uploaded in parts (in parallel), as the AWS CLI does
/// from 8 MiB.
pub const MULTIPART_THRESHOLD: usize = 8 << 20;
const PART_SIZE: usize = 8 << 20;

/// What a region (or a command) knows about its snapshot store; kept in
/// `<region>/snapshot-store.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct StoreConfig {
    /// `s3://BUCKET/PREFIX` (the prefix may be empty).
    pub url: String,
    /// An S3-compatible endpoint (`http://HOST:PORT`); none means AWS S3 itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region the store signs for [default: us-east-1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Why a store operation failed, with the store named.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot store {url}: {message}")]
    Config { url: String, message: String },
    #[error("snapshot store {url}: {op} {key}: {message}")]
    Request {
        url: String,
        op: &'static str,
        key: String,
        message: String,
    },
}

impl StoreConfig {
    /// Checks a `s3://BUCKET/PREFIX` url and an optional endpoint.
    pub fn new(
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, StoreError> {
        let cfg = StoreConfig {
            url: url.trim_end_matches('/').to_string(),
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            region: region.map(str::to_string),
        };
        cfg.bucket_and_prefix()?;
        if let Some(e) = &cfg.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(cfg.bad(format!(
                "endpoint '{e}' is not a URL: use http://HOST:PORT or https://HOST"
            )));
        }
        Ok(cfg)
    }

    fn bad(&self, message: String) -> StoreError {
        StoreError::Config {
            url: self.url.clone(),
            message,
        }
    }

    /// The bucket and the key prefix (no leading or trailing '/').
    pub fn bucket_and_prefix(&self) -> Result<(String, String), StoreError> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            self.bad("not an S3 url: name the store as s3://BUCKET/PREFIX".into())
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid_bucket {
            return Err(self.bad(format!(
                "'{bucket}' is not a bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
            )));
        }
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(self.bad(format!("'{prefix}' is not a key prefix")));
        }
        // object_store percent-encodes some characters of a key (`~`, `#`, `%`, `*`,
        // non-ASCII...): the objects would land under another prefix than the one named,
        // and listings would not match it. Refuse such prefixes rather than guess.
        if let Some(c) = prefix.split('/').find_map(|seg| {
            (object_store::path::PathPart::from(seg).as_ref() != seg).then(|| {
                seg.chars()
                    .find(|c| {
                        let mut b = [0u8; 4];
                        let one = c.encode_utf8(&mut b);
                        object_store::path::PathPart::from(&*one).as_ref() != one
                    })
                    .unwrap_or('?')
            })
        }) {
            return Err(self.bad(format!(
                "'{prefix}' is not a key prefix: '{c}' would be stored escaped; use letters, digits and !-_.'()/"
            )));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

/// Credentials for the store, as the AWS SDKs find them.
pub struct StoreCredentials {
    pub access_key_id: String,
    pub secret_access_key: zeroize::Zeroizing<String>,
    pub session_token: Option<zeroize::Zeroizing<String>>,
}

/// A connected store: every key given to it is relative to the configured prefix.
pub struct SnapshotStore {
    cfg: StoreConfig,
    prefix: String,
    s3: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("url", &self.cfg.url)
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

/// An object's bytes and the version tag a conditional replace names.
pub struct Fetched {
    pub bytes: Bytes,
    pub etag: Option<String>,
}

/// What a bounded read found: the object, or the size of one too large to read.
pub enum Bounded {
    Fetched(Fetched),
    TooLarge(u64),
}

impl SnapshotStore {
    pub fn open(cfg: &StoreConfig, creds: StoreCredentials) -> Result<SnapshotStore, StoreError> {
        let (bucket, prefix) = cfg.bucket_and_prefix()?;
        // reqwest's TLS has no crypto provider of its own here (see Cargo.toml): ring, as
        // the server and the KMS client use. Installing twice is harmless.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(cfg.region.as_deref().unwrap_or("us-east-1"))
            .with_access_key_id(&creds.access_key_id)
            .with_secret_access_key(creds.secret_access_key.as_str())
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // A few quick retries: an endpoint that is down should say so in seconds.
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            });
        if let Some(t) = &creds.session_token {
            b = b.with_token(t.as_str());
        }
        if let Some(e) = &cfg.endpoint {
            // An S3-compatible server: path-style requests (no bucket DNS names).
            b = b
                .with_endpoint(e)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(e.starts_with("http://"));
            if e.starts_with("http://") {
                // No TLS to verify: without this the HTTP client loads and parses every CA
                // certificate of the system (the bundle and each file of /etc/ssl/certs),
                // tens of milliseconds on every open, for nothing.
                b = b.with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::NoSystemCertificates),
                    "true",
                );
            }
        }
        let s3 = b.build().map_err(|e| cfg.bad(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| cfg.bad(format!("cannot start the I/O runtime: {e}")))?;
        Ok(SnapshotStore {
            cfg: cfg.clone(),
            prefix,
            s3: Arc::new(s3),
            runtime,
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn fail(&self, op: &'static str, key: &str, e: object_store::Error) -> StoreError {
        // object_store's messages carry the whole retry chain; the first line of the
        // server's answer is what a user can act on.
        let message = match &e {
            // A PUT, a LIST or the start of an upload does not need its object to
            // exist: their 404 is the bucket's (NoSuchBucket).
            object_store::Error::NotFound { .. }
                if matches!(op, "PUT" | "LIST" | "CreateMultipartUpload") =>
            {
                "no such bucket: create it, or check the store's URL".to_string()
            }
            object_store::Error::NotFound { .. } => "no such object".to_string(),
            _ => short(&e.to_string()),
        };
        StoreError::Request {
            url: self.cfg.url.clone(),
            op,
            key: key.to_string(),
            message,
        }
    }

    /// The object's bytes, or None when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Fetched>, StoreError> {
        self.runtime.block_on(self.get_async(key))
    }

    pub async fn get_async(&self, key: &str) -> Result<Option<Fetched>, StoreError> {
        Ok(self
            .get_at_most_async(key, u64::MAX)
            .await?
            .map(|b| match b {
                Bounded::Fetched(f) => f,
                Bounded::TooLarge(_) => unreachable!("no object is larger than u64::MAX bytes"),
            }))
    }

    /// As `get`, but of an object of more than `max` bytes only its size is returned,
    /// known from the answer's headers before any of its body is read: a huge object
    /// where a chunk is expected must not be read into memory.
    pub fn get_at_most(&self, key: &str, max: u64) -> Result<Option<Bounded>, StoreError> {
        self.runtime.block_on(self.get_at_most_async(key, max))
    }

    pub async fn get_at_most_async(
        &self,
        key: &str,
        max: u64,
    ) -> Result<Option<Bounded>, StoreError> {
        let path = self.path(key);
        match self.s3.get(&path).await {
            Ok(r) => {
                if r.meta.size > max {
                    // Dropping the answer closes its body unread.
                    return Ok(Some(Bounded::TooLarge(r.meta.size)));
                }
                let etag = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(|e| self.fail("GET", key, e))?;
                Ok(Some(Bounded::Fetched(Fetched { bytes, etag })))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("GET", key, e)),
        }
    }

    /// Writes (or overwrites) an object; large ones go up in parallel parts.
    pub fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.runtime.block_on(self.put_async(key, bytes))
    }

    pub async fn put_async(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key);
        if bytes.len() < MULTIPART_THRESHOLD {
            self.s3
                .put(&path, PutPayload::from_bytes(bytes))
                .await
                .map_err(|e| self.fail("PUT", key, e))?;
            return Ok(());
        }
        let upload = self
            .s3
            .put_multipart(&path)
            .await
            .map_err(|e| self.fail("CreateMultipartUpload", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for part in bytes.chunks(PART_SIZE) {
            w.wait_for_capacity(4)
                .await
                .map_err(|e| self.fail("UploadPart", key, e))?;
            w.write(part);
        }
        w.finish()
            .await
            .map_err(|e| self.fail("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    /// Creates the object only if no object has its key; false if one has.
    pub fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, StoreError> {
        self.conditional(key, bytes, PutMode::Create)
    }

    /// Replaces the object only if it is still the version `etag`; false if it changed.
    pub fn put_if_match(&self, key: &str, bytes: Bytes, etag: &str) -> Result<bool, StoreError> {
        self.conditional(
            key,
            bytes,
            PutMode::Update(UpdateVersion {
                // Unquoted: radosgw 16 compares it verbatim with its bare ETag; moto takes both.
                e_tag: Some(etag.trim_matches('"').to_string()),
                version: None,
            }),
        )
    }

    fn conditional(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<bool, StoreError> {
        let path = self.path(key);
        let updating = matches!(mode, PutMode::Update(_));
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.runtime.block_on(async {
            match self
                .s3
                .put_opts(&path, PutPayload::from_bytes(bytes), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(false),
                // If-Match on an object that is gone: it changed; unless the bucket is
                // what is gone (a listing tells), which no retry would mend.
                Err(object_store::Error::NotFound { .. }) if updating => {
                    match self.s3.list_with_delimiter(Some(&path)).await {
                        Ok(_) => Ok(false),
                        Err(e) => Err(self.fail("PUT", key, e)),
                    }
                }
                Err(e) => Err(self.fail("PUT", key, e)),
            }
        })
    }

    /// Deletes an object (no error if it is already gone).
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        self.runtime.block_on(async {
            match self.s3.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fail("DELETE", key, e)),
            }
        })
    }

    /// Keys (relative to the prefix) under `dir`, e.g. `snapshots`.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let path = self.path(dir);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.runtime.block_on(async {
            let metas: Vec<_> = self
                .s3
                .list(Some(&path))
                .try_collect()
                .await
                .map_err(|e| self.fail("LIST", dir, e))?;
            Ok(metas
                .into_iter()
                .filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(String::from))
                .collect())
        })
    }

    /// Runs `jobs` futures at most `parallel` at a time on the store's runtime and
    /// returns the first error, if any (the rest are dropped, i.e. cancelled).
    pub fn run_parallel<F, E>(
        &self,
        parallel: usize,
        jobs: impl Iterator<Item = F>,
    ) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        self.runtime.block_on(async {
            futures::stream::iter(jobs)
                .buffer_unordered(parallel.max(1))
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        })
    }
}

/// What a user can act on in object_store's error chain (which carries the request, the
/// retries and the XML body): the HTTP status and S3's error code and message, or why no
/// answer came.
fn short(s: &str) -> String {
    let between = |a: &str, b: &str| {
        let i = s.find(a)? + a.len();
        let j = s[i..].find(b)? + i;
        Some(s[i..j].to_string())
    };
    let status = between("status code: ", ":").or_else(|| between("status code: ", "\n"));
    let out = match (status, between("<Code>", "</Code>")) {
        (Some(st), Some(code)) => {
            let msg = between("<Message>", "</Message>").unwrap_or_default();
            format!("HTTP {} {code}: {msg}", st.trim())
        }
        (Some(st), None) => format!("HTTP {}", st.trim()),
        _ if s.contains("error sending request") || s.contains("HTTP error") => {
            "no answer (is the endpoint right, and the server up?)".to_string()
        }
        _ => s.lines().next().unwrap_or(s).to_string(),
    };
    out.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok =
            StoreConfig::new("s3://my-bucket/a/b/", Some("http://127.0.0.1:9000/"), None).unwrap();
        assert_eq!(
            ok.bucket_and_prefix().unwrap(),
            ("my-bucket".into(), "a/b".into())
        );
        assert_eq!(ok.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        let odd = StoreConfig::new("s3://bkt/a-b_c.d/(x)'!=+,@", None, None).unwrap();
        assert_eq!(odd.bucket_and_prefix().unwrap().1, "a-b_c.d/(x)'!=+,@");
        let root = StoreConfig::new("s3://bkt", None, None).unwrap();
        assert_eq!(root.bucket_and_prefix().unwrap().1, "");
        for (url, why) in [
            ("/tmp/x", "not an S3 url"),
            ("s3://B", "not a bucket name"),
            ("s3://ab/x", "not a bucket name"),
            ("s3://bucket/../x", "not a key prefix"),
            ("s3://bucket/a//b", "not a key prefix"),
            // Characters the S3 client would escape: the objects would not be where named.
            ("s3://bucket/team~a", "not a key prefix"),
            ("s3://bucket/a#1/b", "not a key prefix"),
            ("s3://bucket/50%off", "not a key prefix"),
            ("s3://bucket/équipe", "not a key prefix"),
            ("s3://bucket/a*", "not a key prefix"),
        ] {
            let e = StoreConfig::new(url, None, None).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
        let e = StoreConfig::new("s3://bucket", Some("localhost:9000"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a URL"), "{e}");
    }
}
