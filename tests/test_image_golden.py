"""The golden NUC image of the example study, as `xnat-fleet image build` makes it: its manifest
and checksums, the audit on the real image, no per-site value inside, nothing started that must
wait for the relay, and XNAT's HTTPS and DICOM ports closed from outside (a scanner's address
included) while SSH answers the study's admin network."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE, demo_vault
from xnat_fleet import container_ssh
from xnat_fleet.image import audit, bmap, seal
from xnat_fleet.image import build as build_lib
from xnat_fleet.image import write as write_lib
from xnat_fleet.model.loader import InventorySource, load_inventory
from xnat_fleet.runner import inventory_secrets

pytestmark = pytest.mark.image


def _raw(golden: build_lib.BuildResult) -> Path:
    return golden.directory / f"{golden.image_id}-{golden.image_version}.raw"


def _tree(golden: build_lib.BuildResult) -> Path:
    # The sealed tree the image was assembled from (the build keeps it in its work directory).
    return golden.directory.parents[1] / "work" / golden.profile / "root"


def test_manifest_checksums_and_stamps(golden: build_lib.BuildResult) -> None:
    m = golden.manifest
    assert (m["profile"], m["study"], m["image_version"]) == ("nuc", "PRISM", "test")
    assert m["xnat_version"] == "1.9.3.6"  # the central host's
    assert "NOT XNAT" in m["xnat_artifacts"]
    assert m["inputs"]["relay_images/nuc.yml"] and m["inputs"]["roles/xnat/tasks/main.yml"]
    assert "inventory/group_vars/all/vault.yml" in m["inputs"]
    assert m["mapped_bytes"] < m["size_bytes"]
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=golden.directory, capture_output=True, text=True
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    block_map = bmap.read(golden.directory / f"{golden.image_id}-test.bmap")
    assert (
        block_map.mapped_bytes == m["mapped_bytes"]
        and write_lib.verify(block_map, _raw(golden)) == []
    )
    latest = golden.directory.parent / f"{golden.image_id}-latest"
    assert latest.resolve() == golden.directory.resolve()
    fields = seal.read_os_release(_tree(golden))
    assert fields["IMAGE_ID"] == "prism-relay-nuc" and fields["IMAGE_VERSION"] == "test"
    assert fields[seal.XNAT_VERSION_KEY] == "1.9.3.6"


def test_the_audit_of_the_real_image_is_clean(golden: build_lib.BuildResult) -> None:
    source = InventorySource(EXAMPLE)
    secrets = inventory_secrets(load_inventory(source).hostvars, source.vault_password())
    assert len(secrets) >= 5
    assert audit.scan_image(_raw(golden), secrets) == []


def _site_values() -> set[str]:
    """Strings only a relay's host_vars hold: site ids, FQDNs, scanners, AE titles."""
    values: set[str] = set()
    for f in sorted((EXAMPLE / "host_vars").glob("relay-*/site.yml")):
        v = yaml.safe_load(f.read_text())
        values |= {v["fleet_site"]["id"], v["fleet_fqdn"], f.parent.name}
        values |= {s["ae_title"] for s in v.get("fleet_scanners", [])}
        values |= {s["address"] for s in v.get("fleet_scanners", [])}
        values |= {p["project"] for p in v.get("fleet_sync", [])}
    return values


