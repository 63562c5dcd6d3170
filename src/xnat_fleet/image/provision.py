"""Provisioning: the relay roles converged on the base root, imported as a systemd container.

The base tarball (:mod:`xnat_fleet.image.base`) is imported into podman once per base key
(``localhost/xnat-fleet-image-base:<key>``) and started as a systemd container. Ansible reaches
it through the podman connection (Mitogen's ``podman`` transport: ``podman exec``), not over
SSH: the build needs no account, no key and no firewall rule inside the image, so sealing has no
build login to remove and the image's sshd never met the build. ``playbooks/image.yml`` runs
the relay stack with ``xnat_fleet_image_build`` on a generic identity (``BUILD_HOST``): the
study's group_vars of ``all`` and ``relays`` and none of any relay's host_vars. The container is
then stopped (systemd shuts down cleanly) and exported as a tarball of its root.

The exported tarball is cached under the build directory by :func:`key`: the sha256 of every
input of the converge (the base key, the profile, the roles, playbooks, plugins and
ansible.cfg, the study's group_vars of ``all`` and ``relays``, and the artifacts' checksums), so
a rebuild with nothing changed skips the converge and a change to any of them converges again
from the base. docs/images.md ("Provisioning") explains what each role leaves for the relay.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xnat_fleet import container_ssh
from xnat_fleet.errors import FleetError
from xnat_fleet.image.package import sha256_file
from xnat_fleet.image.recipe import Recipe
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.paths import project_root
from xnat_fleet.runner import Progress, RunResult, run_playbook

STAGE_VERSION = 1  # bump when what this module does to the container changes
BUILD_HOST = "relay-image"
# A name under the reserved .invalid domain (RFC 2606): never a relay's, obviously not one.
BUILD_FQDN = "relay-image.invalid"
IMAGE_REPOSITORY = "localhost/xnat-fleet-image-base"
LABEL = "xnat-fleet.image-build"
PROXY_FILE = "/etc/apt/apt.conf.d/00xnat-fleet-build-proxy"
# mmdebstrap leaves its --aptopt file (the proxy on the build machine's loopback) in the tree.
MMDEBSTRAP_APT_FILE = "/etc/apt/apt.conf.d/99mmdebstrap"
# Files of the project that decide what the converge does.
PROJECT_INPUTS = ("roles", "playbooks", "plugins", "ansible.cfg")
GROUPS = ("all", "relays")  # the study's group_vars a relay image may carry
STOP_TIMEOUT = 120


class ProvisionError(FleetError):
    """The build container could not be made, converged or exported."""


@dataclass
class Provisioned:
    tarball: Path
    reused: bool
    key: str
    inputs: dict[str, str]  # what the key is the hash of (inputs())
    result: RunResult | None = None  # the converge (None when the tarball was reused)


def _files(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                yield p


def group_vars_sources(study: Path) -> list[Path]:
    """The study's group_vars entries (files or directories) of the groups an image carries."""
    gv = study / "group_vars"
    if not gv.is_dir():
        return []
    return sorted(
        p
        for p in gv.iterdir()
        if (p.stem if p.is_file() else p.name) in GROUPS
        and (p.is_dir() or p.suffix in ("", ".yml", ".yaml", ".json"))
    )


def study_inputs(study: Path) -> dict[str, str]:
    """The study's part of the converge's inputs: each file of its group_vars of GROUPS as
    ``inventory/<path>`` and its sha256 (a clone checks them against its image's manifest)."""
    return {
        f"inventory/{f.relative_to(study)}": sha256_file(f)
        for entry in group_vars_sources(study)
        for f in _files(entry)
    }


def inputs(
    recipe: Recipe,
    base_key: str,
    study: Path,
    artifacts: Mapping[str, str],
    root: Path | None = None,
) -> dict[str, str]:
    """Every input of the converge: a name and its sha256 (artifacts: their pinned sha256).

    The recipe counts through the base key (its packages and mirrors) and its profile name; its
    disk, boot and seal sections do not change what the roles do, so editing them re-runs only
    the stages after the converge."""
    root = root or project_root()
    found: dict[str, str] = {
        "stage": str(STAGE_VERSION),
        "base": base_key,  # the recipe's packages and mirrors
        "profile": recipe.profile,  # fleet_hardware; the rest of the recipe is not the converge's
    }
    for name in PROJECT_INPUTS:
        for f in _files(root / name):
            found[str(f.relative_to(root))] = sha256_file(f)
    found |= study_inputs(study)
    for name, digest in artifacts.items():
        found[f"artifact/{name}"] = digest
    return dict(sorted(found.items()))


def key(found: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(found), sort_keys=True).encode()).hexdigest()[:16]


def write_inventory(
    directory: Path, study: Path, container: str, host_vars: Mapping[str, Any]
) -> Path:
    """The build inventory: one host of group relays with the study's group_vars of GROUPS
    (linked, so a vault-encrypted file stays as it is) and the build's own host vars."""
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "group_vars").mkdir(parents=True)
    for entry in group_vars_sources(study):
        (directory / "group_vars" / entry.name).symlink_to(entry.resolve())
    hosts = {
        "all": {
            "children": {
                "central": {"hosts": {}},
                "relays": {
                    "hosts": {
                        BUILD_HOST: {
                            "ansible_connection": "podman",
                            "ansible_host": container,
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "fleet_fqdn": BUILD_FQDN,
                            **host_vars,
                        }
                    }
                },
            }
        }
    }
    hosts_file = directory / "hosts.yml"
    hosts_file.write_text(
        "# Written by `xnat-fleet image build`: the build container as the one relay of a\n"
        "# generic identity (src/xnat_fleet/image/provision.py). Rewritten by every build.\n"
        + yaml.safe_dump(hosts, sort_keys=True)
    )
    return directory


