"""Helpers for tests of the XNAT reconcilers against the XNAT REST stand-in (tests/xnat_standin).

``desired(...)`` builds a :class:`DesiredXnat` directly (no inventory), ``initialise(url)`` brings a
fresh stand-in to the state the bootstrap reconciler leaves (initialised, service account with
Administrator + ALL_DATA_ADMIN) using only XNAT's documented REST calls (docs/xnat-api.md §6, §8),
and
``context(...)`` makes the :class:`HostContext` a reconciler gets; ``desired_for(standin)`` is
``desired`` with the stand-in's URL and version (for the per-profile fixture ``profile_sa``).

The set-up the reconciler tests share lives here too: ``running_standin(...)`` (a started,
initialised stand-in with an empty request log), ``writes(log)`` (the "nothing written" filter),
``refused(...)`` (a :class:`ReconcileError` raised before any request), ``apply_all``/``run``,
``targets``, ``drift``, ``shown``, ``service_session()`` and the dcm2niix ``command(...)``.
Their pytest fixtures (``standin``, ``sa``, ``profile_sa``) are in tests/xnat_fixtures.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.xnat_standin import XnatStandin
from tests.xnat_standin.state import Project as StandinProject
from xnat_fleet.model.fleet import Project, SyncLink, XsyncPreferences
from xnat_fleet.xnat.changes import Change, ReconcileError
from xnat_fleet.xnat.client import XnatClient
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat, ProjectSpec, XsyncPairing

ADMIN_PASSWORD = "test-admin-pw-4f1c"
SERVICE_USER = "xnat_fleet"
SERVICE_PASSWORD = "test-service-pw-9a7e"
AUTH = (SERVICE_USER, SERVICE_PASSWORD)  # the service account, for raw ``requests`` calls
COMMAND_FILE = Path(__file__).parent / "fixtures" / "xnat" / "commands" / "dcm2niix.json"

RequestLog = Sequence[tuple[str, str, int]]  # XnatStandin.requests_log: (method, path, status)


def desired(url: str, **overrides: Any) -> DesiredXnat:
    """A relay-like desired state with nothing but the site keys; override any field."""
    base = DesiredXnat(
        host="test-host",
        kind="relay",
        url=url,
        version="1.9.3.6",
        ca_file=None,
        admin_password=ADMIN_PASSWORD,
        service_user=SERVICE_USER,
        service_password=SERVICE_PASSWORD,
        site_config={
            "siteId": "TEST",
            "siteUrl": "https://test-host.example.org",
            "adminEmail": "admins@example.org",
            "archivePath": "/data/xnat/archive",
            "requireLogin": True,
            "sessionTimeout": "15 minutes",
            "receivedFileUser": SERVICE_USER,
        },
        smtp={
            "hostname": "localhost",
            "port": 25,
            "protocol": "smtp",
            "username": "",
            "password": "",
        },
        users=(),
        user_passwords={},
        projects=(),
        site_anon_script=None,
        site_anon_enabled=False,
        receivers=(),
        container_service=None,
        commands=(),
        subscriptions=(),
        pairings=(),
        xsync_prefs=None,
        xsync_plugin_version=None,
    )
    return dataclasses.replace(base, **overrides)


def project(pid: str, **fields: Any) -> ProjectSpec:
    anon_script = fields.pop("anon_script", None)
    anon_enabled = fields.pop("anon_enabled", False)
    return ProjectSpec(
        Project(id=pid, name=fields.pop("name", pid), **fields), anon_script, anon_enabled
    )


def pairing(
    relay: str, project: str, central_project: str, central_url: str, **fields: Any
) -> XsyncPairing:
    return XsyncPairing(
        link=SyncLink(project=project, central_project=central_project, **fields),
        central_host="central-host",
        central_url=central_url,
        central_account="xsync_" + relay.replace("-", "_"),
        notification_emails=("admins@example.org",),
    )


def initialise(
    url: str,
    initial_admin_password: str = "admin",
    *,
    container_manager: bool = True,
    xsync_administrator: bool = False,
) -> None:
    """What bootstrap leaves behind, done with plain REST calls (docs/xnat-api.md §6): the site
    initialised and the service account with Administrator, non_expiring, ALL_DATA_ADMIN and
    (``container_manager``, as bootstrap does where the container service is configured)
    ContainerManager, which container-service requires without any site-admin bypass.
    ``xsync_administrator``: also XsyncAdministrator, which the Java-21 Xsync builds require for
    the site preferences (bootstrap grants it on 1.10 relays that pair projects)."""
    s = requests.Session()
    s.auth = ("admin", initial_admin_password)
    r = s.post(
        url + "/xapi/siteConfig",
        json={
            "siteId": "TEST",
            "siteUrl": "https://test-host.example.org",
            "adminEmail": "admins@example.org",
            "initialized": True,
        },
        timeout=10,
    )
    r.raise_for_status()
    r = s.post(
        url + "/xapi/users",
        json={
            "username": SERVICE_USER,
            "password": SERVICE_PASSWORD,
            "firstName": "xnat-fleet",
            "lastName": "service",
            "email": "admins@example.org",
            "enabled": True,
            "verified": True,
        },
        timeout=10,
    )
    assert r.status_code in (201, 409), r.status_code
    if r.status_code == 409:
        # The account exists: make sure the password and flags are ours. XNAT answers 304 when
        # nothing changed, but a password always counts as a change (UsersApi.updateUser).
        r = s.put(
            url + f"/xapi/users/{SERVICE_USER}",
            json={"password": SERVICE_PASSWORD, "enabled": True, "verified": True},
            timeout=10,
        )
        assert r.status_code in (200, 304), r.status_code
    roles = ["Administrator", "non_expiring"]
    if container_manager:
        roles.append("ContainerManager")
    if xsync_administrator:
        roles.append("XsyncAdministrator")
    paths = [f"/xapi/users/{SERVICE_USER}/roles/{role}" for role in roles]
    paths.append(f"/xapi/users/{SERVICE_USER}/groups/ALL_DATA_ADMIN")
    for path in paths:
        s.put(url + path, timeout=10).raise_for_status()


def client(url: str, username: str = SERVICE_USER, password: str = SERVICE_PASSWORD) -> XnatClient:
    return XnatClient(url, username, password, retries=0, timeout=10)


def context(d: DesiredXnat, **fields: Any) -> HostContext:
    return HostContext(desired=d, client=client(d.url), **fields)


# -- stand-ins ---------------------------------------------------------------------------------
@contextmanager
def running_standin(
    *,
    initialised: bool = True,
    profile: str | None = None,
    grant_xsync_administrator: bool | None = None,
    **kwargs: Any,
) -> Iterator[XnatStandin]:
    """A started stand-in (``XnatStandin(profile=profile, **kwargs)``), stopped afterwards.

    ``profile``: a key of ``STANDIN_PROFILES`` (tests/xnat_standin/state.py); without it the
    settings follow ``version``. ``initialised``: brought to the state bootstrap leaves
    (:func:`initialise`) and its request log emptied, so that tests see only what the code under
    test sent. Otherwise as XNAT ships. ``grant_xsync_administrator``: give the service account
    the XsyncAdministrator role (default: when the stand-in serves a Java-21 Xsync build, as
    bootstrap does on 1.10 relays).
    """
    with XnatStandin(profile=profile, **kwargs) as standin:
        if initialised:
            if grant_xsync_administrator is None:
                state = standin.state
                grant_xsync_administrator = state.xsync and state.xsync_build == "java21"
            initialise(
                standin.url,
                kwargs.get("initial_admin_password", "admin"),
                xsync_administrator=grant_xsync_administrator,
            )
            standin.requests_log.clear()
        yield standin


def desired_for(standin: XnatStandin, **overrides: Any) -> DesiredXnat:
    """:func:`desired` for ``standin``: its URL and the XNAT version it emulates."""
    return desired(standin.url, **{"version": standin.state.version, **overrides})


def add_projects(standin: XnatStandin, *pids: str) -> None:
    """Projects as the projects reconciler leaves them, put straight into the stand-in's state."""
    for pid in pids:
        standin.state.projects[pid] = StandinProject(id=pid, name=pid)


