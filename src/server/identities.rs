//! Access keys → identities, for SigV4: read from `iam.json` once and again only when the
//! file changes (a stat per request), so that a new or deleted key takes effect at once
//! without a JSON parse and an unseal on every request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use crate::aws::AwsError;
use crate::iam::{Identity, IdentityStore};
use crate::sys::fsio::FileStamp;

type Keys = HashMap<String, (Arc<Identity>, Zeroizing<String>)>;

pub struct IdentityCache {
    store: IdentityStore,
    path: PathBuf,
    state: RwLock<(Option<FileStamp>, Arc<Keys>)>,
}

impl IdentityCache {
    pub fn new(store: IdentityStore) -> IdentityCache {
        IdentityCache {
            path: store.path(),
            store,
            state: RwLock::new((None, Arc::new(HashMap::new()))),
        }
    }

    /// The current access keys (reloaded if iam.json changed).
    pub fn keys(&self) -> Result<Arc<Keys>, AwsError> {
        let now = FileStamp::of(&self.path);
        if let Ok(st) = self.state.read()
            && st.0.is_some()
            && st.0 == now
        {
            return Ok(st.1.clone());
        }
        let body = self.store.load()?;
        let keys: Keys = self
            .store
            .access_keys(&body)?
            .into_iter()
            .map(|(id, identity, secret)| (id, (Arc::new(identity), secret)))
            .collect();
        let keys = Arc::new(keys);
        if let Ok(mut st) = self.state.write() {
            *st = (now, keys.clone());
        }
        Ok(keys)
    }
}