def test_no_per_site_value_and_nothing_waits_for_the_site(golden: build_lib.BuildResult) -> None:
    tree = _tree(golden)
    values = sorted(_site_values())
    assert "relay-kings.prism.example.org" in values and "KCH_MR1" in values
    args = [a for v in values for a in ("-e", v)]
    where = [
        d for d in ("etc", "data", "var/lib", "opt", "usr/local", "root") if (tree / d).is_dir()
    ]
    found = subprocess.run(
        # whole words: a site id is not found in a longer word (KINGS in smartmontools'
        # drive database's KINGSTON)
        ["grep", "-rIlFw", "--devices=skip", *args, *where],
        cwd=tree, capture_output=True, text=True,
    )  # fmt: skip
    assert found.returncode == 1, f"per-site values in: {found.stdout}"
    # XNAT's per-site configuration and the proxy's key are the relay's own (personalisation).
    for path in (
        "data/xnat/home/config/xnat-conf.properties",
        "data/xnat/home/config/prefs-init.ini",
        "etc/ssl/xnat-fleet/proxy.key",
        "etc/nginx/sites-enabled/xnat-fleet.conf",
        "etc/postfix/sasl_passwd",
    ):
        assert not (tree / path).exists(), path
    # The WAR and the plugins are in the image; Tomcat is not enabled, and stays so at first boot.
    assert (tree / "var/lib/tomcat/webapps/ROOT.war").is_file() or list(
        (tree / "var/lib/tomcat/webapps").glob("ROOT*")
    )
    assert not (tree / "etc/systemd/system/multi-user.target.wants/tomcat.service").exists()
    preset = (tree / "etc/systemd/system-preset/00-xnat-fleet-image.preset").read_text()
    assert "enable ssh.service" in preset and "tomcat" not in preset
    assert preset.rstrip().endswith("disable *")
    # No vault value in the converge's own files either (the audit checks the whole image).
    vault = yaml.safe_load(
        demo_vault().decrypt((EXAMPLE / "group_vars/all/vault.yml").read_bytes())
    )
    pg = (tree / "etc/postgresql").rglob("*")
    assert not [p for p in pg if p.is_file() and vault["vault_xnat_db_password"] in p.read_text()]


def _probe(address: str, port: int, timeout: float = 4.0) -> str:
    """ "banner" (the server spoke), "refused" (nothing listens) or "dropped" (no answer)."""
    with socket.socket() as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return "banner" if s.recv(16) else "closed"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "dropped"


