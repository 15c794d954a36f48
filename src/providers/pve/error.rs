//! PVE call errors, classified where the facts are: by status code and, since
//! PVE answers most refusals with HTTP 500 and a `die` message, by that message.

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
    /// Retry later (network, timeouts, 502–504, 595/596, locks, cluster-filesystem timeouts).
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
            Error::TaskFailed { exit_status, .. } => classify_message(exit_status),
            Error::Api {
                method,
                status,
                message,
                errors,
                ..
            } => {
                let exists = errors.iter().any(|(_, m)| is_exists_message(m)) || is_exists_message(message);
                match *status {
                    401 | 403 => ErrorClass::Permission,
                    400 if exists => ErrorClass::Conflict,
                    400 | 501 => ErrorClass::Invalid,
                    404 => ErrorClass::NotFound,
                    500 if exists => ErrorClass::Conflict,
                    500 => classify_answer(method, message),
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

    /// The QEMU guest agent has not started yet (the guest is still booting):
    /// not a failure, just "ask again later".
    pub fn is_agent_not_running(&self) -> bool {
        matches!(self, Error::Api { message, .. } if message.contains("guest agent is not running"))
    }
}

/// Texts of PVE runtime failures that go away by themselves.
const TRANSIENT_MARKERS: &[&str] = &[
    "is locked",
    "can't lock file",
    "got timeout",
    "got lock request timeout",
    "cfs-lock",
    "timed out",
    "temporarily unavailable",
    "try again",
    "connection refused",
    "guest agent is not running",
];

/// Texts that name something missing.
const NOT_FOUND_MARKERS: &[&str] = &["does not exist", "no such", "not found", "hostname lookup"];

/// HTTP 500 (and failed task) messages: a runtime `die` in PVE. Most are
/// refusals a person must fix (`unable to parse ssh key`, `storage 'x' does not
/// exist`, `no such cluster node 'x'`); only known passing conditions are transient.
pub fn classify_message(message: &str) -> ErrorClass {
    let m = message.to_ascii_lowercase();
    if TRANSIENT_MARKERS.iter().any(|t| m.contains(t)) {
        ErrorClass::Transient
    } else if m.contains("permission check failed") {
        ErrorClass::Permission
    } else if NOT_FOUND_MARKERS.iter().any(|t| m.contains(t)) {
        ErrorClass::NotFound
    } else {
        ErrorClass::Invalid
    }
}

/// PVE's refusals of a request a person must change (HTTP 500 `die` texts:
/// `pve-conventions.json` and every refusal the simulator answers, which a
/// test below walks so a new one cannot be missed).
const REFUSAL_MARKERS: &[&str] = &[
    "not running",
    "already running",
    "no qemu guest agent configured",
    "protection mode enabled",
    "not supported",
    "not allowed",
    "does not support",
    "contains a line feed",
    "you can't",
    "unable to",
    "no rule at position",
    "is running - destroy failed",
    "conflicts with",
    "only makes sense",
    "used in ha resources",
    "invalid",
];

/// An HTTP 500 answer: a known refusal needs a person; anything else PVE
/// answers with 500 (`Internal Server Error`, a crashed worker) passes, and a
/// failed read never waits for a person unless it was refused permission.
fn classify_answer(method: &str, message: &str) -> ErrorClass {
    let m = message.to_ascii_lowercase();
    match classify_message(message) {
        ErrorClass::Invalid if method != "GET" && REFUSAL_MARKERS.iter().any(|r| m.contains(r)) => ErrorClass::Invalid,
        ErrorClass::Invalid => ErrorClass::Transient,
        class => class,
    }
}

fn is_exists_message(m: &str) -> bool {
    m.contains("already exists") || m.contains("already used")
}

fn is_lock_message(m: &str) -> bool {
    m.contains("is locked") || m.contains("can't lock file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> Error {
        Error::Api {
            method: "POST",
            path: "/nodes/pve1/qemu".into(),
            status,
            message: message.into(),
            errors: vec![],
        }
    }

    /// One row per common error text of `pve-conventions.json`
    /// (`guest_error_messages`) and the refusals users hit most.
    #[test]
    fn classifies_common_pve_error_texts() {
        use ErrorClass::*;
        let table: &[(u16, &str, ErrorClass)] = &[
            (500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist", NotFound),
            (500, "VM is locked (backup)", Transient),
            (500, "CT is locked (snapshot)", Transient),
            (
                500,
                "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
                Transient,
            ),
            (500, "VM 100 already running", Invalid),
            (500, "VM 100 not running", Invalid),
            (500, "unable to create VM 101: config file already exists", Conflict),
            (400, "Parameter verification failed. (vmid: VM 101 already exists)", Conflict),
            (500, "snapshot 'hlo-g1' does not exist", NotFound),
            (500, "snapshot name 'hlo-g1-20261202' already used", Conflict),
            (500, "No QEMU guest agent configured", Invalid),
            (500, "QEMU guest agent is not running", Transient),
            (
                500,
                "detected modified configuration - file changed by other user? Try again.",
                Transient,
            ),
            (500, "unable to parse ssh key", Invalid),
            (500, "no such cluster node 'pve9'", NotFound),
            (500, "storage 'fast' does not exist", NotFound),
            (500, "volume 'local:iso/missing.iso' does not exist", NotFound),
            (500, "bridge 'vmbr9' does not exist", NotFound),
            (
                500,
                "hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or service not known",
                NotFound,
            ),
            (500, "cfs-lock 'file-user_cfg' error: got lock request timeout", Transient),
            (500, "can't remove VM 100 - protection mode enabled", Invalid),
            (403, "Permission check failed (pool 'nope' does not exist)", Permission),
            (403, "Permission check failed (/vms/100, VM.Config.Disk)", Permission),
            (401, "authentication failure", Permission),
            (
                400,
                "Parameter verification failed. (net0: invalid format - property vlan)",
                Invalid,
            ),
            (501, "Method 'GET /nodes/pve1/foo' not implemented", Invalid),
            (500, "Internal Server Error", Transient),
            (500, "worker died unexpectedly", Transient),
            (502, "Bad Gateway", Transient),
            (503, "Service Unavailable", Transient),
            (595, "No route to host", Transient),
            (596, "Connection reset by peer", Transient),
        ];
        for (status, message, class) in table {
            assert_eq!(api(*status, message).class(), *class, "HTTP {status}: {message}");
        }
    }

    #[test]
    fn failed_tasks_are_classified_by_their_exit_status() {
        let task = |s: &str| Error::TaskFailed {
            upid: "UPID:pve1:x".into(),
            exit_status: s.into(),
        };
        assert!(task("VM is locked (backup)").is_transient());
        assert_eq!(task("bridge 'vmbr9' does not exist").class(), ErrorClass::NotFound);
        assert_eq!(task("unable to parse ssh key").class(), ErrorClass::Invalid);
    }

    #[test]
    fn agent_not_running_is_recognised() {
        assert!(api(500, "QEMU guest agent is not running").is_agent_not_running());
        assert!(!api(500, "No QEMU guest agent configured").is_agent_not_running());
    }

    /// Every refusal the PVE simulator answers with HTTP 500 is classed as
    /// one (a person must act), but for the few that pass by themselves; a new
    /// refusal the markers miss would be retried forever, and fails here.
    #[test]
    fn every_refusal_the_simulator_answers_needs_a_person() {
        let re = regex::Regex::new(r#"(?s)fail\(\s*500,\s*(?:format!\(\s*)?"([^"]*)""#).unwrap();
        let placeholder = regex::Regex::new(r"\{[^}]*\}").unwrap();
        let mut seen = 0;
        for file in walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim/pve")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for c in re.captures_iter(&text) {
                let message = placeholder.replace_all(&c[1], "x").to_string();
                let passes = ["is locked", "guest agent is not running"].iter().any(|t| message.contains(t));
                let class = api(500, &message).class();
                assert_eq!(
                    class == ErrorClass::Transient,
                    passes,
                    "{}: {message:?} is {class:?}",
                    file.display()
                );
                seen += 1;
            }
        }
        assert!(seen > 20, "the walk sees the simulator's refusals ({seen})");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        out
    }
}
