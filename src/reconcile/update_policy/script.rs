//! What runs inside a guest, as `sh -c SCRIPT`, and how its output is read.
//! Pure: the same scripts go through the guest agent, SSH or `pct exec`.
//!
//! Each script's first line is `# homelab-operator <verb> <args>` (a comment
//! to the shell; what the simulator answers by). The update itself runs
//! detached, outside the agent's or sshd's service (a `systemd-run` unit, or
//! `setsid` without systemd), guarded by the run's directory so it runs once
//! per run however often it is launched, and it writes its output, exit code
//! and whether a reboot is needed to files that survive an upgrade of the
//! agent or of sshd itself.

/// Where runs keep their files inside the guest.
pub const STATE_DIR: &str = "/var/lib/homelab-operator";

/// Lines of output kept in status.
pub const OUTPUT_LINES: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Apk,
    Dnf,
    Pacman,
}

impl PackageManager {
    /// From `/etc/os-release`'s `ID` and `ID_LIKE`.
    pub fn detect(id: &str, like: &str) -> Option<Self> {
        let names = std::iter::once(id).chain(like.split_whitespace());
        names.into_iter().find_map(|n| match n {
            "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" => Some(Self::Apt),
            "alpine" => Some(Self::Apk),
            "fedora" | "rhel" | "centos" | "rocky" | "almalinux" => Some(Self::Dnf),
            "arch" | "archarm" | "manjaro" | "endeavouros" => Some(Self::Pacman),
            _ => None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Apt => "apt",
            Self::Apk => "apk",
            Self::Dnf => "dnf",
            Self::Pacman => "pacman",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Apt, Self::Apk, Self::Dnf, Self::Pacman].into_iter().find(|m| m.name() == s)
    }

    /// Refreshes the index and lists what is upgradable, in the manager's own format.
    fn check_command(self) -> &'static str {
        match self {
            Self::Apt => "apt-get update -qq >/dev/null 2>&1 || exit $?\napt list --upgradable 2>/dev/null",
            Self::Apk => "apk update -q >/dev/null 2>&1 || exit $?\napk list -u 2>/dev/null",
            // check-update exits 100 when updates are pending.
            Self::Dnf => {
                "dnf -q check-update; rc=$?\n[ $rc -eq 0 ] || [ $rc -eq 100 ] || exit $rc\ndnf -q updateinfo list --security 2>/dev/null | sed 's/^/security: /'"
            }
            // checkupdates (pacman-contrib) syncs a private copy of the database: no partial upgrade. Exit 2 = none.
            Self::Pacman => "checkupdates; rc=$?\n[ $rc -eq 0 ] || [ $rc -eq 2 ] || exit $rc",
        }
    }

    /// Installs every pending update without asking, keeping changed config files.
    pub fn apply_command(self) -> &'static str {
        match self {
            Self::Apt => {
                "export DEBIAN_FRONTEND=noninteractive\napt-get update -q && apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade"
            }
            Self::Apk => "apk upgrade -U --no-progress",
            Self::Dnf => "dnf -y upgrade --refresh",
            Self::Pacman => "pacman -Syu --noconfirm --noprogressbar",
        }
    }
}

/// Where it runs, what it is, how much room it has.
pub fn probe() -> String {
    "# homelab-operator probe\n\
     . /etc/os-release 2>/dev/null\n\
     echo \"id=${ID:-}\"\n\
     echo \"like=${ID_LIKE:-}\"\n\
     echo \"free_kib=$(df -Pk / | awk 'NR==2 {print $4}')\"\n"
        .to_string()
}

/// Lists pending updates: the manager's default, or the policy's command (tagged `custom`).
pub fn check(manager: Option<PackageManager>, custom: Option<&str>) -> String {
    match (custom, manager) {
        (Some(cmd), _) => format!("# homelab-operator check custom\n{cmd}\n"),
        (None, Some(m)) => format!("# homelab-operator check {}\n{}\n", m.name(), m.check_command()),
        (None, None) => "# homelab-operator check unknown\necho 'no known package manager' >&2\nexit 1\n".into(),
    }
}

/// Starts the update of run `run` detached, once: the run's directory is
/// made first, and a run whose directory exists is not started again.
pub fn launch(run: &str, command: &str, timeout_secs: u64) -> String {
    let d = format!("{STATE_DIR}/{run}");
    format!(
        "# homelab-operator update {run}\n\
         d={d}\n\
         mkdir -p {STATE_DIR} || exit 1\n\
         mkdir \"$d\" 2>/dev/null || {{ echo already-started; exit 0; }}\n\
         cat > \"$d/command\" <<'HOMELAB_COMMAND'\n{command}\nHOMELAB_COMMAND\n\
         cat > \"$d/run\" <<'HOMELAB_RUN'\n{runner}HOMELAB_RUN\n\
         if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then\n\
         \x20 systemd-run --quiet --collect --unit=homelab-update-{run} sh \"$d/run\" \"$d\"\n\
         else\n\
         \x20 setsid sh \"$d/run\" \"$d\" </dev/null >/dev/null 2>&1 &\n\
         fi\n\
         echo started\n",
        runner = runner(timeout_secs),
    )
}

