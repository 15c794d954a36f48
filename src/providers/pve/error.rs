//! PVE call errors, classified where the facts are.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status; `message` comes from the JSON
    /// body or, for older servers and proxies, from the status line.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
        errors: Vec<(String, String)>,
    },
    #[error("{method} {path}: {message}")]
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("{method} {path}: timed out")]
    Timeout { method: &'static str, path: String },
    #[error("{method} {path}: decoding the answer at {at}: {message}")]
    Decode {
        method: &'static str,
        path: String,
        at: String,
        message: String,
    },
    #[error("task {upid} failed: {exit_status}")]
    TaskFailed { upid: String, exit_status: String },
    #[error("credentials: {0}")]
    Credentials(String),
}

/// What a caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later (network, timeouts, 5xx, 595/596, locks).
    Transient,
    /// The object does not exist.
    NotFound,
    /// Authentication or permission: a person must fix credentials or ACLs.
    Permission,
    /// The request was refused as invalid: a person must fix the spec or config.
    Invalid,
    /// Something already exists (VMID collision).
    Conflict,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } => ErrorClass::Transient,
            Error::Decode { .. } | Error::Credentials(_) => ErrorClass::Invalid,
            Error::TaskFailed { exit_status, .. } => {
                if is_lock_message(exit_status) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Invalid
                }
            }
            Error::Api {
                status, message, errors, ..
            } => {
                let exists = errors.iter().any(|(_, m)| m.contains("already exists")) || message.contains("already exists");
                match *status {
                    401 | 403 => ErrorClass::Permission,
                    400 if exists => ErrorClass::Conflict,
                    400 | 501 => ErrorClass::Invalid,
                    404 => ErrorClass::NotFound,
                    500 if message.contains("does not exist") => ErrorClass::NotFound,
                    500 if exists => ErrorClass::Conflict,
                    500 if message.contains("no such") => ErrorClass::Invalid,
                    _ => ErrorClass::Transient,
                }
            }
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// A lock held by another task (backup, clone, …): always worth waiting for.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Api { message, .. } if is_lock_message(message))
    }
}

fn is_lock_message(m: &str) -> bool {
    m.contains("is locked") || m.contains("can't lock file")
}
