"""The xnat_config role (playbooks/xnat.yml) through ansible-runner, as `provision` runs it.

Against XNAT REST stand-ins (tests/xnat_standin, not XNAT), one per host of the example study:
the first run changes every host, the second changes nothing (the role's idempotence), and no
vault value appears anywhere in ansible-runner's private directory (artifacts, stdout, events)
or in the progress messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.xnat_standin import XnatStandin
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.runner import Progress, run_playbook

from .conftest import DEMO_PASSWORD, EXAMPLE
from .test_xnat_engine import HOSTS, _vault_values


@pytest.fixture
def standin_study(tmp_path: Path) -> Iterator[InventorySource]:
    standins = [XnatStandin(name=n, xsync=n.startswith("relay")) for n in HOSTS]
    urls = [s.start() for s in standins]
    overlay = tmp_path / "standins.yml"
    overlay.write_text(
        yaml.safe_dump(
            {"all": {"hosts": {n: {"fleet_xnat_url": u} for n, u in zip(HOSTS, urls, strict=True)}}}
        )
    )
    yield InventorySource(EXAMPLE, vault_password_file=DEMO_PASSWORD, overlays=[overlay])
    for s in standins:
        s.stop()


def _run(source: InventorySource, keep: Path, messages: list[str]) -> int:
    def progress(p: Progress) -> None:
        messages.append(f"{p.kind} {p.host} {p.task} {p.message}")

    result = run_playbook(
        "xnat.yml",
        source,
        artifact_store=keep / "store",
        on_progress=progress,
        keep_dir=keep,
    )
    assert result.success, (result.status, result.failures)
    assert set(result.hosts) == set(HOSTS)
    return result.changed


def _files_text(root: Path) -> str:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file():
                out.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def test_role_converges_then_changes_nothing_and_leaks_no_secret(
    standin_study: InventorySource, tmp_path: Path
) -> None:
    messages: list[str] = []
    first = _run(standin_study, tmp_path / "run1", messages)
    assert first == len(HOSTS), "every host's XNAT was configured on the first run"
    second = _run(standin_study, tmp_path / "run2", messages)
    assert second == 0, "a second run must change nothing"
    everything = _files_text(tmp_path / "run1") + _files_text(tmp_path / "run2")
    everything += "\n".join(messages)
    assert "XNAT REST stand-in" in everything  # the plan shown says what answered
    for secret in _vault_values():
        assert secret not in everything


def test_engine_process_ignores_the_playbook_fact_cache(tmp_path: Path) -> None:
    """Started from a playbook run by ansible-runner, the engine inherits its jsonfile fact cache;
    gathered facts (gather_subset, ansible_*) must not become inventory variables."""
    import json
    import subprocess
    import sys

    cache = tmp_path / "fact_cache"
    env = dict(
        os.environ,
        ANSIBLE_CACHE_PLUGIN="jsonfile",
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(cache),
    )
    # Facts as a play's fact gathering leaves them, written by Ansible's own cache plugin.
    writer = (
        "import ansible.constants as C\n"
        "from ansible.plugins.loader import cache_loader\n"
        "cache = cache_loader.get(C.CACHE_PLUGIN)\n"
        f"for host in {list(HOSTS)!r}:\n"
        "    cache.set(host, {'gather_subset': ['all'], 'module_setup': True})\n"
    )
    subprocess.run([sys.executable, "-c", writer], env=env, check=True, timeout=60)
    assert any(cache.iterdir())
    request = {
        "inventory": [str(EXAMPLE / "hosts.yml")],
        "host": "no-such-host",
        "vault_password_file": str(DEMO_PASSWORD),
        "check": True,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "xnat_fleet.xnat.hostrun"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    result = json.loads(proc.stdout)
    # The inventory loaded and validated: the only complaint is the unknown host.
    assert result == {
        "failed": True,
        "msg": f"no-such-host: not a host of the inventory {EXAMPLE / 'hosts.yml'}",
    }
