//! An endpoint's API keys as the router holds them: a JSON file (`keys.json` in the endpoint's
//! state directory, written by the daemon or by hand) of names, SHA-256 hashes, expiries, rate
//! limits and quotas. A secret is never stored: it is returned once when the key is made.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every key's secret, so secret scanners recognise a leaked one.
pub const SECRET_PREFIX: &str = "gpk_";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Every key of the endpoint.
    #[serde(default)]
    pub keys: Vec<KeySpec>,
}

/// One key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Its name: what metrics, status and usage report (never the secret).
    pub name: String,
    /// The SHA-256 of its secret, in hex.
    pub sha256: String,
    /// When it stops being accepted (RFC 3339); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// How fast it may call; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Inference requests it may make per calendar month (UTC); unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_request_quota: Option<u64>,
}

/// `rate_limit`: requests and rows per second, with a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second (sustained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Rows per second (a request carries one or more rows; rows meter what the hardware does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<u32>,
    /// How far above the rate a short burst may go, in requests (and in rows for the row
    /// limit). Default: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// The SHA-256 of a secret (as text, or as the bytes a request carried).
pub fn secret_hash(secret: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A new secret: the prefix and 256 random bits in hex.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "the system's random source failed".to_string())?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// A key checked: its hash decoded, its expiry parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// What the file says.
    pub spec: KeySpec,
    /// The hash, decoded.
    pub hash: [u8; 32],
    /// The expiry, parsed.
    pub expires: Option<SystemTime>,
}

impl KeySpec {
    /// Checks the key; `at` names it in errors (`keys[2]`).
    pub fn check(&self, at: &str) -> Result<Key, String> {
        gpucap_runtime::config::check_name(&format!("{at}.name"), &self.name)
            .map_err(|e| e.to_string())?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(self.sha256.trim(), &mut hash).map_err(|_| {
            format!(
                "{at}.sha256: not a SHA-256 in hex (64 digits); the file holds a key's hash, never its secret"
            )
        })?;
        let expires = self
            .expires_at
            .as_deref()
            .map(|t| {
                humantime::parse_rfc3339_weak(t).map_err(|e| {
                    format!(
                        "{at}.expires_at {t:?}: {e}; expected RFC 3339 such as 2027-01-31T00:00:00Z"
                    )
                })
            })
            .transpose()?;
        if let Some(limit) = &self.rate_limit {
            for (field, value) in [
                ("requests_per_second", limit.requests_per_second),
                ("rows_per_second", limit.rows_per_second),
                ("burst", limit.burst),
            ] {
                if value == Some(0) {
                    return Err(format!(
                        "{at}.rate_limit.{field} is 0; use at least 1, or leave it out for no limit"
                    ));
                }
            }
        }
        if self.monthly_request_quota == Some(0) {
            return Err(format!(
                "{at}.monthly_request_quota is 0; use at least 1, or leave it out for no quota"
            ));
        }
        Ok(Key {
            spec: self.clone(),
            hash,
            expires,
        })
    }
}

impl KeysFile {
    /// Checks every key: names and hashes unique.
    pub fn check(&self) -> Result<Vec<Key>, String> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, spec) in self.keys.iter().enumerate() {
            let key = spec.check(&format!("keys[{i}]"))?;
            if !names.insert(key.spec.name.clone()) {
                return Err(format!(
                    "keys[{i}].name {:?} is used twice; key names are unique",
                    key.spec.name
                ));
            }
            if !hashes.insert(key.hash) {
                return Err(format!(
                    "keys[{i}] ({:?}) has the same secret as an earlier key",
                    key.spec.name
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// Parses the file's text; errors name the key and field.
    pub fn parse(text: &str) -> Result<KeysFile, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            format!("{path}: {}", e.into_inner())
        })
    }

    /// Reads and checks the file at `path`: it must be readable by its owner only. A missing
    /// file is no keys (every request refused until one is added).
    pub fn read(path: &Path) -> Result<Vec<Key>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("auth.keys_file {}: {e}", path.display())),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "auth.keys_file {} is open to group or others (mode {mode:o}); run chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.keys_file {}: {e}", path.display()))?;
        Self::parse(&text)
            .and_then(|f| f.check())
            .map_err(|e| format!("auth.keys_file {}: {e}", path.display()))
    }

    /// Writes the file at `path`, readable by its owner only, atomically.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        crate::store::write_json(path, self)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, secret: &str) -> KeySpec {
        KeySpec {
            name: name.into(),
            sha256: hex::encode(secret_hash(secret)),
            expires_at: None,
            rate_limit: None,
            monthly_request_quota: None,
        }
    }

    #[test]
    fn a_secret_is_prefixed_and_carries_256_bits() {
        let s = new_secret().unwrap();
        assert!(s.starts_with("gpk_"));
        assert_eq!(s.len(), 4 + 64);
        assert_ne!(s, new_secret().unwrap());
    }

    #[test]
    fn bad_keys_are_refused_naming_the_field() {
        let mut zero = spec("a", "s");
        zero.rate_limit = Some(RateLimit {
            requests_per_second: Some(0),
            rows_per_second: None,
            burst: None,
        });
        let err = KeysFile { keys: vec![zero] }.check().unwrap_err();
        assert!(
            err.contains("keys[0].rate_limit.requests_per_second is 0"),
            "{err}"
        );

        let mut expiry = spec("a", "s");
        expiry.expires_at = Some("next tuesday".into());
        let err = KeysFile { keys: vec![expiry] }.check().unwrap_err();
        assert!(err.contains("keys[0].expires_at"), "{err}");

        let err = KeysFile {
            keys: vec![spec("a", "s"), spec("a", "t")],
        }
        .check()
        .unwrap_err();
        assert!(err.contains("keys[1].name \"a\" is used twice"), "{err}");

        let err = KeysFile {
            keys: vec![spec("a", "s"), spec("b", "s")],
        }
        .check()
        .unwrap_err();
        assert!(err.contains("same secret"), "{err}");

        let mut raw = spec("a", "s");
        raw.sha256 = "gpk_123".into();
        let err = KeysFile { keys: vec![raw] }.check().unwrap_err();
        assert!(err.contains("keys[0].sha256"), "{err}");

        let err = KeysFile::parse(r#"{"keys":[{"name":"a","sha":"x"}]}"#).unwrap_err();
        assert!(err.starts_with("keys[0]"), "{err}");
    }

    #[test]
    fn the_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert!(
            KeysFile::read(&path).unwrap().is_empty(),
            "no file: no keys"
        );
        KeysFile {
            keys: vec![spec("a", "s")],
        }
        .write(&path)
        .unwrap();
        assert_eq!(KeysFile::read(&path).unwrap()[0].hash, secret_hash("s"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeysFile::read(&path).unwrap_err();
        assert!(err.contains("open to group or others (mode 644)"), "{err}");
    }
}
