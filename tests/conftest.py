"""Shared fixtures: a scratch copy of the example inventory that tests may edit."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest_plugins = ["tests.xnat_fixtures", "tests.image_fixtures"]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inventory" / "example"
DEMO_PASSWORD = EXAMPLE / "DEMO-ONLY-vault-password.txt"


def demo_vault() -> Any:
    """The example inventory's vault (its DEMO-ONLY password)."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([("default", VaultSecret(DEMO_PASSWORD.read_bytes().strip()))])


def example_secrets(host: str | None = None) -> dict[str, Any]:
    """The decrypted ``vault_*`` variables of the example inventory: the study's, with HOST's
    own vault (host_vars/<host>/vault.yml: each relay's) on top when given."""
    data = demo_vault().decrypt((EXAMPLE / "group_vars/all/vault.yml").read_bytes())
    out = dict(yaml.safe_load(data))
    own = EXAMPLE / "host_vars" / str(host) / "vault.yml"
    if host is not None and own.is_file():
        out.update(yaml.safe_load(demo_vault().decrypt(own.read_bytes())))
    return out


def all_example_secrets() -> list[str]:
    """Every secret value of the example: the study's vault and each relay's."""
    hosts = [None, *sorted(p.name for p in (EXAMPLE / "host_vars").iterdir() if p.is_dir())]
    out: set[str] = set()
    for host in hosts:
        for value in example_secrets(host).values():
            out |= {str(v) for v in value.values()} if isinstance(value, dict) else {str(value)}
    return sorted(out)


class ScratchInventory:
    """A copy of the example inventory with helpers to edit it the way a user would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- plain YAML files -------------------------------------------------------------------
    def load(self, rel: str) -> Any:
        return yaml.safe_load((self.path / rel).read_text())

    def dump(self, rel: str, data: Any) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))

    def set(self, rel: str, dotted: str, value: Any) -> None:
        data = self.load(rel) if (self.path / rel).exists() else {}
        tokens = [int(t) if t.isdigit() else t for t in re.findall(r"[^.\[\]]+", dotted)]
        node = data
        for token in tokens[:-1]:
            node = node[token]
        node[tokens[-1]] = value
        self.dump(rel, data)

    def delete_nested(self, rel: str, dotted: str) -> None:
        data = self.load(rel)
        *parents, last = dotted.split(".")
        node = data
        for token in parents:
            node = node[token]
        del node[last]
        self.dump(rel, data)

    def delete(self, rel: str, key: str) -> None:
        data = self.load(rel)
        del data[key]
        self.dump(rel, data)

    # -- vault ------------------------------------------------------------------------------
    def _vault(self) -> Any:
        return demo_vault()

    def vault_remove(self, names: list[str]) -> None:
        f = self.path / "group_vars/all/vault.yml"
        vault = self._vault()
        data = yaml.safe_load(vault.decrypt(f.read_bytes()))
        for name in names:
            data.pop(name)
        f.write_bytes(vault.encrypt(yaml.safe_dump(data).encode()))

    def encrypt_file(self, rel: str) -> None:
        f = self.path / rel
        f.write_bytes(self._vault().encrypt(f.read_bytes()))

    def decrypt_file(self, rel: str) -> None:
        f = self.path / rel
        f.write_bytes(self._vault().decrypt(f.read_bytes()))

    def inline_vault(self, rel: str, name: str, value: str) -> None:
        token = self._vault().encrypt(value.encode()).decode()
        block = "\n".join("  " + line for line in token.splitlines())
        with (self.path / rel).open("a") as fh:
            fh.write(f"{name}: !vault |\n{block}\n")


# What `make demo` leaves in the example (git-ignored): never part of a test's copy of it.
EXAMPLE_STATE = shutil.ignore_patterns("relay-registry.yml")


def copy_example(target: Path) -> Path:
    """A copy of the example inventory as committed (without the demo's registry of disks)."""
    shutil.copytree(EXAMPLE, target, symlinks=True, ignore=EXAMPLE_STATE)
    return target


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[ScratchInventory]:
    yield ScratchInventory(copy_example(tmp_path / "study"))
