"""Where the toolkit's Ansible content (roles, playbooks) lives."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The directory holding ``roles/`` and ``playbooks/``.

    ``XNAT_FLEET_HOME`` overrides it; otherwise it is the checkout this package was installed from
    (``pip install -e``), two levels above ``src/xnat_fleet``.
    """
    env = os.environ.get("XNAT_FLEET_HOME")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    return root


def roles_dir() -> Path:
    return project_root() / "roles"


def playbooks_dir() -> Path:
    return project_root() / "playbooks"
