//! The auth file (users with hashed credentials, API-token digests, ACL entries) and
//! [`AuthStore`], its compiled read-only form that the listeners consult per request.
//!
//! Invariants: the file is replaced atomically (temp file with mode 0600, fsync,
//! rename) so a crash leaves the old or the new file, never a torn one; loading
//! validates everything up front (a bad file stops the server at start, naming the
//! field); user names are `[A-Za-z0-9._@-]{1,128}`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::acl::{Acl, AclEntry, Operation, ResourceKind};
use crate::credential::{digest_hex, ScramCredential, ScramKeys, TokenDigest};
use crate::error::AuthError;

/// One user in the auth file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub name: String,
    /// Password credential (SASL/PLAIN and SCRAM-SHA-256); absent for token-only users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<ScramCredential>,
    /// API tokens (HTTP `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenDigest>,
}

/// The on-disk auth file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub users: Vec<UserRecord>,
    #[serde(default)]
    pub acls: Vec<AclEntry>,
}

/// Checks a user name.
pub fn validate_user_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadInput(format!(
            "invalid user name {name:?}: use 1-128 of A-Z a-z 0-9 . _ @ -"
        )))
    }
}

impl AuthFile {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| AuthError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        file.validate().map_err(|message| AuthError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(file)
    }

    /// Reads `path`, or an empty file if it does not exist yet (for the CLI).
    pub fn load_or_empty(path: &Path) -> Result<Self, AuthError> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(Self::default())
        }
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for user in &self.users {
            validate_user_name(&user.name).map_err(|e| e.to_string())?;
            if !names.insert(user.name.as_str()) {
                return Err(format!("user `{}` appears twice", user.name));
            }
            if let Some(credential) = &user.scram_sha256 {
                credential
                    .keys()
                    .map_err(|e| format!("user `{}`: scram_sha256: {e}", user.name))?;
            }
            for token in &user.tokens {
                let hex_ok =
                    token.sha256.len() == 64 && token.sha256.chars().all(|c| c.is_ascii_hexdigit());
                if !hex_ok {
                    return Err(format!(
                        "user `{}`: token `{}`: sha256 must be 64 hex digits",
                        user.name, token.id
                    ));
                }
            }
        }
        for (i, entry) in self.acls.iter().enumerate() {
            if entry.principal != "*" {
                validate_user_name(&entry.principal)
                    .map_err(|e| format!("acls[{i}].principal: {e}"))?;
            }
            if entry.pattern.is_empty() {
                return Err(format!("acls[{i}].pattern is empty"));
            }
            if entry.operations.is_empty() {
                return Err(format!("acls[{i}].operations is empty"));
            }
        }
        Ok(())
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let io = |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = path
            .file_name()
            .ok_or_else(|| AuthError::BadInput(format!("{} is not a file path", path.display())))?;
        let temp: PathBuf = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| AuthError::BadInput(format!("cannot encode the auth file: {e}")))?;
        json.push(b'\n');
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io)?;
            file.write_all(&json).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&temp, path).map_err(io)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut UserRecord, AuthError> {
        self.users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| AuthError::UnknownUser(name.to_string()))
    }

    /// Adds a user, or replaces an existing user's password.
    pub fn set_password(
        &mut self,
        name: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), AuthError> {
        validate_user_name(name)?;
        let credential = ScramCredential::from_password(password, iterations)?;
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(user) => user.scram_sha256 = Some(credential),
            None => self.users.push(UserRecord {
                name: name.to_string(),
                scram_sha256: Some(credential),
                tokens: Vec::new(),
            }),
        }
        Ok(())
    }

    /// Adds a user with no password (token-only) if absent.
    pub fn ensure_user(&mut self, name: &str) -> Result<(), AuthError> {
        validate_user_name(name)?;
        if !self.users.iter().any(|u| u.name == name) {
            self.users.push(UserRecord {
                name: name.to_string(),
                scram_sha256: None,
                tokens: Vec::new(),
            });
        }
        Ok(())
    }

    /// Removes a user, its tokens and its own ACL entries.
    pub fn remove_user(&mut self, name: &str) -> Result<(), AuthError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(AuthError::UnknownUser(name.to_string()));
        }
        self.acls.retain(|a| a.principal != name);
        Ok(())
    }

    /// Issues a new token for `user` under `id`; returns the token (shown once).
    pub fn add_token(&mut self, user: &str, id: &str) -> Result<String, AuthError> {
        validate_user_name(id).map_err(|_| {
            AuthError::BadInput(format!(
                "invalid token id {id:?}: use 1-128 of A-Z a-z 0-9 . _ @ -"
            ))
        })?;
        let record = self.user_mut(user)?;
        if record.tokens.iter().any(|t| t.id == id) {
            return Err(AuthError::BadInput(format!(
                "user `{user}` already has a token `{id}`"
            )));
        }
        let (token, digest) = TokenDigest::generate(id);
        record.tokens.push(digest);
        Ok(token)
    }

    pub fn revoke_token(&mut self, user: &str, id: &str) -> Result<(), AuthError> {
        let record = self.user_mut(user)?;
        let before = record.tokens.len();
        record.tokens.retain(|t| t.id != id);
        if record.tokens.len() == before {
            return Err(AuthError::BadInput(format!(
                "user `{user}` has no token `{id}`"
            )));
        }
        Ok(())
    }

    pub fn grant(&mut self, entry: AclEntry) -> Result<(), AuthError> {
        if entry.principal != "*" {
            validate_user_name(&entry.principal)?;
        }
        if entry.pattern.is_empty() || entry.operations.is_empty() {
            return Err(AuthError::BadInput(
                "an ACL entry needs a pattern and at least one operation".into(),
            ));
        }
        if !self.acls.contains(&entry) {
            self.acls.push(entry);
        }
        Ok(())
    }

    /// Removes the entries of `principal` on `resource`/`pattern`; returns how many.
    pub fn revoke(&mut self, principal: &str, resource: ResourceKind, pattern: &str) -> usize {
        let before = self.acls.len();
        self.acls.retain(|a| {
            !(a.principal == principal && a.resource == resource && a.pattern == pattern)
        });
        before - self.acls.len()
    }
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
}

