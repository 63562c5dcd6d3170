#!/usr/bin/python
"""Ansible module: reconcile one host's XNAT with the inventory (xnat-fleet's engine).

Runs on the controller with the Python that runs Ansible (xnat-fleet installed). Loads and
validates the whole inventory itself (Xsync pairings need the central host's state), plans, and
unless in check mode applies and reads back. The result holds no secret: plans show "(secret)".
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: xnat_fleet_xnat
short_description: Reconcile XNAT's configuration with an xnat-fleet inventory
description:
  - Plans and applies the xnat-fleet reconcilers for one inventory host over XNAT's REST API.
options:
  inventory:
    description: Inventory sources (the inventory file first, overlays after).
    type: list
    elements: str
    required: true
  host:
    description: The inventory host whose XNAT to configure.
    type: str
    required: true
  prune:
    description: Also delete what the inventory no longer lists.
    type: bool
    default: false
  vault_password_file:
    description: Vault password file; empty = environment or the inventory's xnat-fleet.yml.
    type: str
    default: ""
author: xnat-fleet
"""

RETURN = r"""
plan:
  description: The plan, one line per change (no secrets).
  type: list
  elements: str
  returned: always
changes:
  description: The changes planned (check mode) or applied.
  type: list
  elements: dict
  returned: always
standin:
  description: True when the XNAT answering is the tests' REST stand-in, not XNAT.
  type: bool
  returned: always
"""

from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "inventory": {"type": "list", "elements": "str", "required": True},
            "host": {"type": "str", "required": True},
            "prune": {"type": "bool", "default": False},
            "vault_password_file": {"type": "str", "default": "", "no_log": False},
        },
        supports_check_mode=True,
    )
    try:
        from xnat_fleet.errors import FleetError
        from xnat_fleet.model.loader import InventorySource, load_fleet_and_vars
        from xnat_fleet.xnat.engine import Engine, desired_states
    except ImportError as exc:
        module.fail_json(msg=f"xnat-fleet is not installed in {module._name} Python: {exc}")
        return
    sources = [Path(s) for s in module.params["inventory"]]
    password = module.params["vault_password_file"]
    source = InventorySource(
        path=sources[0],
        overlays=sources[1:],
        vault_password_file=Path(password) if password else None,
    )
    host = module.params["host"]
    engine = None
    try:
        fleet, inv = load_fleet_and_vars(source)
        engine = Engine(
            desired_states(fleet, inv.hostvars, source.directory), prune=module.params["prune"]
        )
        if host not in engine.desired:
            module.fail_json(msg=f"{host}: not a host of the inventory {sources[0]}")
        hp = engine.plan(host)
        result: dict[str, Any] = {
            "standin": bool(hp.plan.labels),
            "plan": hp.plan.render().splitlines(),
            "changes": [c.to_dict() for c in hp.plan.drift],
            "changed": bool(hp.plan.drift),
        }
        if hp.plan.drift and not module.check_mode:
            done = engine.apply(hp)
            result["changes"] = [c.to_dict() for c in done]
            result["changed"] = bool(done)
        module.exit_json(**result)
    except FleetError as exc:
        module.fail_json(msg=engine.scrub(str(exc)) if engine else str(exc))
    finally:
        if engine is not None:
            engine.close()


if __name__ == "__main__":
    main()
