#!/usr/bin/env python3
"""Checks of the Helm chart with the official Helm library (helm-python-sdk):
lint, render with default and CI values, every rendered object valid for
Kubernetes 1.33, values.schema.json refusing bad values, least-privilege RBAC,
hardened pod, CRD copies and the kustomize base fresh.

    python3 tests/chart/check.py           # check
    python3 tests/chart/check.py --write   # regenerate manifests/install/rendered.yaml and the chart's crds/
"""
import json
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "homelab-operator"
INSTALL = ROOT / "manifests" / "install"
K8S_VERSION = "1.33"
RELEASE = dict(name="homelab-operator", namespace="homelab-operator", is_install=True)
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def render(values):
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, **RELEASE)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return out, docs


def rendered_text(values):
    out, _ = render(values)
    parts = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        parts.append(f"# Source: {path}\n{text.strip()}\n")
    return "# Generated from charts/homelab-operator with manifests/install/values.yaml by tests/chart/check.py --write; do not edit.\n---\n" + "---\n".join(parts)


def load_values(path):
    return yaml.safe_load(path.read_text()) or {}


def validate_objects(docs, label):
    kinds = set()
    for path, doc in docs:
        kind = f"{doc.get('apiVersion')}/{doc.get('kind')}"
        kinds.add(doc.get("kind"))
        check(doc.get("metadata", {}).get("name"), f"{label}: {path}: {kind} without a name")
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            # Prometheus Operator kinds have no schema in kubernetes-validate; check the essentials.
            check("spec" in doc, f"{label}: {path}: {kind} without spec")
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            failures.append(f"{label}: {path}: {kind} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")
    return kinds


def main():
    write = "--write" in sys.argv
    crate_version = next(l.split('"')[1] for l in (ROOT / "Cargo.toml").read_text().splitlines() if l.startswith("version"))
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    check(chart_meta["appVersion"] == crate_version, f"Chart appVersion {chart_meta['appVersion']} != crate version {crate_version}")

    # CRDs in the chart are byte-identical copies of crds/.
    for crd in sorted((ROOT / "crds").glob("homelab.dev_*.yaml")):
        copy = CHART / "crds" / crd.name
        if write:
            copy.write_bytes(crd.read_bytes())
        check(copy.exists() and copy.read_bytes() == crd.read_bytes(), f"{copy} is not a copy of {crd} (run --write)")
    for extra in (CHART / "crds").glob("*"):
        check((ROOT / "crds" / extra.name).exists(), f"{extra} has no counterpart in crds/")

    defaults = {}
    ci = load_values(CHART / "ci-values.yaml")
    install = load_values(INSTALL / "values.yaml")
    for label, values in [("defaults", defaults), ("ci-values", ci)]:
        lint = helm.lint(str(CHART), values, strict=False, namespace="homelab-operator")
        check(not lint["errors"], f"lint {label}: {lint['errors']}")
        for m in lint["messages"]:
            check(m["severity"] < 3, f"lint {label}: {m}")
        _, docs = render(values)
        kinds = validate_objects(docs, label)
        check({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Secret", "Service"} <= kinds, f"{label}: missing kinds, got {kinds}")
        if label == "ci-values":
            check({"Role", "RoleBinding", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= kinds, f"ci-values: optional kinds missing: {kinds}")
        for path, doc in docs:
            if doc["kind"] in ("ClusterRole", "Role"):
                for rule in doc.get("rules", []):
                    for field in ("apiGroups", "resources", "verbs"):
                        check("*" not in rule.get(field, []), f"{label}: {doc['kind']} {doc['metadata']['name']} has a wildcard in {field}")
                    check("secrets" not in rule.get("resources", []) or doc["kind"] == "Role", f"{label}: Secrets granted cluster-wide")
            if doc["kind"] == "Deployment":
                pod = doc["spec"]["template"]["spec"]
                c = pod["containers"][0]
                sc = c["securityContext"]
                check(pod["securityContext"]["runAsNonRoot"] is True, "pod must run as non-root")
                check(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "seccomp RuntimeDefault")
                check(sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, "read-only root, no privilege escalation")
                check(sc["capabilities"]["drop"] == ["ALL"], "all capabilities dropped")
                check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz", "probes")
                check("checksum/config" in doc["spec"]["template"]["metadata"]["annotations"], "checksum annotation")
                if label == "ci-values":
                    check(doc["spec"]["replicas"] == 2, "replicas from values")
                    check(any(v["name"] == "secret-pve-token" for v in pod["volumes"]), "credential secret mounted")
            if doc["kind"] == "Secret":
                cfg = yaml.safe_load(doc["stringData"]["config.yaml"])
                if label == "ci-values":
                    check(cfg["proxmox"]["default"]["tokenSecretFile"] == "/secrets/pve-token/token", "config rendered from values")

    # The config checksum rolls the pods when the config changes.
    def checksum(values):
        _, docs = render(values)
        dep = next(d for _, d in docs if d["kind"] == "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = json.loads(json.dumps(ci))
    changed["config"]["proxmox"]["default"]["timeoutSeconds"] = 10
    check(checksum(ci) != checksum(changed), "checksum/config does not change with the config")

    # existingConfigSecret: no Secret rendered, the Deployment mounts the named one.
    _, docs = render({"existingConfigSecret": "my-config"})
    check(not any(d["kind"] == "Secret" for _, d in docs), "existingConfigSecret still renders a Secret")
    dep = next(d for _, d in docs if d["kind"] == "Deployment")
    check(dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == "my-config", "existingConfigSecret not mounted")

    # values.schema.json refuses bad values at install time.
    bad = [
        {"replicaCount": 0},
        {"image": {"repository": ""}},
        {"config": {"proxmox": {"default": {"url": "https://x:8006", "tokenId": "a@pve!b", "tokenSecret": "inline-secret"}}}},
        {"config": {"proxmox": {"default": {"url": "pve.lan", "tokenId": "a@pve!b"}}}},
        {"metrics": {"port": "eighty"}},
        {"unknownKey": True},
    ]
    for values in bad:
        try:
            render(values)
            failures.append(f"values.schema.json accepted {values}")
        except helm.HelmError:
            pass

    # The kustomize base is the chart rendered with manifests/install/values.yaml.
    text = rendered_text(install)
    target = INSTALL / "rendered.yaml"
    if write:
        target.write_text(text)
    check(target.exists() and target.read_text() == text, f"{target} is stale: run python3 tests/chart/check.py --write")
    _, docs = render(install)
    validate_objects(docs, "install")

    if failures:
        print("chart checks failed:")
        for f in failures:
            print("  -", f)
        sys.exit(1)
    print("chart checks passed")


if __name__ == "__main__":
    main()
