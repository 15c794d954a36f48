//! The Helm chart and the kustomize base, checked with the official Helm
//! library by tests/chart/check.py. `.ci/run` installs its Python packages
//! into target/chart-venv; set HOMELAB_CHART_PYTHON to use another interpreter.

use std::{path::Path, process::Command};

#[test]
fn chart_lints_renders_valid_objects_and_matches_the_kustomize_base() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HOMELAB_CHART_PYTHON").unwrap_or_else(|_| root.join("target/chart-venv/bin/python").display().to_string());
    assert!(
        Path::new(&python).exists(),
        "{python} not found: install the chart test tools with\n  python3 -m venv target/chart-venv && target/chart-venv/bin/pip install -r tests/chart/requirements.txt\n(.ci/run does this), or set HOMELAB_CHART_PYTHON"
    );
    let out = Command::new(&python)
        .arg(root.join("tests/chart/check.py"))
        .output()
        .expect("running tests/chart/check.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chart checks passed"), "{text}");
}