def _network(name: str, subnet: str) -> None:
    proc = container_ssh.podman("network", "create", "--subnet", subnet, name)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def golden_container(golden: build_lib.BuildResult) -> Iterator[dict[str, str]]:
    """The sealed tree as a systemd container (an overlay: the tree is not changed) on the
    study's admin network and on a scanner site's network."""
    fleet_networks = yaml.safe_load((EXAMPLE / "group_vars/all/network.yml").read_text())
    admin = ipaddress.ip_network(fleet_networks["fleet_networks"]["admin"][0])
    kings = yaml.safe_load((EXAMPLE / "host_vars/relay-kings/site.yml").read_text())
    scanner = kings["fleet_scanners"][0]["address"]
    site = ipaddress.ip_network(f"{scanner}/24", strict=False)
    tag = f"xf-golden-{os.getpid()}"
    names = {"admin": f"{tag}-admin", "site": f"{tag}-site"}
    _network(names["admin"], str(admin))
    _network(names["site"], str(site))
    relay_admin = str(admin.network_address + 10)
    relay_site = str(site.network_address + 10)
    try:
        run = container_ssh.podman(
            "run", "-d", "--name", tag, "--systemd=always", "--cap-add", "NET_ADMIN",
            "--network", f"{names['admin']}:ip={relay_admin}",
            "--network", f"{names['site']}:ip={relay_site}",
            "--rootfs", f"{_tree(golden)}:O", "/sbin/init",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        container_ssh.wait_booted(tag)
        yield {
            "name": tag, "relay_admin": relay_admin, "relay_site": relay_site,
            "scanner": scanner, "site_network": names["site"],
        }  # fmt: skip
    finally:
        container_ssh.podman("rm", "-f", "--ignore", tag, f"{tag}-scanner")
        container_ssh.podman("network", "rm", "-f", names["admin"], names["site"])


SCANNER_PROBE = """
import socket, sys
for port in map(int, sys.argv[2:]):
    s = socket.socket(); s.settimeout(4)
    try:
        s.connect((sys.argv[1], port)); print(port, "open")
    except ConnectionRefusedError:
        print(port, "refused")
    except OSError:
        print(port, "dropped")
"""


def test_xnat_ports_are_closed_and_ssh_answers_only_the_admin_network(
    golden_container: dict[str, str],
) -> None:
    c = golden_container
    units = container_ssh.podman("exec", c["name"], "systemctl", "is-active", "nftables", "ssh")
    assert units.stdout.split() == ["active", "active"], units.stdout + units.stderr
    tomcat = container_ssh.podman("exec", c["name"], "systemctl", "is-active", "tomcat")
    assert tomcat.stdout.strip() == "inactive"
    deadline = time.monotonic() + 30  # sshd makes its host keys first
    while _probe(c["relay_admin"], 22) != "banner" and time.monotonic() < deadline:
        time.sleep(1)
    # This machine is on the admin network (its gateway address): SSH answers, nothing else.
    assert _probe(c["relay_admin"], 22) == "banner"
    for port in (443, 8104, 80, 8080):
        assert _probe(c["relay_admin"], port) == "dropped", port
    # From the address of a scanner of the site (a converged relay admits it for DICOM).
    scanner = container_ssh.podman(
        "run", "--rm", "--name", f"{c['name']}-scanner",
        "--network", f"{c['site_network']}:ip={c['scanner']}",
        "localhost/xnat-fleet-base:bookworm",
        "python3", "-c", SCANNER_PROBE, c["relay_site"], "22", "443", "8104",
    )  # fmt: skip
    assert scanner.returncode == 0, scanner.stderr
    said = dict(line.split() for line in scanner.stdout.splitlines())
    # "dropped", not "refused": the firewall drops them (nothing listens on 443 or 8104 either).
    assert said == {"22": "dropped", "443": "dropped", "8104": "dropped"}, said


def test_bmaptool_writes_the_shipped_zst_with_our_bmap(
    golden: build_lib.BuildResult, tmp_path: Path
) -> None:
    """Debian's bmaptool reads our block map and decompresses the shipped .zst; every mapped
    range of what it wrote matches the map's checksums, and a flipped byte is caught."""
    stem = golden.directory / f"{golden.image_id}-{golden.image_version}"
    target = tmp_path / "disk.img"
    copy = subprocess.run(
        ["bmaptool", "copy", "--bmap", f"{stem}.bmap", f"{stem}.raw.zst", str(target)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert copy.returncode == 0, copy.stderr
    block_map = bmap.read(Path(f"{stem}.bmap"))
    assert target.stat().st_size == block_map.image_size
    assert write_lib.verify(block_map, target) == []
    first = block_map.ranges[len(block_map.ranges) // 2]
    with target.open("r+b") as f:
        f.seek(first.first * block_map.block_size)
        byte = f.read(1)
        f.seek(first.first * block_map.block_size)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert write_lib.verify(block_map, target) == [first]


class _Plant(build_lib.Reporter):
    """Leaves a private key and a vault value in the tree once it is sealed (as a role that
    wrote them where sealing does not look would)."""

    def __init__(self, tree: Path, value: str) -> None:
        self.tree, self.value = tree, value

    def done(self, stage: str, seconds: float, note: str) -> None:
        if stage != "seal":
            return
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (self.tree / "opt/leftover").mkdir(parents=True)
        (self.tree / "opt/leftover/service.key").write_bytes(key)
        (self.tree / "etc/leftover.conf").write_text(f"password = {self.value}\n")


def test_a_build_whose_audit_fails_publishes_nothing(
    golden: build_lib.BuildResult, tmp_path: Path
) -> None:
    from tests.image_fixtures import BUILD_DIR

    build_dir = tmp_path / "build"
    build_dir.mkdir()
    for shared in ("cache", "standins"):  # the golden build's converge and stand-ins
        (build_dir / shared).symlink_to(BUILD_DIR / shared)
    value = yaml.safe_load(
        demo_vault().decrypt((EXAMPLE / "group_vars/all/vault.yml").read_bytes())
    )["vault_xnat_db_password"]
    plant = _Plant(build_dir / "work" / "nuc" / "root", value)
    with pytest.raises(build_lib.AuditFailed) as caught:
        build_lib.build(
            InventorySource(EXAMPLE), "nuc", build_dir=build_dir, standins=True,
            version="planted", reporter=plant,
        )  # fmt: skip
    found = {(f.path, f.rule) for f in caught.value.findings}
    assert found == {
        ("/opt/leftover/service.key", "private-key"),
        ("/etc/leftover.conf", "vault-value"),
    }, found
    assert value not in str(caught.value)  # the finding names the value by number only
    assert "nothing was published" in str(caught.value)
    assert not (build_dir / "images").exists()
    assert not (build_dir / "work" / "nuc" / "out").exists()
