//! The Helm chart and the kustomize base, checked with the official Helm
//! library by tests/chart/check.py. The Python packages live in
//! target/chart-venv, created here on first use (or by `.ci/run`); set
//! HOMELAB_CHART_PYTHON to use another interpreter.

use std::{path::Path, process::Command};

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn chart_python(root: &Path) -> String {
    if let Ok(p) = std::env::var("HOMELAB_CHART_PYTHON") {
        return p;
    }
    let venv = root.join("target/chart-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).and_then(|_| {
            run(Command::new(&python)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"])
                .arg(root.join("tests/chart/requirements.txt")))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&venv);
            panic!(
                "could not set up the chart test tools ({e})\ninstall them with\n  apt-get install python3-venv\n  python3 -m venv target/chart-venv && target/chart-venv/bin/pip install -r tests/chart/requirements.txt\n(.ci/run does this), or set HOMELAB_CHART_PYTHON"
            );
        }
    }
    python.display().to_string()
}

#[test]
fn chart_lints_renders_valid_objects_and_matches_the_kustomize_base() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = chart_python(root);
    let out = Command::new(&python)
        .arg(root.join("tests/chart/check.py"))
        .output()
        .expect("running tests/chart/check.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chart checks passed"), "{text}");
}
