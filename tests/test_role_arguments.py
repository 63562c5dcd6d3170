"""Every role declares its inputs (meta/argument_specs.yml) and rejects bad ones before acting.

Cases live in tests/roles/bad_args/<role>.yml. Each runs as a play applying the role on
localhost in check mode; argument validation fails before any task, so nothing changes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
CASES_DIR = Path(__file__).parent / "roles" / "bad_args"


def _cases() -> list[Any]:
    out = []
    for role in ROLES:
        f = CASES_DIR / f"{role}.yml"
        for case in yaml.safe_load(f.read_text()) if f.exists() else []:
            out.append(pytest.param(role, case, id=f"{role}-{case['name']}"))
    return out


@pytest.mark.parametrize("role", ROLES)
def test_role_has_argument_specs_and_negative_cases(role: str) -> None:
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert options, f"{role} declares no inputs"
    assert all(name.startswith(f"{role}_") for name in options), "inputs must be <role>_*"
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    undeclared = set(defaults) - set(options)
    assert not undeclared, f"defaults without argument spec: {undeclared}"
    cases = yaml.safe_load((CASES_DIR / f"{role}.yml").read_text())
    assert len(cases) >= 2


@pytest.mark.parametrize(("role", "case"), _cases())
def test_bad_argument_is_rejected(role: str, case: dict[str, Any], tmp_path: Path) -> None:
    play = tmp_path / "play.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Negative",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [{"role": role}],
                }
            ]
        )
    )
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(case["vars"]))
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles")
    )
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "--check",
            str(play),
            "-e",
            f"@{extra}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert case["expect"] in output, output
    assert "changed=0" in output or "PLAY RECAP" not in output
