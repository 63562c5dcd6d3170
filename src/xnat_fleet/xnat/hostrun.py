"""One host's reconciliation as a JSON-in/JSON-out process, for the xnat_config role's module.

An Ansible module runs inside AnsiballZ's reduced ``ansible`` package, where Ansible's inventory
and vault machinery (which the engine loads the study with) cannot be imported; the module
therefore runs ``python -m xnat_fleet.xnat.hostrun`` and reads its answer. Input (stdin):
``{"inventory": [files], "host": name, "prune": bool, "check": bool,
"vault_password_file": path or ""}``. Output (stdout): the module result, never a secret.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from xnat_fleet.errors import FleetError
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.xnat.engine import Engine, open_study


def run(request: dict[str, Any]) -> dict[str, Any]:
    sources = [Path(s) for s in request["inventory"]]
    password = request.get("vault_password_file") or ""
    source = InventorySource(
        path=sources[0],
        overlays=sources[1:],
        vault_password_file=Path(password) if password else None,
    )
    host = str(request["host"])
    engine: Engine | None = None
    try:
        engine, _names = open_study(source, prune=bool(request.get("prune")))
        if host not in engine.desired:
            return {"failed": True, "msg": f"{host}: not a host of the inventory {sources[0]}"}
        hp = engine.plan(host)
        result: dict[str, Any] = {
            "standin": bool(hp.plan.labels),
            "plan": hp.plan.render().splitlines(),
            "changes": [c.to_dict() for c in hp.plan.drift],
            "changed": bool(hp.plan.drift),
        }
        if hp.plan.drift and not request.get("check"):
            done = engine.apply(hp)
            result["changes"] = [c.to_dict() for c in done]
            result["changed"] = bool(done)
        return result
    except FleetError as exc:
        message = engine.scrub(str(exc)) if engine else str(exc)
        return {"failed": True, "msg": message}
    finally:
        if engine is not None:
            engine.close()


def main() -> None:
    # Started from a playbook run, this process inherits its environment; ansible-runner's
    # fact cache (ANSIBLE_CACHE_PLUGIN*) would add gathered facts to the inventory's variables.
    for key in [k for k in os.environ if k.startswith("ANSIBLE_CACHE_PLUGIN")]:
        del os.environ[key]
    result = run(json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
