"""One lab per study: names, subnets, addresses and stand-in ports per inventory, kept in the
lab's state; `lab up` and `lab down` driven against a fake podman (no containers needed)."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import EXAMPLE, ScratchInventory
from xnat_fleet import container_ssh, lab
from xnat_fleet.cli import cli
from xnat_fleet.errors import FleetError
from xnat_fleet.model.loader import InventorySource, load_fleet

HOSTS = ["xnat-central", "relay-kings", "relay-leeds"]
net = ipaddress.IPv4Network


def test_two_inventories_with_the_same_directory_name_get_different_labs(tmp_path: Path) -> None:
    a, b = tmp_path / "one" / "study", tmp_path / "two" / "study"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    id_a, id_b = lab.lab_id(a), lab.lab_id(b)
    assert id_a != id_b
    assert id_a.startswith("study-") and id_b.startswith("study-")
    assert lab.container_name(id_a, "relay-kings") != lab.container_name(id_b, "relay-kings")
    assert lab.network_name(id_a) != lab.network_name(id_b)
    assert lab.lab_dir(InventorySource(a)) != lab.lab_dir(InventorySource(b))
    # the same directory, however it is named, is the same lab
    (tmp_path / "link").symlink_to(a)
    assert lab.lab_id(tmp_path / "link") == id_a == lab.lab_id(a / ".." / "study")


def test_lab_ids_are_short_names_podman_accepts(tmp_path: Path) -> None:
    odd = tmp_path / "My Study (2025) — Ünïcode & a very long directory name indeed"
    odd.mkdir()
    ident = lab.lab_id(odd)
    assert len(ident) <= lab.SLUG_LENGTH + 7
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in ident)
    assert ident == ident.lower() and not ident.startswith("-")
    assert lab.lab_id(tmp_path / "___").startswith("lab-")


def test_subnet_allocation_skips_subnets_other_networks_use() -> None:
    assert lab.allocate_subnet([]) == net("10.89.64.0/24")
    used = [net("10.88.0.0/16"), net("10.89.64.0/24"), net("10.89.65.128/25")]
    assert lab.allocate_subnet(used) == net("10.89.66.0/24")
    # a wide network covering the start of the pool pushes past it; IPv6 does not matter
    wide: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        net("10.89.64.0/20"),
        ipaddress.IPv6Network("fd00::/64"),
    ]
    assert lab.allocate_subnet(wide) == net("10.89.80.0/24")
    with pytest.raises(FleetError, match="no free /24"):
        lab.allocate_subnet([net("10.89.0.0/16")])


def test_state_keeps_addresses_and_ports_and_new_hosts_get_new_ones() -> None:
    first = lab.plan_state("s-1", EXAMPLE, HOSTS, None, used_subnets=[net("10.89.64.0/24")])
    assert first.subnet == "10.89.65.0/24"
    assert list(first.addresses.values()) == ["10.89.65.10", "10.89.65.11", "10.89.65.12"]
    assert list(first.standin_ports.values()) == [18480, 18481, 18482]
    # Next time another network has appeared on a lower /24 and the study gained a host before
    # the others in its order: nothing moves, the new host gets the next address and port.
    hosts = ["xnat-central", "relay-aaa", "relay-kings", "relay-leeds"]
    again = lab.plan_state(
        "s-1", EXAMPLE, hosts, first, used_subnets=[net("10.89.64.0/23")], own_subnet=first.subnet
    )
    assert again.subnet == first.subnet
    assert {h: again.addresses[h] for h in HOSTS} == first.addresses
    assert again.addresses["relay-aaa"] == "10.89.65.13"
    assert {h: again.standin_ports[h] for h in HOSTS} == first.standin_ports
    assert again.standin_ports["relay-aaa"] == 18483
    # a host taken out of the inventory keeps its address (its container may still run)
    fewer = lab.plan_state("s-1", EXAMPLE, ["xnat-central"], again, used_subnets=[])
    assert fewer.addresses == again.addresses
    assert lab.allocate_addresses(net(first.subnet), ["new"], fewer.addresses)["new"] == (
        "10.89.65.14"
    )


def test_a_kept_subnet_someone_else_took_meanwhile_is_given_up() -> None:
    first = lab.plan_state("s-1", EXAMPLE, HOSTS, None, used_subnets=[])
    # the lab's network is gone and another network now has its /24
    moved = lab.plan_state("s-1", EXAMPLE, HOSTS, first, used_subnets=[net(first.subnet)])
    assert moved.subnet != first.subnet
    assert all(ipaddress.ip_address(a) in net(moved.subnet) for a in moved.addresses.values())


def test_stand_in_ports_skip_other_labs_and_ports_in_use() -> None:
    other = lab.plan_state("other-1", EXAMPLE, HOSTS, None, used_subnets=[])
    owners = lab.port_owners([other])
    state = lab.plan_state(
        "mine-2",
        EXAMPLE,
        HOSTS,
        None,
        used_subnets=[net(other.subnet)],
        port_owners=owners,
        port_in_use=lambda p: p == 18484,
    )
    assert state.subnet != other.subnet
    assert list(state.standin_ports.values()) == [18483, 18485, 18486]
    assert owners[18480] == f"lab other-1 (inventory {EXAMPLE.resolve()})"


def test_state_persists_in_the_lab_directory(tmp_path: Path) -> None:
    state = lab.plan_state("s-1", EXAMPLE, HOSTS, None, used_subnets=[])
    state.connection = "podman"
    state.apt_proxy = "http://10.89.64.1:3142/"
    state.ssh_ports = {"relay-kings": 2222}
    lab.save_state(tmp_path / "s-1", state)
    assert lab.load_state(tmp_path / "s-1") == state
    assert lab.load_state(tmp_path / "nothing") is None
    lab.save_state(tmp_path / "s-2", lab.plan_state("s-2", EXAMPLE, HOSTS, None, used_subnets=[]))
    assert [o.lab_id for o in lab.other_labs("s-1", root=tmp_path)] == ["s-2"]
    (tmp_path / "s-1" / lab.STATE_FILE).write_text("{")
    with pytest.raises(FleetError, match="unreadable lab state"):
        lab.load_state(tmp_path / "s-1")


def test_a_stand_in_port_held_by_something_else_is_refused_naming_the_other_lab(
    tmp_path: Path,
) -> None:
    fleet = load_fleet(InventorySource(EXAMPLE))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = {h.name: port for h in fleet.hosts}
        with pytest.raises(FleetError, match=f"port {port} .* taken by lab other-1 \\(inventory"):
            lab.start_xnat_standins(fleet, tmp_path, ports, {port: "lab other-1 (inventory /x)"})
        with pytest.raises(FleetError, match="taken by something that is not this lab"):
            lab.start_xnat_standins(fleet, tmp_path, ports)
    assert not list(tmp_path.glob("*.pid"))  # nothing was started


def test_ssh_ports_follow_the_inventory(scratch: ScratchInventory) -> None:
    from xnat_fleet.model.loader import load_fleet_and_vars

    scratch.set("host_vars/relay-leeds/site.yml", "fleet_ssh_port", 2222)
    fleet, inv = load_fleet_and_vars(InventorySource(scratch.path))
    assert lab.ssh_ports(fleet, inv) == {"xnat-central": 22, "relay-kings": 22, "relay-leeds": 2222}


# -- lab up / down / status against a fake podman -----------------------------------------------


class FakePodman:
    """Just enough podman for lab.up/down/status: networks, containers, exec."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Any]] = {
            "podman": {"name": "podman", "subnets": [{"subnet": "10.88.0.0/16"}]},
            "xf-central": {"name": "xf-central", "subnets": [{"subnet": "10.89.64.0/24"}]},
        }
        self.containers: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> Any:  # the signature of lab._podman
        import subprocess

        self.calls.append(args)
        rc, out = 0, ""
        match args:
            case ("image", "exists", _):
                pass
            case ("network", "ls", "--format", "json"):
                out = json.dumps(list(self.networks.values()))
            case ("network", "create", *opts, name):
                subnet = opts[opts.index("--subnet") + 1]
                labels = dict(
                    o.split("=", 1) for i, o in enumerate(opts) if opts[i - 1] == "--label"
                )
                self.networks[name] = {
                    "name": name, "subnets": [{"subnet": subnet}], "labels": labels
                }  # fmt: skip
            case ("network", "rm", "-f", name):
                self.networks.pop(name, None)
            case ("run", *opts):
                name = opts[opts.index("--name") + 1]
                labels = dict(
                    o.split("=", 1) for i, o in enumerate(opts) if opts[i - 1] == "--label"
                )
                ip = opts[opts.index("--ip") + 1]
                self.containers[name] = {"Names": [name], "Labels": labels, "ip": ip}
            case ("inspect", "--type", "container", "--format", fmt, name):
                if name not in self.containers:
                    rc = 125
                elif "Labels" in fmt:
                    out = json.dumps(self.containers[name]["Labels"])
                else:
                    out = "running"
            case ("start", name):
                assert name in self.containers
            case ("ps", "-a", "--filter", flt, "--format", "json"):
                key, value = flt.removeprefix("label=").split("=", 1)
                out = json.dumps(
                    [c for c in self.containers.values() if c["Labels"].get(key) == value]
                )
            case ("rm", "-f", "--ignore", name):
                self.containers.pop(name, None)
            case ("exec", "-i", name, "sh", "-c", script):
                self.files[(name, script.removeprefix("cat > "))] = stdin or ""
            case ("exec", name, "rm", "-f", path):
                self.files.pop((name, path), None)
            case _:
                raise AssertionError(f"unexpected podman call {args}")
        return subprocess.CompletedProcess(["podman", *args], rc, out, "")


