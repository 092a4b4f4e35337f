//! Errors of the auth model. Messages never contain a secret.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    BadInput(String),
    #[error("unknown user `{0}`")]
    UnknownUser(String),
}
