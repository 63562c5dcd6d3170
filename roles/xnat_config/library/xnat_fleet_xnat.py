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

import json
import sys

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
    request = dict(module.params)
    request["check"] = module.check_mode
    # The engine runs in its own process (xnat_fleet.xnat.hostrun explains why).
    rc, out, err = module.run_command(
        [sys.executable, "-m", "xnat_fleet.xnat.hostrun"], data=json.dumps(request)
    )
    try:
        result = json.loads(out)
    except ValueError:
        tail = (err or out).strip().splitlines()[-5:]
        module.fail_json(msg=f"xnat-fleet engine failed (rc={rc}): " + " | ".join(tail))
        return
    if result.pop("failed", False):
        module.fail_json(msg=result.get("msg", "xnat-fleet engine failed"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
