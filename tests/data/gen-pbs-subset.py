#!/usr/bin/env python3
"""Regenerate tests/data/pbs-api-subset.json from ../shared/contracts.

Source: the published Proxmox Backup Server 4.x API viewer data (apidoc.js),
via shared/contracts/pbs/pbs-backup-controller-index.json. Licence of the
data: AGPL-3.0. It is test input for the PBS simulator's request checks and is
read at run time; it is never compiled into the binary.
"""
import json, pathlib, sys

here = pathlib.Path(__file__).resolve().parent
src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here.parents[2] / "shared/contracts/pbs/pbs-backup-controller-index.json"
index = json.loads(src.read_text())
out = {
    "source": "pbs.proxmox.com api-viewer/apidoc.js (PBS 4.x), via shared/contracts/pbs/pbs-backup-controller-index.json",
    "licence": "AGPL-3.0 (data); test input only, not compiled into the binary",
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
(here / "pbs-api-subset.json").write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
