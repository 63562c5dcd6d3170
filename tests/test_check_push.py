"""A relay added to a copy of the example gets its Xsync pushes admitted on the central host's
HTTPS (firewall_https_sources as the playbooks render it), or `check` refuses it."""

from __future__ import annotations

import subprocess

from tests.conftest import ScratchInventory
from xnat_fleet.model.loader import InventorySource, load_inventory, validate_inventory

NAT_ADDRESS = "198.51.100.7"  # York's hospital NAT, as the central host sees the relay


def _check(inv: ScratchInventory) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xnat-fleet", "check", "-i", str(inv.path)], capture_output=True, text=True, check=False
    )


def _add_york(inv: ScratchInventory, **host_vars: object) -> None:
    """What a new user does: a host entry in hosts.yml and a host_vars file like the others."""
    hosts = inv.load("hosts.yml")
    hosts["all"]["children"]["relays"]["hosts"]["relay-york"] = {"ansible_host": "10.63.0.10"}
    inv.dump("hosts.yml", hosts)
    york: dict[str, object] = {
        "fleet_site": {"id": "YORK", "name": "York Hospital imaging"},
        "fleet_fqdn": "relay-york.prism.example.org",
        "fleet_hardware": "nuc",
        "fleet_https_from": ["10.63.0.0/24"],
        "fleet_scanners": [{"name": "york-mr1", "ae_title": "YORK_MR1", "address": "10.63.1.5"}],
        "fleet_push_from": [NAT_ADDRESS],
        "fleet_sync": [{"project": "YORK_MR", "central_project": "PRISM_MR"}],
    }
    york.update(host_vars)
    inv.dump("host_vars/relay-york.yml", {k: v for k, v in york.items() if v is not None})
    # every relay has its own data volume passphrase (roles/storage), in the vault
    inv.inline_vault("host_vars/relay-york.yml", "vault_storage_recovery_passphrase", "york-" * 6)


def test_a_new_relay_is_admitted_on_the_central_host_without_editing_it(
    scratch: ScratchInventory,
) -> None:
    central_vars = (scratch.path / "group_vars/central/xnat.yml").read_text()
    _add_york(scratch)
    fleet, problems = validate_inventory(InventorySource(scratch.path))
    assert problems == [] and fleet is not None
    assert [r.name for r in fleet.relays] == ["relay-kings", "relay-leeds", "relay-york"]
    inv = load_inventory(InventorySource(scratch.path))
    central = inv.playbook_vars("xnat-central", ["firewall_https_sources"])
    assert central["firewall_https_sources"] == [
        "10.50.0.0/24",  # the central host's fleet_https_from
        "10.61.0.10",  # relay-kings' fleet_push_from
        "10.62.0.10",  # relay-leeds'
        NAT_ADDRESS,  # the new relay's, with no edit of the central host's variables
    ]
    assert (scratch.path / "group_vars/central/xnat.yml").read_text() == central_vars
    # a relay admits only its own fleet_https_from, not the other relays' pushes
    york = inv.playbook_vars("relay-york", ["firewall_https_sources"])
    assert york["firewall_https_sources"] == ["10.63.0.0/24"]
    proc = _check(scratch)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 relays (relay-kings, relay-leeds, relay-york)" in proc.stdout


def test_a_new_relay_without_its_push_address_is_refused(scratch: ScratchInventory) -> None:
    _add_york(scratch, fleet_push_from=None)
    proc = _check(scratch)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "relay-york: fleet_push_from: required with fleet_sync: " in proc.stdout
    assert "1 problem(s)" in proc.stdout


def test_a_hand_written_central_https_list_that_misses_the_new_relay_is_refused(
    scratch: ScratchInventory,
) -> None:
    # The inventory sets the role input itself, as the old example invited (relays by address):
    # it replaces the derived list, and the new relay's NAT address is not in it.
    scratch.set(
        "group_vars/central/xnat.yml",
        "firewall_https_sources",
        ["10.50.0.0/24", "10.61.0.10", "10.62.0.0/24"],
    )
    _add_york(scratch)
    _, problems = validate_inventory(InventorySource(scratch.path))
    assert [str(p).split(" is not admitted")[0] for p in problems] == [
        f"relay-york: fleet_push_from[0]: {NAT_ADDRESS}"
    ]
    assert "its Xsync pushes would be dropped" in problems[0].message


def test_push_network_covered_by_a_wider_source_is_admitted(scratch: ScratchInventory) -> None:
    scratch.set(
        "group_vars/central/xnat.yml",
        "firewall_https_sources",
        ["10.50.0.0/24", "10.61.0.0/16", "10.62.0.0/16", "198.51.100.0/24"],
    )
    _add_york(scratch, fleet_push_from=["198.51.100.0/28"])
    fleet, problems = validate_inventory(InventorySource(scratch.path))
    assert problems == [] and fleet is not None
    # the inventory's own list is what the central host gets (it replaces the derived one)
    inv = load_inventory(InventorySource(scratch.path))
    rendered = inv.playbook_vars("xnat-central", ["firewall_https_sources"])
    assert rendered["firewall_https_sources"][-1] == "198.51.100.0/24"
    assert len(rendered["firewall_https_sources"]) == 4
