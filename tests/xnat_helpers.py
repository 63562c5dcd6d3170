"""Helpers for tests of the XNAT reconcilers against the XNAT REST stand-in (tests/xnat_standin).

``desired(...)`` builds a :class:`DesiredXnat` directly (no inventory), ``initialise(url)`` brings a
fresh stand-in to the state the bootstrap reconciler leaves (initialised, service account with
Administrator + ALL_DATA_ADMIN) using only XNAT's documented REST calls (xnat-facts.md §6, §8), and
``context(...)`` makes the :class:`HostContext` a reconciler gets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import requests

from xnat_fleet.model.fleet import Project, SyncLink, XsyncPreferences
from xnat_fleet.xnat.client import XnatClient
from xnat_fleet.xnat.context import HostContext
from xnat_fleet.xnat.desired import DesiredXnat, ProjectSpec, XsyncPairing

ADMIN_PASSWORD = "test-admin-pw-4f1c"
SERVICE_USER = "xnat_fleet"
SERVICE_PASSWORD = "test-service-pw-9a7e"


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


def initialise(url: str, initial_admin_password: str = "admin") -> None:
    """What bootstrap leaves behind, done with plain documented REST calls (xnat-facts.md §6)."""
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
    for path in (
        f"/xapi/users/{SERVICE_USER}/roles/Administrator",
        f"/xapi/users/{SERVICE_USER}/roles/non_expiring",
        f"/xapi/users/{SERVICE_USER}/groups/ALL_DATA_ADMIN",
    ):
        s.put(url + path, timeout=10).raise_for_status()


def client(url: str, username: str = SERVICE_USER, password: str = SERVICE_PASSWORD) -> XnatClient:
    return XnatClient(url, username, password, retries=0, timeout=10)


def context(d: DesiredXnat, **fields: Any) -> HostContext:
    return HostContext(desired=d, client=client(d.url), **fields)


__all__ = [
    "ADMIN_PASSWORD",
    "SERVICE_PASSWORD",
    "SERVICE_USER",
    "XsyncPreferences",
    "client",
    "context",
    "desired",
    "initialise",
    "pairing",
    "project",
]
