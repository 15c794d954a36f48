use super::*;

#[test]
fn the_package_manager_comes_from_os_release() {
    assert_eq!(PackageManager::detect("debian", ""), Some(PackageManager::Apt));
    assert_eq!(PackageManager::detect("pop", "ubuntu debian"), Some(PackageManager::Apt));
    assert_eq!(PackageManager::detect("rocky", "rhel centos fedora"), Some(PackageManager::Dnf));
    assert_eq!(PackageManager::detect("opensuse-leap", "suse opensuse"), None);
    assert_eq!(PackageManager::detect("someos", "arch"), Some(PackageManager::Pacman));
    assert_eq!(PackageManager::detect("alpine", ""), Some(PackageManager::Apk));
}

#[test]
fn apt_listing_with_security_suites() {
    let out = "Listing...\n\
        curl/trixie-updates 8.14.1-2+deb13u1 amd64 [upgradable from: 8.14.1-2]\n\
        openssl/trixie-security 3.5.1-1+deb13u1 amd64 [upgradable from: 3.5.1-1]\n\
        libc6/jammy-updates,jammy-security 2.35-0ubuntu3.8 amd64 [upgradable from: 2.35-0ubuntu3.7]\n";
    let p = parse_pending("apt", out);
    assert_eq!(p.packages, ["curl", "openssl", "libc6"]);
    assert_eq!(p.security, Some(2));
}

#[test]
fn apk_dnf_and_pacman_listings() {
    let apk = "busybox-1.36.1-r31 x86_64 {busybox} (GPL-2.0-only) [upgradable from: busybox-1.36.1-r30]\n\
        py3-requests-2.32.4-r0 noarch {py3-requests} (Apache-2.0) [upgradable from: py3-requests-2.32.3-r0]\n";
    assert_eq!(parse_pending("apk", apk).packages, ["busybox", "py3-requests"]);
    assert_eq!(parse_pending("apk", apk).security, None);

    let dnf = "\nkernel-core.x86_64    6.16.7-200.fc42    updates\n\
        openssl-libs.x86_64   1:3.2.4-3.fc42     updates\n\
        security: FEDORA-2026-1a2b3c Important/Sec. openssl-libs-1:3.2.4-3.fc42.x86_64\n";
    let p = parse_pending("dnf", dnf);
    assert_eq!(p.packages, ["kernel-core", "openssl-libs"]);
    assert_eq!(p.security, Some(1));

    let pacman = "linux 6.16.7.arch1-1 -> 6.16.8.arch1-1\nopenssl 3.5.1-1 -> 3.5.2-1\n";
    assert_eq!(parse_pending("pacman", pacman).packages, ["linux", "openssl"]);
}

#[test]
fn result_files_read_as_absent_running_or_ended() {
    assert_eq!(parse_result("absent\n--- output\n"), RunFiles::Absent);
    assert_eq!(
        parse_result("running\n--- output\nUnpacking curl ...\n"),
        RunFiles::Running {
            output: vec!["Unpacking curl ...".into()]
        }
    );
    assert_eq!(
        parse_result("rc=100\nreboot=yes\n--- output\nE: broken\n"),
        RunFiles::Ended {
            rc: 100,
            reboot: true,
            output: vec!["E: broken".into()]
        }
    );
}

/// The scripts as a real `sh` runs them, with the state directory in a
/// temporary one and systemd's marker directory made absent.
fn in_dir(script: &str, dir: &std::path::Path) -> String {
    script
        .replace(STATE_DIR, dir.to_str().unwrap())
        .replace("/run/systemd/system", "/nonexistent/systemd")
}

fn sh(script: &str) -> (i32, String) {
    let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls the run's files until it ended (the runner is detached: nothing else says when).
fn wait_ended(run: &str, dir: &std::path::Path) -> RunFiles {
    loop {
        let (_, out) = sh(&in_dir(&result(run), dir));
        match parse_result(&out) {
            RunFiles::Running { .. } => std::thread::yield_now(),
            other => return other,
        }
    }
}

#[test]
fn a_real_shell_runs_the_update_once_detached_and_reads_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("ran");
    let command = format!("echo run >> {}\necho 'Setting up curl'\nexit 3", counter.display());
    let (_, before) = sh(&in_dir(&result("r1"), dir.path()));
    assert_eq!(parse_result(&before), RunFiles::Absent);

    let (rc, out) = sh(&in_dir(&launch("r1", &command, 60), dir.path()));
    assert_eq!((rc, out.trim()), (0, "started"));
    let ended = wait_ended("r1", dir.path());
    assert_eq!(
        ended,
        RunFiles::Ended {
            rc: 3,
            reboot: std::path::Path::new("/var/run/reboot-required").exists(),
            output: vec!["Setting up curl".into()]
        }
    );
    // Launched again (an operator that restarted before saving it had): not run twice.
    let (_, again) = sh(&in_dir(&launch("r1", &command, 60), dir.path()));
    assert_eq!(again.trim(), "already-started");
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "run\n");
}

#[test]
fn a_real_shell_runs_the_probe_and_the_validation() {
    let (rc, out) = sh(&probe());
    assert_eq!(rc, 0);
    let p = parse_probe(&out);
    assert!(!p.id.is_empty(), "{out}");
    assert!(p.free_kib.is_some_and(|k| k > 0), "{out}");
    assert_eq!(sh(&validate("true")).0, 0);
    assert_eq!(sh(&validate("exit 4")).0, 4);
    assert_ne!(sh(&check(None, None)).0, 0);
}