@pytest.fixture
def fake_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    podman = FakePodman()
    enrolled: list[dict[str, Any]] = []
    started: list[dict[str, int]] = []

    def enroll(
        container: str, address: str, user: str, key: str, known: Path, port: int = 22
    ) -> str:
        enrolled.append(
            {"container": container, "address": address, "user": user, "port": port, "kh": known}
        )
        line = container_ssh.known_hosts_line(address, port, "ssh-ed25519 AAAAfake")
        container_ssh.record_host_key(known, address, port, "ssh-ed25519 AAAAfake")
        return line

    def start(fleet: Any, directory: Path, ports: dict[str, int], owners: Any = None) -> Any:
        started.append(dict(ports))
        return lab.standin_urls(ports)

    monkeypatch.setattr(lab, "_podman", podman)
    monkeypatch.setattr(lab, "labs_root", lambda: tmp_path / "labs")
    monkeypatch.setattr(lab, "port_in_use", lambda port: False)
    monkeypatch.setattr(lab, "_apt_cache_port", lambda: 3142)
    monkeypatch.setattr(container_ssh, "enroll", enroll)
    monkeypatch.setattr(lab, "stage_standins", lambda *a, **k: {})
    monkeypatch.setattr(lab, "standin_inputs", lambda *a: {})
    monkeypatch.setattr(lab, "start_xnat_standins", start)
    yield {"podman": podman, "enrolled": enrolled, "started": started, "root": tmp_path}


