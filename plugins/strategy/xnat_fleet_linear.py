"""Ansible strategy ``xnat_fleet_linear``: Mitogen's linear strategy, every module in a fresh fork.

The project's default strategy (ansible.cfg, molecule/shared/config.yml). It is Mitogen for
Ansible's ``mitogen_linear`` (one SSH connection and one long-lived Python per host instead of
several ssh, sudo and python processes per task) with one policy added: each module runs in a
fork of that Python (``mitogen_task_isolation: fork``) unless the host says otherwise. In
Mitogen's default mode modules run inside the long-lived interpreter itself, so a Python package
that a task installs (python3-cryptography, psycopg2) stays invisible to later tasks once an
earlier one tried to import it; docs/mitogen.md has the case and the figures.

``ANSIBLE_STRATEGY=linear`` runs Ansible's own strategy and connection instead.
"""

from __future__ import annotations

from typing import Any

# Mitogen's plugin module imports ansible_mitogen (installed with the project) and defines the
# strategy on top of Ansible's linear one.
from ansible_mitogen.plugins.strategy.mitogen_linear import (
    StrategyModule as _MitogenLinear,
)

TASK_ISOLATION_VAR = "mitogen_task_isolation"
TASK_ISOLATION_DEFAULT = "fork"


class StrategyModule(_MitogenLinear):  # type: ignore[misc]
    """``mitogen_linear`` with ``mitogen_task_isolation: fork`` as every host's default."""

    def _queue_task(
        self, host: Any, task: Any, task_vars: dict[str, Any], play_context: Any
    ) -> Any:
        task_vars.setdefault(TASK_ISOLATION_VAR, TASK_ISOLATION_DEFAULT)
        return super()._queue_task(host, task, task_vars, play_context)
