// Shared by several test binaries; each uses only part of it.
#![allow(dead_code)]

//! The Debian packages whose servers the tests run for real (PowerDNS, BIND
//! and dig, Python's aiosmtpd, OpenSSH's server), installed on first use when missing, so the
//! README's `cargo test` works alone on a fresh Debian machine. One install at
//! a time across test binaries (apt holds a lock a second one would fail on);
//! without root or passwordless sudo, the failure names the command to run.

use std::{path::Path, process::Command, sync::OnceLock};

/// Every package, as `.ci/run` installs them.
pub const PACKAGES: [&str; 6] = [
    "pdns-server",
    "pdns-backend-sqlite3",
    "bind9",
    "bind9-dnsutils",
    "python3-aiosmtpd",
    "openssh-server",
];

/// Whether everything the packages bring is here.
fn installed() -> bool {
    let found = |p: &str| Path::new(p).exists();
    found("/usr/sbin/pdns_server")
        && found("/usr/sbin/named")
        && found("/usr/bin/dig")
        && found("/usr/sbin/sshd")
        && found("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
        && Command::new("/usr/bin/python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Install the packages unless they are there (once per test binary; `flock` across binaries).
pub fn ensure() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = DONE.get_or_init(install) {
        panic!("{e}");
    }
}

fn install() -> Result<(), String> {
    if installed() {
        return Ok(());
    }
    let hint = format!("apt-get install {} (as root; .ci/run does this)", PACKAGES.join(" "));
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let sudo = if root { "" } else { "sudo -n " };
    let lock = std::env::temp_dir().join("homelab-operator-test-apt.lock");
    let script = format!(
        "export DEBIAN_FRONTEND=noninteractive; {sudo}apt-get update -qq && {sudo}apt-get install -y -qq {} >/dev/null",
        PACKAGES.join(" ")
    );
    let out = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .output()
        .map_err(|e| format!("installing the test servers (flock: {e}): {hint}"))?;
    match out.status.success() && installed() {
        true => Ok(()),
        false => Err(format!(
            "installing the test servers failed: {}\n{hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}
