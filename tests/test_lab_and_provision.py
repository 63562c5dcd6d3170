"""The lab overlay (SSH or podman connection, stand-ins) and the provision command's refusal
to run on an invalid inventory or without a lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import EXAMPLE, ScratchInventory
from xnat_fleet import lab
from xnat_fleet.cli import cli
from xnat_fleet.model.loader import InventorySource, load_fleet, validate_inventory

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9lepVAA19jSnfzTiJTjHIcoxMlL90ye3Q/PvzUcrdG lab"


def example_state(connection: str = "ssh") -> lab.LabState:
    fleet = load_fleet(InventorySource(EXAMPLE))
    hosts = [h.name for h in fleet.hosts]
    state = lab.plan_state(lab.lab_id(EXAMPLE), EXAMPLE, hosts, None, used_subnets=[])
    state.connection = connection
    state.ssh_ports = dict.fromkeys(hosts, 22)
    return state


def test_overlay_reaches_hosts_over_ssh_with_checked_host_keys(tmp_path: Path) -> None:
    fleet = load_fleet(InventorySource(EXAMPLE))
    state = example_state()
    state.ssh_ports["relay-leeds"] = 2222
    hosts = lab.overlay(fleet, state, KEY, tmp_path)["all"]["hosts"]
    assert set(hosts) == {"xnat-central", "relay-kings", "relay-leeds"}
    relay = hosts["relay-kings"]
    assert relay["ansible_connection"] == "ssh"
    assert relay["ansible_host"] == state.addresses["relay-kings"]
    assert relay["ansible_user"] == lab.LAB_ADMIN
    assert relay["ansible_become"] is True
    assert relay["ansible_ssh_private_key_file"] == str(tmp_path.resolve() / "id_ed25519")
    args = relay["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={tmp_path.resolve() / 'known_hosts'}" in args
    assert "StrictHostKeyChecking=yes" in args and "ControlPersist" in args
    assert "StrictHostKeyChecking=no" not in args
    assert relay["ansible_port"] == 22 and hosts["relay-leeds"]["ansible_port"] == 2222
    # the hardened sshd keeps admitting the lab admin from the lab network
    assert state.subnet in relay["firewall_ssh_sources"]
    assert lab.LAB_ADMIN in relay["base_admin_users"] and KEY in relay["base_admin_users"]
    assert len({h["ansible_host"] for h in hosts.values()}) == 3
    text = yaml.safe_dump(hosts)
    assert "host_key_checking" not in text


def test_overlay_keeps_the_podman_connection_for_comparison(tmp_path: Path) -> None:
    fleet = load_fleet(InventorySource(EXAMPLE))
    state = example_state("podman")
    hosts = lab.overlay(fleet, state, KEY, tmp_path)["all"]["hosts"]
    assert {h["ansible_connection"] for h in hosts.values()} == {"containers.podman.podman"}
    assert hosts["relay-kings"]["ansible_host"] == f"xf-{state.lab_id}-relay-kings"
    assert "ansible_user" not in hosts["relay-kings"]


@pytest.mark.parametrize("connection", lab.CONNECTIONS)
def test_overlay_still_validates_and_leaves_the_inventory_alone(
    tmp_path: Path, connection: str
) -> None:
    fleet = load_fleet(InventorySource(EXAMPLE))
    document = lab.overlay(fleet, example_state(connection), KEY, tmp_path)
    overlay = tmp_path / "lab.yml"
    overlay.write_text(yaml.safe_dump(document))
    layered = InventorySource(EXAMPLE, overlays=[overlay])
    fleet2, problems = validate_inventory(layered)
    assert problems == [] and fleet2 is not None
    # the example files were not touched: the overlay is a separate source
    assert "ansible_connection" not in (EXAMPLE / "hosts.yml").read_text()


def test_provision_refuses_an_invalid_inventory_before_running(
    scratch: ScratchInventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[Any] = []
    monkeypatch.setattr("xnat_fleet.cli.provision.run_playbook", lambda *a, **k: called.append(a))
    scratch.set("host_vars/relay-kings/site.yml", "fleet_scanners[0].address", "mr1.example.org")
    result = CliRunner().invoke(cli, ["provision", "-i", str(scratch.path)])
    assert result.exit_code != 0
    assert "relay-kings: fleet_scanners[0].address" in str(result.exception)
    assert called == []


def test_overlay_swaps_pinned_artifacts_for_the_standins(tmp_path: Path) -> None:
    fleet = load_fleet(InventorySource(EXAMPLE))
    manifest = {
        "web": {"file": "standin-web-lab.war", "sha256": "a" * 64},
        "tomcat": {"file": "apache-tomcat-9.0.70.tar.gz", "version": "9.0.70", "sha256": "b" * 64},
        "jre": {"file": lab.JRE_FILE, "version": "17", "sha256": "9" * 64},
        "xsync": {"file": "standin-xsync-1.0.0.jar", "sha256": "c" * 64},
        "ldap-auth": {"file": "standin-ldap-auth-1.0.0.jar", "sha256": "d" * 64},
        "openid-auth": {"file": "standin-openid-auth-1.0.0.jar", "sha256": "e" * 64},
        "container-service": {"file": "standin-container-service-1.0.0.jar", "sha256": "f" * 64},
    }
    hosts = lab.overlay(fleet, example_state(), KEY, tmp_path, tmp_path, manifest)["all"]["hosts"]
    relay, central = hosts["relay-kings"], hosts["xnat-central"]
    assert relay["xnat_war_src"] == str(tmp_path / "standin-web-lab.war")
    assert relay["tomcat_archive_sha256"] == "b" * 64
    assert [p["name"] for p in relay["xnat_plugins"]] == ["xsync"]
    assert [p["name"] for p in central["xnat_plugins"]] == [
        "ldap-auth",
        "openid-auth",
        "container-service",
    ]
    # The pinned-archive path real hosts take, with the Java archive fixture.
    assert central["java_source"] == relay["java_source"] == "archive"
    assert central["java_archive_src"] == str(tmp_path / lab.JRE_FILE)
    assert central["java_archive_sha256"] == "9" * 64 and central["java_major"] == 17


def test_lab_xnat_standins_start_answer_as_standins_and_stop(tmp_path: Path) -> None:
    import socket

    import requests

    from tests.xnat_helpers import initialise

    fleet = load_fleet(InventorySource(EXAMPLE))
    # Not the lab's own ports: a demo lab may be running on this machine.
    sockets = [socket.socket() for _ in fleet.hosts]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = {h.name: s.getsockname()[1] for h, s in zip(fleet.hosts, sockets, strict=True)}
    for s in sockets:
        s.close()
    urls = lab.start_xnat_standins(fleet, tmp_path, ports)
    try:
        assert set(urls) == {h.name for h in fleet.hosts}
        for name, url in urls.items():
            r = requests.get(url + "/", timeout=5)
            assert r.headers.get("X-Standin") == "xnat-fleet", name
            assert "NOT XNAT" in r.text
        initialise(urls["relay-kings"])  # documented REST calls (docs/xnat-api.md §6)
        relay = requests.get(
            urls["relay-kings"] + "/xapi/plugins", auth=("admin", "admin"), timeout=5
        )
        assert "xsync" in relay.text  # relays run the Xsync plugin, the central does not
        # a second start keeps the running processes (same pid files)
        pids = sorted(p.read_text() for p in tmp_path.glob("xnat-standin-*.pid"))
        lab.start_xnat_standins(fleet, tmp_path, ports)
        assert sorted(p.read_text() for p in tmp_path.glob("xnat-standin-*.pid")) == pids
    finally:
        lab.stop_xnat_standins(tmp_path)
    for url in urls.values():
        with pytest.raises(requests.ConnectionError):
            for _ in range(50):  # SIGTERM takes a moment
                requests.get(url + "/", timeout=1)
                import time

                time.sleep(0.1)


def test_provision_lab_needs_a_lab_of_this_inventory(
    scratch: ScratchInventory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lab, "labs_root", lambda: tmp_path / "labs")
    called: list[Any] = []
    monkeypatch.setattr("xnat_fleet.cli.provision.run_playbook", lambda *a, **k: called.append(a))
    result = CliRunner().invoke(cli, ["provision", "-i", str(scratch.path), "--lab"])
    assert result.exit_code != 0
    assert "lab up -i" in str(result.exception)
    assert called == []
