"""Roles under composition: handler names are unique across every role, and each notify names a
handler of its own role (Ansible runs the handler of whichever role defined a name first, so a
shared name would run another role's handler)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parent.parent / "roles"


def _tasks(items: Any) -> Iterator[dict[str, Any]]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        yield item
        for key in ("block", "rescue", "always"):
            yield from _tasks(item.get(key))


def handler_names(role: Path) -> list[str]:
    path = role / "handlers" / "main.yml"
    if not path.exists():
        return []
    names: list[str] = []
    for handler in _tasks(yaml.safe_load(path.read_text())):
        names.append(str(handler["name"]))
        listen = handler.get("listen")
        names.extend([listen] if isinstance(listen, str) else list(listen or []))
    return names


def notified(role: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted((role / "tasks").glob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            notify = task.get("notify")
            for name in [notify] if isinstance(notify, str) else list(notify or []):
                out.append((path.name, str(name)))
    return out


def test_handler_names_are_unique_across_roles() -> None:
    owner: dict[str, str] = {}
    clashes: list[str] = []
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        own = {n for n in handler_names(role)}
        for name in own:
            if name in owner:
                clashes.append(f"{name!r} in {owner[name]} and {role.name}")
            owner[name] = role.name
    assert clashes == []
    assert len(owner) >= 10  # the check saw the roles' handlers


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if p.is_dir()))
def test_every_notify_names_a_handler_of_its_role(role: str) -> None:
    path = ROLES / role
    names = set(handler_names(path))
    missing = [f"{task}: {name}" for task, name in notified(path) if name not in names]
    assert missing == []


def test_a_clash_would_be_found(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name / "handlers").mkdir(parents=True)
        (tmp_path / name / "handlers" / "main.yml").write_text("- name: Restart x\n  debug:\n")
    assert handler_names(tmp_path / "one") == handler_names(tmp_path / "two") == ["Restart x"]
