//! TEMPORARY stub with the agreed API; replaced by the audit branch.
#![allow(unused)]
use crate::crypto::Key256;
use std::path::PathBuf;
pub struct AuditLog {
    dir: PathBuf,
}
impl AuditLog {
    pub fn new(dir: PathBuf, mac_key: Key256) -> AuditLog {
        AuditLog { dir }
    }
    pub fn append(&self, event: &serde_json::Value, now: i64) -> Result<u64, AuditError> {
        Ok(0)
    }
    pub fn seal(&self, now: i64) -> Result<Option<SealSummary>, AuditError> {
        Ok(None)
    }
    pub fn sync(&self) -> Result<(), AuditError> {
        Ok(())
    }
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        todo!()
    }
    pub fn events(&self) -> Result<Vec<(u64, serde_json::Value)>, AuditError> {
        Ok(vec![])
    }
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct SealSummary;
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyReport {
    pub valid: bool,
    pub files: usize,
    pub sealed_files: usize,
    pub events: u64,
    pub last_seq: u64,
    pub problem: Option<Problem>,
}
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Problem {
    pub message: String,
}
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("io {path:?}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt")]
    Corrupt { path: PathBuf, message: String },
    #[error("not an object")]
    NotAnObject,
}