def _copy(tmp_path: Path, where: str) -> InventorySource:
    from tests.conftest import copy_example

    return InventorySource(copy_example(tmp_path / where / "example"))


def test_lab_up_enrols_each_container_sets_its_apt_proxy_and_writes_an_ssh_overlay(
    fake_lab: dict[str, Any], tmp_path: Path
) -> None:
    source = _copy(tmp_path, "a")
    fleet = load_fleet(source)
    state = lab.up(fleet, source, sshd_ports={"relay-leeds": 2222})
    podman = fake_lab["podman"]
    assert state.subnet == "10.89.65.0/24"  # 10.89.64.0/24 is xf-central's
    assert podman.networks[state.network]["labels"][lab.LABEL_ID] == state.lab_id
    for h in fleet.hosts:
        container = podman.containers[f"xf-{state.lab_id}-{h.name}"]
        assert container["Labels"][lab.LABEL_ID] == state.lab_id
        assert container["Labels"][lab.LABEL_INVENTORY] == str(source.directory.resolve())
        assert container["ip"] == state.addresses[h.name]
        assert podman.files[(f"xf-{state.lab_id}-{h.name}", lab.APT_PROXY_FILE)] == (
            'Acquire::http::Proxy "http://10.89.65.1:3142/";\n'
        )
    assert [(e["user"], e["port"]) for e in fake_lab["enrolled"]] == [
        (lab.LAB_ADMIN, 22), (lab.LAB_ADMIN, 22), (lab.LAB_ADMIN, 2222)
    ]  # fmt: skip
    directory = lab.lab_dir(source)
    assert {e["kh"] for e in fake_lab["enrolled"]} == {directory / "known_hosts"}
    overlay = lab.overlay_path(source).read_text()
    assert "ansible_connection: ssh" in overlay and "StrictHostKeyChecking=yes" in overlay
    assert lab.load_state(directory) == state
    assert state.apt_proxy == "http://10.89.65.1:3142/" and state.connection == "ssh"

    # Again, with the podman connection and no apt cache: same addresses, proxy file removed.
    again = lab.up(fleet, source, connection="podman", apt_cache=False)
    assert again.addresses == state.addresses and again.standin_ports == state.standin_ports
    assert again.connection == "podman" and again.apt_proxy is None
    assert not any(path == lab.APT_PROXY_FILE for _, path in podman.files)
    assert "containers.podman.podman" in lab.overlay_path(source).read_text()
    assert len(fake_lab["enrolled"]) == 6  # re-enrolled after (re)starting


