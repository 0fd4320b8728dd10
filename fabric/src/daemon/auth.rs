//! Who may call the admin API: a bearer token of which the daemon keeps only the SHA-256, in a
//! file nobody else may read; and, optionally, a client certificate (see [`super::tls`]).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The SHA-256 (hex) of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Reads the token hash file: it must be readable by its owner only, and hold 64 hex digits.
pub fn read_token_hash(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("token_sha256_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "token_sha256_file {} is open to group or others (mode {mode:o}); run chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("token_sha256_file {}: {e}", path.display()))?;
    let hash = text.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "token_sha256_file {}: not a SHA-256 in hex (64 digits); write one with `gpucap-fabric token --hash-file {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(hash)
}

/// A new random token (256 bits, hex).
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "the system's random source failed".to_string())?;
    Ok(format!("gpf_{}", hex::encode(bytes)))
}

/// Writes `token`'s hash to `path`, readable by its owner only.
pub fn write_token_hash(path: &Path, token: &str) -> Result<(), String> {
    crate::store::write_private(path, &format!("{}\n", token_hash(token)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether an `Authorization` header carries the token whose hash is `expected`. Hashes are
/// compared, not tokens, so the comparison's timing says nothing about the token.
pub fn authorized(header: Option<&str>, expected: &str) -> bool {
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| token_hash(t) == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_through_its_hash_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.sha256");
        let token = new_token().unwrap();
        assert_eq!(token.len(), 4 + 64);
        write_token_hash(&path, &token).unwrap();
        let hash = read_token_hash(&path).unwrap();
        assert!(authorized(Some(&format!("Bearer {token}")), &hash));
        assert!(!authorized(Some("Bearer wrong"), &hash));
        assert!(!authorized(Some(&token), &hash), "the scheme is required");
        assert!(!authorized(None, &hash));
        assert_ne!(new_token().unwrap(), token);
    }

    #[test]
    fn a_hash_file_open_to_others_or_not_a_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.sha256");
        std::fs::write(&path, token_hash("t")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_token_hash(&path).unwrap_err();
        assert!(err.contains("open to group or others (mode 644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_token_hash(&path).is_ok());
        std::fs::write(&path, "secret").unwrap();
        assert!(
            read_token_hash(&path)
                .unwrap_err()
                .contains("not a SHA-256")
        );
    }
}