/// The detached part: output, then whether a reboot is needed, then the exit
/// code last (renamed into place: its presence means the run is over).
fn runner(timeout_secs: u64) -> String {
    format!(
        "d=\"$1\"\n\
         t=\"\"\n\
         command -v timeout >/dev/null 2>&1 && t=\"timeout {timeout_secs}\"\n\
         $t sh \"$d/command\" >\"$d/output\" 2>&1\n\
         rc=$?\n\
         if [ -e /var/run/reboot-required ] || {{ command -v needs-restarting >/dev/null 2>&1 && ! needs-restarting -r >/dev/null 2>&1; }}; then\n\
         \x20 echo yes >\"$d/reboot\"\n\
         else\n\
         \x20 echo no >\"$d/reboot\"\n\
         fi\n\
         echo $rc >\"$d/rc.partial\" && mv \"$d/rc.partial\" \"$d/rc\"\n"
    )
}

/// Reads run `run`'s files: `rc=`/`reboot=` once it ended, `running` while
/// it runs, `absent` when it never started; then its last lines of output.
pub fn result(run: &str) -> String {
    let d = format!("{STATE_DIR}/{run}");
    format!(
        "# homelab-operator result {run}\n\
         d={d}\n\
         if [ -e \"$d/rc\" ]; then echo \"rc=$(cat \"$d/rc\")\"; echo \"reboot=$(cat \"$d/reboot\" 2>/dev/null)\";\n\
         elif [ -d \"$d\" ]; then echo running; else echo absent; fi\n\
         echo '--- output'\n\
         tail -n {OUTPUT_LINES} \"$d/output\" 2>/dev/null\n\
         exit 0\n"
    )
}

/// The policy's validation command.
pub fn validate(command: &str) -> String {
    format!("# homelab-operator validate\n{command}\n")
}

/// What the probe found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub id: String,
    pub like: String,
    pub free_kib: Option<u64>,
}

pub fn parse_probe(out: &str) -> Probe {
    let mut p = Probe::default();
    for line in out.lines() {
        match line.split_once('=') {
            Some(("id", v)) => p.id = v.trim().trim_matches('"').to_string(),
            Some(("like", v)) => p.like = v.trim().trim_matches('"').to_string(),
            Some(("free_kib", v)) => p.free_kib = v.trim().parse().ok(),
            _ => {}
        }
    }
    p
}

/// Pending updates: names, and which are security updates where the manager says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub packages: Vec<String>,
    /// `None` where the package manager does not tell.
    pub security: Option<u32>,
}

/// Reads a check's output in `manager`'s format (`custom`: one package per line).
pub fn parse_pending(manager: &str, out: &str) -> Pending {
    let lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
    match manager {
        "apt" => {
            let rows: Vec<&str> = lines.filter(|l| l.contains('/') && l.contains("[upgradable")).collect();
            Pending {
                packages: rows.iter().filter_map(|l| l.split('/').next()).map(str::to_string).collect(),
                security: Some(rows.iter().filter(|l| is_security_suite(l)).count() as u32),
            }
        }
        "apk" => Pending {
            packages: lines
                .filter(|l| l.contains("[upgradable from"))
                .filter_map(|l| l.split_whitespace().next())
                .map(apk_name)
                .collect(),
            security: None,
        },
        "dnf" => {
            let (security, rows): (Vec<&str>, Vec<&str>) = lines.partition(|l| l.starts_with("security: "));
            let packages = rows
                .iter()
                .filter(|l| l.split_whitespace().count() == 3 && !l.starts_with("Obsoleting"))
                .filter_map(|l| l.split_whitespace().next())
                .map(|nevra| nevra.rsplit_once('.').map_or(nevra, |(name, _arch)| name).to_string())
                .collect();
            Pending {
                packages,
                security: Some(security.len() as u32),
            }
        }
        "pacman" => Pending {
            packages: lines
                .filter(|l| l.contains(" -> "))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect(),
            security: None,
        },
        _ => Pending {
            packages: lines.filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect(),
            security: None,
        },
    }
}

/// `name/trixie-security …`, `name/jammy-security,jammy-updates …`.
fn is_security_suite(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .and_then(|first| first.split_once('/'))
        .is_some_and(|(_, suites)| suites.split(',').any(|s| s.ends_with("-security")))
}

/// `busybox-1.36.1-r31` → `busybox` (apk puts `-VERSION-rN` after the name).
fn apk_name(s: &str) -> String {
    let mut parts: Vec<&str> = s.rsplitn(3, '-').collect();
    match parts.len() {
        3 => parts.pop().unwrap_or(s).to_string(),
        _ => s.to_string(),
    }
}

/// A run as its files tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunFiles {
    Absent,
    Running { output: Vec<String> },
    Ended { rc: i32, reboot: bool, output: Vec<String> },
}

pub fn parse_result(out: &str) -> RunFiles {
    let (head, output) = out.split_once("--- output").unwrap_or((out, ""));
    let output: Vec<String> = output.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    let mut rc = None;
    let mut reboot = false;
    for line in head.lines() {
        match line.trim().split_once('=') {
            Some(("rc", v)) => rc = v.trim().parse().ok(),
            Some(("reboot", v)) => reboot = v.trim() == "yes",
            _ => {}
        }
    }
    match rc {
        Some(rc) => RunFiles::Ended { rc, reboot, output },
        None if head.contains("running") => RunFiles::Running { output },
        None => RunFiles::Absent,
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