def test_two_studies_copied_from_the_example_get_separate_labs_and_down_removes_only_its_own(
    fake_lab: dict[str, Any], tmp_path: Path
) -> None:
    a, b = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    state_a = lab.up(load_fleet(a), a)
    state_b = lab.up(load_fleet(b), b)
    podman = fake_lab["podman"]
    assert state_a.lab_id != state_b.lab_id and state_a.network != state_b.network
    assert state_a.subnet != state_b.subnet
    assert not set(state_a.standin_ports.values()) & set(state_b.standin_ports.values())
    assert len(podman.containers) == 6
    removed = lab.down(b)
    assert removed == sorted(f"xf-{state_b.lab_id}-{h}" for h in HOSTS)
    assert sorted(podman.containers) == sorted(f"xf-{state_a.lab_id}-{h}" for h in HOSTS)
    assert state_a.network in podman.networks and state_b.network not in podman.networks
    assert lab.load_state(lab.lab_dir(a)) == state_a
    assert not lab.lab_dir(b).exists()


def test_lab_up_refuses_a_container_of_its_name_that_is_not_its_own(
    fake_lab: dict[str, Any], tmp_path: Path
) -> None:
    source = _copy(tmp_path, "a")
    ident = lab.lab_id(source.directory)
    fake_lab["podman"].containers[f"xf-{ident}-relay-kings"] = {
        "Names": [f"xf-{ident}-relay-kings"], "Labels": {"owner": "molecule"}, "ip": "x"
    }  # fmt: skip
    fake_lab["podman"].networks[f"xf-{ident}"] = {
        "name": f"xf-{ident}", "subnets": [{"subnet": "10.89.70.0/24"}]
    }  # fmt: skip
    with pytest.raises(FleetError, match="is not of lab"):
        lab.up(load_fleet(source), source)


def test_lab_status_shows_the_lab_id(fake_lab: dict[str, Any], tmp_path: Path) -> None:
    source = _copy(tmp_path, "a")
    runner = CliRunner()
    result = runner.invoke(cli, ["lab", "status", "-i", str(source.path), "--json"])
    assert result.exit_code == 0, result.output
    before = json.loads(result.output)
    assert before["lab_id"] == lab.lab_id(source.directory) and before["up"] is False
    state = lab.up(load_fleet(source), source)
    result = runner.invoke(cli, ["lab", "status", "-i", str(source.path), "--json"])
    after = json.loads(result.output)
    assert after["up"] is True and after["subnet"] == state.subnet
    assert after["connection"] == "ssh"
    kings = next(r for r in after["hosts"] if r["host"] == "relay-kings")
    assert kings["address"] == state.addresses["relay-kings"]
    assert "StrictHostKeyChecking=yes" in kings["ssh"] and "known_hosts" in kings["ssh"]
    table = runner.invoke(cli, ["lab", "status", "-i", str(source.path)])
    assert table.exit_code == 0 and state.lab_id in table.output


def test_lab_up_cli_takes_the_connection_and_the_apt_cache_switch(
    fake_lab: dict[str, Any], tmp_path: Path
) -> None:
    source = _copy(tmp_path, "a")
    runner = CliRunner()
    bad = runner.invoke(cli, ["lab", "up", "-i", str(source.path), "--connection", "local"])
    assert bad.exit_code == 2
    result = runner.invoke(
        cli, ["lab", "up", "-i", str(source.path), "--connection", "podman", "--no-apt-cache"]
    )
    assert result.exit_code == 0, result.output
    state = lab.load_state(lab.lab_dir(source))
    assert state is not None and state.connection == "podman" and state.apt_proxy is None
