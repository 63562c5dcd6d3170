"""Ansible strategy ``xnat_fleet_linear``: Mitogen's linear strategy with two policies added.

The project's default strategy (ansible.cfg, molecule/shared/config.yml). It is Mitogen for
Ansible's ``mitogen_linear`` (one SSH connection and one long-lived Python per host instead of
several ssh, sudo and python processes per task) with:

1. **Isolation by module.** Mitogen runs a module inside the host's long-lived interpreter
   unless told to fork. A Python package that a task installs (python3-cryptography, psycopg2)
   then stays invisible to later modules once an earlier one tried to import it, so every module
   runs in a fresh fork of that interpreter (``mitogen_task_isolation: fork``) except the
   actions in ``IN_PROCESS_ACTIONS``: ansible-core's own file, service and command modules,
   which import nothing but the standard library and ``ansible.module_utils`` and make up most
   of a converge. A host (or ``-e``) that sets ``mitogen_task_isolation`` decides for all its
   tasks itself. docs/mitogen.md has the case and the figures.
2. **Module dependency scans kept between runs.** Before Mitogen first runs a module it scans
   the module's source and every ``module_utils`` file it imports (about 50-100 ms per module,
   repeated for every role's search path, ~5 s of a no-op relay converge). The scan's result
   is stored under ``$XDG_CACHE_HOME/xnat-fleet/mitogen-module-deps`` (default
   ``~/.cache/...``) and used again only while the module, the directories searched and every
   file the scan resolved are unchanged (size and modification time); anything unreadable or
   stale is scanned again.
3. **The parsed playbook frozen for the collector.** When a play starts, everything alive (the
   parsed playbook, inventory and variables, hundreds of thousands of objects) is moved out of
   the garbage collector's generations (``gc.freeze``): Python's full collections, which the
   controller otherwise makes every few tasks over all of it, then look only at what the tasks
   themselves create, and the per-task forks of the worker processes do not touch those pages.

``ANSIBLE_STRATEGY=linear`` runs Ansible's own strategy and connection instead.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ansible_mitogen.module_finder as _module_finder

# Mitogen's plugin module imports ansible_mitogen (installed with the project) and defines the
# strategy on top of Ansible's linear one.
from ansible_mitogen.plugins.strategy.mitogen_linear import (
    StrategyModule as _MitogenLinear,
)

TASK_ISOLATION_VAR = "mitogen_task_isolation"
TASK_ISOLATION_DEFAULT = "fork"

# ansible-core actions whose modules (and the modules their action plugins call: template and
# copy call stat, file and copy) import only the standard library and ansible.module_utils, so
# nothing a converge installs can change what they import. Everything else forks.
IN_PROCESS_ACTIONS = frozenset(
    f"ansible.builtin.{name}"
    for name in (
        "command",
        "copy",
        "file",
        "find",
        "getent",
        "group",
        "lineinfile",
        "service",
        "setup",
        "shell",
        "slurp",
        "stat",
        "systemd",
        "systemd_service",
        "template",
        "user",
        "wait_for",
    )
)

CACHE_FORMAT = 1
Scan = Callable[[str, str, Iterable[str]], list[tuple[str, str, bool]]]


def task_isolation(action: str) -> str:
    """The isolation a task gets when its host sets none: ``none`` or ``fork``."""
    return "none" if action in IN_PROCESS_ACTIONS else TASK_ISOLATION_DEFAULT


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xnat-fleet" / "mitogen-module-deps"


def _signature(path: str) -> list[Any]:
    try:
        st = Path(path).stat()
    except OSError:
        return [path, None, None]
    return [path, st.st_size, st.st_mtime_ns]


def cached_scan(scan: Scan, directory: Callable[[], Path] = cache_dir) -> Scan:
    """``scan`` with its results kept on disk while every input of the scan is unchanged."""

    def wrapper(
        module_name: str, module_path: str, search_path: Iterable[str]
    ) -> list[tuple[str, str, bool]]:
        search = list(search_path)
        key_material = json.dumps(
            [
                CACHE_FORMAT,
                sys.version,
                module_name,
                _signature(module_path),
                [_signature(p) for p in search],
            ]
        )
        entry_path = directory() / (hashlib.sha256(key_material.encode()).hexdigest() + ".json")
        try:
            entry = json.loads(entry_path.read_text())
            if entry["key"] == key_material and all(
                _signature(sig[0]) == sig for sig in entry["files"]
            ):
                return [(str(n), str(p), bool(k)) for n, p, k in entry["resolved"]]
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
        resolved = scan(module_name, module_path, search)
        entry = {
            "key": key_material,
            "resolved": [list(r) for r in resolved],
            "files": [_signature(str(r[1])) for r in resolved],
        }
        try:
            entry_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry_path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump(entry, handle)
            Path(tmp).replace(entry_path)
        except OSError:
            pass  # a cache that cannot be written only costs the next run the scan
        return resolved

    wrapper.__wrapped__ = scan  # type: ignore[attr-defined]
    return wrapper


# Mitogen's ModuleDepService looks the function up at call time, in the multiplexer process
# that is forked from this one when the strategy starts.
if not hasattr(_module_finder.scan, "__wrapped__"):
    _module_finder.scan = cached_scan(_module_finder.scan)


class StrategyModule(_MitogenLinear):  # type: ignore[misc]
    """``mitogen_linear`` with isolation by module, the module scans cached, the play frozen."""

    def run(self, iterator: Any, play_context: Any) -> Any:
        gc.collect()  # what is garbage already is freed, not frozen
        gc.freeze()
        return super().run(iterator, play_context)

    def _queue_task(
        self, host: Any, task: Any, task_vars: dict[str, Any], play_context: Any
    ) -> Any:
        action = getattr(task, "resolved_action", None) or task.action
        task_vars.setdefault(TASK_ISOLATION_VAR, task_isolation(action))
        return super()._queue_task(host, task, task_vars, play_context)
