//! An endpoint's API keys through the admin API: `PUT` and `DELETE /v1/endpoints/NAME/keys/KEY`
//! keep the endpoint's `keys.json` (hashes only) and have its router read it again, waiting
//! until the change is in force; `GET /v1/endpoints/NAME/keys` is every key with its usage. A key's
//! changes (limits, expiry) are a reload: no connection or replica is touched, and a rotation
//! (new key, then the old one removed) refuses no request.

use tokio_util::sync::CancellationToken;

use super::host::{Host, failed, internal};
use super::wire::{KeyList, Problem};
use crate::deploy;
use crate::gateway::KeyUsage;
use crate::gateway::keys::{KeySpec, KeysFile};

fn unknown_endpoint(name: &str) -> Problem {
    Problem::new(
        404,
        "unknown-endpoint",
        "No such endpoint",
        format!("this daemon hosts no endpoint named {name:?}; create it before its keys"),
    )
    .at("endpoint")
}

/// Whether a key was made or changed.
pub enum KeyPut {
    /// It is new.
    Created,
    /// It replaced one of the same name (or was already so).
    Replaced,
}

/// The keys file at `path`; empty when there is none yet.
fn read_keys(path: &std::path::Path) -> Result<KeysFile, Problem> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            KeysFile::parse(&text).map_err(|e| internal(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
        Err(e) => Err(internal(format!("{}: {e}", path.display()))),
    }
}

impl Host {
    /// Adds or replaces key `key` of endpoint `name` and waits until its router uses it.
    pub async fn put_key(
        &self,
        name: &str,
        key: &str,
        spec: KeySpec,
        cancel: &CancellationToken,
    ) -> Result<KeyPut, Problem> {
        if spec.name != key {
            return Err(Problem::new(
                422,
                "invalid-key",
                "Invalid API key",
                format!("the body names key {:?} but the URL {key:?}", spec.name),
            )
            .at("name"));
        }
        spec.check("key")
            .map_err(|e| Problem::new(422, "invalid-key", "Invalid API key", e))?;
        self.change_keys(name, cancel, |file| {
            let put = match file.keys.iter_mut().find(|k| k.name == key) {
                Some(k) => {
                    *k = spec;
                    KeyPut::Replaced
                }
                None => {
                    file.keys.push(spec);
                    KeyPut::Created
                }
            };
            Some(put)
        })
        .await
        .map(|put| put.unwrap_or(KeyPut::Replaced))
    }

    /// Removes key `key` of endpoint `name` (refused at once once the router has read it);
    /// `false` when there was no such key.
    pub async fn delete_key(
        &self,
        name: &str,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<bool, Problem> {
        let removed = self
            .change_keys(name, cancel, |file| {
                let before = file.keys.len();
                file.keys.retain(|k| k.name != key);
                (file.keys.len() < before).then_some(())
            })
            .await?;
        Ok(removed.is_some())
    }

    /// Every key of the endpoint (its keys file) with its usage from the router's status; the
    /// figures are zero, and `live` false, while the router does not answer or needs no keys.
    pub async fn key_usage(&self, name: &str) -> Result<KeyList, Problem> {
        let hosted = self.existing(name).ok_or_else(|| unknown_endpoint(name))?;
        let file = read_keys(&hosted.dir.keys())?;
        let view = self.get(name).await.ok_or_else(|| unknown_endpoint(name))?;
        let status = view.status;
        let live: Vec<KeyUsage> = status.as_ref().map(|s| s.keys.clone()).unwrap_or_default();
        let keys = file
            .keys
            .iter()
            .map(|spec| {
                live.iter()
                    .find(|k| k.name == spec.name)
                    .cloned()
                    .unwrap_or_else(|| KeyUsage {
                        name: spec.name.clone(),
                        monthly_request_quota: spec.monthly_request_quota,
                        expires_at: spec.expires_at.clone(),
                        ..KeyUsage::default()
                    })
            })
            .collect();
        Ok(KeyList {
            keys,
            live: !live.is_empty(),
            replica_spend_usd: status.map_or(0.0, |s| s.budget.replica_spend_usd),
        })
    }

    /// Applies `change` to the endpoint's keys file under the endpoint's lock; when it changed
    /// something (`Some`), writes the file and waits for the router to read it.
    async fn change_keys<T>(
        &self,
        name: &str,
        cancel: &CancellationToken,
        change: impl FnOnce(&mut KeysFile) -> Option<T>,
    ) -> Result<Option<T>, Problem> {
        if self.existing(name).is_none() {
            return Err(unknown_endpoint(name));
        }
        let (hosted, _busy) = self.lock_current(name).await;
        let path = hosted.dir.keys();
        let mut file = match std::fs::read_to_string(&path) {
            Ok(text) => {
                KeysFile::parse(&text).map_err(|e| internal(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeysFile::default(),
            Err(e) => return Err(internal(format!("{}: {e}", path.display()))),
        };
        let Some(out) = change(&mut file) else {
            return Ok(None);
        };
        file.check()
            .map_err(|e| Problem::new(422, "invalid-key", "Invalid API key", e))?;
        file.write(&path).map_err(internal)?;
        let router = deploy::complete_record(&hosted.dir)
            .map_err(internal)?
            .filter(|r| r.process.alive() && !r.address.is_empty());
        // A router that is not running reads the file when it is started again.
        if let Some(router) = router {
            deploy::reload_keys(&hosted.dir, &router, cancel)
                .await
                .map_err(|e| failed(name, "its router did not take the keys", &e))?;
        }
        Ok(Some(out))
    }
}