/// The compiled auth file the servers consult.
#[derive(Debug, Default)]
pub struct AuthStore {
    passwords: HashMap<String, ScramKeys>,
    /// Token digest (hex) → (user, token id).
    tokens: HashMap<String, (String, String)>,
    acl: Acl,
}

impl AuthStore {
    pub fn from_file(file: &AuthFile) -> Result<Self, AuthError> {
        file.validate().map_err(AuthError::BadInput)?;
        let mut store = AuthStore {
            acl: Acl::new(file.acls.clone()),
            ..AuthStore::default()
        };
        for user in &file.users {
            if let Some(credential) = &user.scram_sha256 {
                let keys = credential.keys().map_err(AuthError::BadInput)?;
                store.passwords.insert(user.name.clone(), keys);
            }
            for token in &user.tokens {
                store.tokens.insert(
                    token.sha256.to_ascii_lowercase(),
                    (user.name.clone(), token.id.clone()),
                );
            }
        }
        Ok(store)
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        Self::from_file(&AuthFile::load(path)?)
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate_token(&self, token: &str) -> Option<Principal> {
        self.tokens
            .get(&digest_hex(token))
            .map(|(user, _)| Principal { name: user.clone() })
    }

    /// SASL/PLAIN: checks a password (costs one PBKDF2 derivation).
    pub fn authenticate_password(&self, user: &str, password: &str) -> Option<Principal> {
        let keys = self.passwords.get(user)?;
        keys.verify_password(password).then(|| Principal {
            name: user.to_string(),
        })
    }

    /// SCRAM keys of a user, for [`crate::scram::ScramServer`].
    pub fn scram_keys(&self, user: &str) -> Option<ScramKeys> {
        self.passwords.get(user).cloned()
    }

    pub fn allows(
        &self,
        principal: &Principal,
        kind: ResourceKind,
        name: &str,
        operation: Operation,
    ) -> bool {
        self.acl.allows(&principal.name, kind, name, operation)
    }

    pub fn allows_any(&self, principal: &Principal, kind: ResourceKind, name: &str) -> bool {
        self.acl.allows_any(&principal.name, kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::parse_operations;
    use crate::credential::MIN_ITERATIONS;

    #[test]
    fn file_round_trip_without_plain_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let mut file = AuthFile::default();
        file.set_password("alice", "correct horse", MIN_ITERATIONS)
            .unwrap();
        let token = file.add_token("alice", "ci").unwrap();
        file.grant(AclEntry {
            principal: "alice".into(),
            resource: ResourceKind::Topic,
            pattern: "orders.*".into(),
            operations: parse_operations("produce").unwrap(),
        })
        .unwrap();
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse"));
        assert!(!text.contains(&token));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let store = AuthStore::load(&path).unwrap();
        let alice = store.authenticate_token(&token).unwrap();
        assert_eq!(alice.name, "alice");
        assert!(store.authenticate_token("hrld_wrong").is_none());
        assert!(store
            .authenticate_password("alice", "correct horse")
            .is_some());
        assert!(store.authenticate_password("alice", "wrong").is_none());
        assert!(store
            .authenticate_password("bob", "correct horse")
            .is_none());
        assert!(store.allows(&alice, ResourceKind::Topic, "orders.x", Operation::Produce));
        assert!(!store.allows(&alice, ResourceKind::Topic, "orders.x", Operation::Consume));

        file.revoke_token("alice", "ci").unwrap();
        assert!(AuthStore::from_file(&file)
            .unwrap()
            .authenticate_token(&token)
            .is_none());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        for (content, expected) in [
            ("{", "EOF"),
            (r#"{"users":[{"name":"../x"}]}"#, "invalid user name"),
            (r#"{"users":[{"name":"a"},{"name":"a"}]}"#, "twice"),
            (
                r#"{"users":[{"name":"a","tokens":[{"id":"t","sha256":"zz"}]}]}"#,
                "64 hex",
            ),
            (
                r#"{"acls":[{"principal":"a","resource":"topic","pattern":"","operations":["produce"]}]}"#,
                "pattern is empty",
            ),
            (
                r#"{"acls":[{"principal":"a","resource":"planet","pattern":"x","operations":["produce"]}]}"#,
                "unknown variant",
            ),
            (r#"{"users":[],"passwords":[]}"#, "unknown field"),
        ] {
            std::fs::write(&path, content).unwrap();
            let err = AuthFile::load(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{content}: {err}");
        }
        assert!(AuthFile::load(&dir.path().join("missing.json")).is_err());
        assert_eq!(
            AuthFile::load_or_empty(&dir.path().join("missing.json")).unwrap(),
            AuthFile::default()
        );
    }

    #[test]
    fn user_management() {
        let mut file = AuthFile::default();
        assert!(file.add_token("ghost", "t").is_err());
        file.ensure_user("svc").unwrap();
        file.add_token("svc", "t").unwrap();
        assert!(file.add_token("svc", "t").is_err());
        assert!(file.set_password("x y", "p", MIN_ITERATIONS).is_err());
        file.grant(AclEntry {
            principal: "svc".into(),
            resource: ResourceKind::Any,
            pattern: "*".into(),
            operations: parse_operations("all").unwrap(),
        })
        .unwrap();
        assert_eq!(file.revoke("svc", ResourceKind::Topic, "*"), 0);
        file.remove_user("svc").unwrap();
        assert!(file.acls.is_empty());
        assert!(file.remove_user("svc").is_err());
    }
}