def service_session() -> requests.Session:
    """A raw ``requests`` session as the service account: changes behind the tool's back."""
    s = requests.Session()
    s.auth = AUTH
    return s


def command(**changes: Any) -> dict[str, Any]:
    """The dcm2niix command document (tests/fixtures/xnat/commands), with ``changes`` applied."""
    data: dict[str, Any] = json.loads(COMMAND_FILE.read_text())
    data.update(changes)
    return data


# -- what was sent -----------------------------------------------------------------------------
def writes(log: RequestLog) -> list[tuple[str, str, int]]:
    """The requests in ``log`` that are not reads; a session login (``POST /data/JSESSION``,
    docs/xnat-api.md §6) is not a write."""
    return [r for r in log if r[0] != "GET" and r[1] != "/data/JSESSION"]


def refused(
    standin: XnatStandin, call: Callable[[], object], match: str | None = None
) -> ReconcileError:
    """``call()`` raises :class:`ReconcileError` (matching ``match``) without sending a request."""
    mark = len(standin.requests_log)
    with pytest.raises(ReconcileError, match=match) as caught:
        call()
    assert standin.requests_log[mark:] == []
    return caught.value


# -- changes -----------------------------------------------------------------------------------
def apply_all(changes: Sequence[Change]) -> None:
    """Apply every change that has an apply step; notes are skipped."""
    for c in changes:
        if c.apply is not None:
            c.apply()


def run(changes: Sequence[Change]) -> None:
    """Apply every change; a change without an apply step (a note) fails the test."""
    for c in changes:
        assert c.apply is not None, c.target
        c.apply()


def targets(changes: Sequence[Change]) -> list[tuple[str, str]]:
    return [(c.action, c.target) for c in changes]


def drift(changes: Sequence[Change]) -> list[Change]:
    return [c for c in changes if c.is_drift]


def shown(changes: Sequence[Change]) -> str:
    """Everything a person is shown of ``changes`` (JSON and text): grep it for secrets."""
    return json.dumps([c.to_dict() for c in changes]) + "\n".join(c.render() for c in changes)


__all__ = [
    "ADMIN_PASSWORD",
    "AUTH",
    "COMMAND_FILE",
    "SERVICE_PASSWORD",
    "SERVICE_USER",
    "RequestLog",
    "XsyncPreferences",
    "add_projects",
    "apply_all",
    "client",
    "command",
    "context",
    "desired",
    "desired_for",
    "drift",
    "initialise",
    "pairing",
    "project",
    "refused",
    "run",
    "running_standin",
    "service_session",
    "shown",
    "targets",
    "writes",
]
