#!/usr/bin/env python3
"""Regenerate tests/data/pve-api-subset.json from ../shared/contracts.

Source: proxmox/pve-docs api-viewer/apidata.js (Proxmox VE 9.1), via
shared/contracts/pve/pve-guest-controller-index.json. Licence of the data:
AGPL-3.0-or-later. It is test input for the simulator's request checks and is
read at run time; it is never compiled into the binary.
"""
import json, pathlib, sys

here = pathlib.Path(__file__).resolve().parent
src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here.parents[2] / "shared/contracts/pve/pve-guest-controller-index.json"
index = json.loads(src.read_text())

# Calls the guest index leaves out that the operator makes (guest updates go
# through the QEMU guest agent), taken from the full API schema beside it.
EXTRA = [
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/exec"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status"),
]


def walk(nodes):
    for n in nodes:
        yield n
        yield from walk(n.get("children") or [])


full = {n["path"]: n for n in walk(json.loads((src.parent / "pve-api-schema.json").read_text()))}
for method, path in EXTRA:
    info = full[path]["info"][method]
    index["endpoints"].append({"method": method, "path": path, "parameters": info.get("parameters", {}), "permissions": info.get("permissions", {})})
out = {
    "source": "proxmox/pve-docs api-viewer/apidata.js (PVE 9.1), via shared/contracts/pve/pve-guest-controller-index.json",
    "licence": "AGPL-3.0-or-later (data); test input only, not compiled into the binary",
    "endpoints": [
        {
            "method": e["method"],
            "path": e["path"],
            "returns_task_upid": e.get("returns_task_upid", "never"),
            "parameters": e.get("parameters", {}),
            "permissions": e.get("permissions", {}),
        }
        for e in index["endpoints"]
    ],
}
(here / "pve-api-subset.json").write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