def _podman(*args: str) -> str:
    return container_ssh.podman_checked(*args, error=ProvisionError).stdout


def import_base(tarball: Path, base_key: str) -> str:
    """The base tarball as a podman image (imported once per base key); its reference."""
    ref = f"{IMAGE_REPOSITORY}:{base_key}"
    if container_ssh.podman("image", "exists", ref).returncode != 0:
        _podman("import", "--change", 'CMD ["/sbin/init"]', str(tarball), ref)
    return ref


def gateway(network: str = "podman") -> str:
    """The host's address on NETWORK (where the machine's apt cache is reached)."""
    out = _podman("network", "inspect", network)
    for net in json.loads(out or "[]"):
        for subnet in net.get("subnets") or []:
            if subnet.get("gateway") and ":" not in subnet["gateway"]:
                return str(subnet["gateway"])
    raise ProvisionError(f"podman network {network} has no IPv4 gateway")


def start(ref: str, name: str) -> None:
    _podman("rm", "-f", "--ignore", name)
    _podman(
        "run", "-d", "--name", name, "--hostname", BUILD_HOST, "--systemd=always",
        # nftables loads its ruleset into the container's own network namespace
        "--cap-add", "NET_ADMIN", "--label", f"{LABEL}=1", ref, "/sbin/init",
    )  # fmt: skip
    container_ssh.wait_booted(name, error=ProvisionError)


def _exec(name: str, script: str) -> None:
    proc = container_ssh.podman("exec", name, "sh", "-c", script)
    if proc.returncode != 0:
        raise ProvisionError(f"in the build container: {script}: {proc.stderr.strip()}")


def set_apt_proxy(name: str, proxy: str | None) -> None:
    """Point the container's apt at the build machine's cache (None: remove the setting)."""
    _exec(name, f"rm -f {MMDEBSTRAP_APT_FILE} {PROXY_FILE}")
    if proxy:
        _exec(name, f"printf 'Acquire::http::Proxy \"%s\";\\n' '{proxy}' > {PROXY_FILE}")


def export(name: str, tarball: Path) -> Path:
    """Stop the container (a clean systemd shutdown) and export its root as TARBALL."""
    _podman("stop", "-t", str(STOP_TIMEOUT), name)
    partial = tarball.with_name(tarball.name + ".partial")
    partial.unlink(missing_ok=True)
    _podman("export", "-o", str(partial), name)
    partial.replace(tarball)
    return tarball


def provision(
    *,
    recipe: Recipe,
    base_tarball: Path,
    base_key: str,
    study: InventorySource,
    cache: Path,
    work: Path,
    artifacts: Mapping[str, str],
    host_vars: Mapping[str, Any],
    artifact_store: Path,
    apt_port: int | None,
    secrets: Sequence[str] = (),
    on_progress: Callable[[Progress], None] | None = None,
    keep_container: bool = False,
) -> Provisioned:
    """The provisioned root tarball for this recipe and study (converged now unless cached)."""
    found = inputs(recipe, base_key, study.directory, artifacts)
    k = key(found)
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"provisioned-{recipe.profile}-{k}.tar"
    if tarball.is_file():
        return Provisioned(tarball, True, k, found)
    ref = import_base(base_tarball, base_key)
    name = f"xf-image-{recipe.profile}-{os.getpid()}"
    start(ref, name)
    try:
        proxy = f"http://{gateway()}:{apt_port}/" if apt_port else None
        set_apt_proxy(name, proxy)
        own = {"fleet_hardware": recipe.profile, **host_vars}
        build_inventory = write_inventory(work / "inventory", study.directory, name, own)
        source = InventorySource(path=build_inventory, vault_password_file=study.vault_password())
        # Mitogen's podman transport runs `podman exec` from Ansible's process: the same podman
        # settings as every other podman call here (ansible-runner passes the environment on).
        os.environ.setdefault("CONTAINERS_CONF", container_ssh.containers_conf())
        result = run_playbook(
            "image.yml",
            source,
            artifact_store=artifact_store,
            on_progress=on_progress,
            secrets=secrets,
            extravars={"xnat_fleet_inventory_dir": str(study.directory.resolve())},
        )
        if not result.success:
            detail = "; ".join(result.failures[:5]) or "\n".join(result.output[-10:])
            raise ProvisionError(f"the converge of the build container failed: {detail}")
        set_apt_proxy(name, None)
        export(name, tarball)
    finally:
        if not keep_container:
            container_ssh.podman("rm", "-f", "--ignore", name)
    for old in cache.glob(f"provisioned-{recipe.profile}-*.tar"):
        if old != tarball:
            old.unlink(missing_ok=True)
    return Provisioned(tarball, False, k, found, result)
