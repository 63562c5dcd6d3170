"""Contract tests of the whole engine: the example study against XNAT REST stand-ins over HTTP.

One stand-in per host of inventory/example (central + two relays with the Xsync plugin), reached
through an overlay that sets ``fleet_xnat_url``, exactly as the lab does. The same CLI commands an
administrator runs: plan on empty sites lists everything, apply converges, a second plan is empty,
drift made behind the tool's back is found (distinct exit code), and no secret is printed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.xnat_standin import STANDIN_PROFILES, XnatStandin
from xnat_fleet.errors import ExitCode
from xnat_fleet.model.loader import InventorySource
from xnat_fleet.xnat.engine import Engine, open_study

from .conftest import EXAMPLE, all_example_secrets, example_secrets

HOSTS = ("xnat-central", "relay-kings", "relay-leeds")


@dataclass
class Study:
    source: InventorySource
    standins: dict[str, XnatStandin]
    urls: dict[str, str]
    secrets: list[str]

    def engine(self) -> Engine:
        return open_study(self.source)[0]


def _vault_values() -> list[str]:
    return all_example_secrets()


@pytest.fixture(scope="module", params=sorted(STANDIN_PROFILES))
def study(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Study]:
    """The example study on three stand-ins, once per stand-in profile (every version-dependent
    behaviour the version matrix allows: tests/xnat_standin/state.py STANDIN_PROFILES)."""
    standins = {
        name: XnatStandin(name=name, xsync=name.startswith("relay"), profile=request.param)
        for name in HOSTS
    }
    urls = {name: s.start() for name, s in standins.items()}
    overlay = tmp_path_factory.mktemp("overlay") / "standins.yml"
    overlay.write_text(
        yaml.safe_dump({"all": {"hosts": {n: {"fleet_xnat_url": u} for n, u in urls.items()}}})
    )
    yield Study(InventorySource(EXAMPLE, overlays=[overlay]), standins, urls, _vault_values())
    for s in standins.values():
        s.stop()


def _writes(standin: XnatStandin) -> list[tuple[str, str, int]]:
    return [
        r
        for r in standin.requests_log
        if r[0] in ("PUT", "DELETE") or (r[0] == "POST" and r[1] != "/data/JSESSION")
    ]


def test_plan_on_empty_sites_lists_everything_and_writes_nothing(study: Study) -> None:
    engine = study.engine()
    try:
        plans = {name: engine.plan(name).plan for name in HOSTS}
    finally:
        engine.close()
    for name in HOSTS:
        assert _writes(study.standins[name]) == [], name
        areas = {c.area for c in plans[name].drift}
        assert {"bootstrap", "site", "receivers"} <= areas or name == "xnat-central", areas
        assert plans[name].labels, "a stand-in must be labelled as such in the plan"
    central = {c.target for c in plans["xnat-central"].drift}
    assert any("PRISM_MR" in t for t in central), central
    assert any("prism_coordinator" in t for t in central), central
    kings = plans["relay-kings"]
    assert any(c.area == "xsync" for c in kings.drift), [c.target for c in kings.drift]
    assert any("KINGS_MR" in c.target for c in kings.drift)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xnat-fleet", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def applied(study: Study) -> Study:
    engine = study.engine()
    try:
        for name in HOSTS:  # central first: the relays pair with its projects
            engine.apply(engine.plan(name))
    finally:
        engine.close()
    return study


def test_apply_converges_and_a_second_plan_is_empty(applied: Study) -> None:
    engine = applied.engine()
    try:
        for name in HOSTS:
            plan = engine.plan(name).plan
            assert plan.drift == [], plan.render()
    finally:
        engine.close()
    central = applied.standins["xnat-central"].state
    assert central.site_config["siteId"] == "PRISM"
    kings = applied.standins["relay-kings"].state
    assert kings.site_config["siteId"] == "KINGS"


def test_xsync_credentials_check_from_the_relay(applied: Study) -> None:
    relay = applied.urls["relay-kings"]
    central = applied.urls["xnat-central"]
    from tests.xnat_helpers import SERVICE_USER

    password = _service_password("relay-kings")
    body = json.dumps({"host": central, "localProject": "KINGS_MR"})
    r = requests.post(
        relay + "/xapi/xsync/credentials/check/projects/KINGS_MR",
        data=body,
        # docs/xnat-api.md §16.7: text/plain on the Java-8 Xsync builds, JSON on the Java-21 ones
        headers={
            "Content-Type": "application/json"
            if applied.standins["relay-kings"].state.xsync_build == "java21"
            else "text/plain"
        },
        auth=(SERVICE_USER, password),
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _service_password(host: str) -> str:
    return str(example_secrets(host)["vault_xnat_service_password"])


def test_drift_is_reported_with_its_exit_code_and_apply_repairs_it(
    applied: Study, tmp_path: Path
) -> None:
    overlay = str(applied.source.overlays[0])
    inventory = str(EXAMPLE)
    password = _service_password("xnat-central")
    # Behind the tool's back: someone lengthens the session timeout in the admin UI.
    r = requests.post(
        applied.urls["xnat-central"] + "/xapi/siteConfig",
        json={"sessionTimeout": "8 hours"},
        auth=("xnat_fleet", password),
        timeout=10,
    )
    assert r.status_code == 200
    args = ["-i", inventory, "--overlay", overlay]
    plan = _cli("xnat", "plan", *args, "--detailed-exitcode")
    assert plan.returncode == int(ExitCode.DRIFT), plan.stdout + plan.stderr
    assert "sessionTimeout" in plan.stdout
    assert "stand-in" in plan.stdout
    as_json = _cli("xnat", "plan", *args, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [c["target"] for p in data for c in p["changes"] if c["area"] == "site"]
    fix = _cli("xnat", "apply", *args, "--yes")
    assert fix.returncode == 0, fix.stdout + fix.stderr
    clean = _cli("xnat", "plan", *args, "--detailed-exitcode")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    status = _cli("xsync", "status", *args, "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert {r["relay"] for r in rows} == {"relay-kings", "relay-leeds"}
    rekey = _cli("xsync", "rekey", *args, "--limit", "relay-kings")
    assert rekey.returncode == 0, rekey.stdout + rekey.stderr
    everything = "".join(p.stdout + p.stderr for p in (plan, as_json, fix, clean, status, rekey))
    for secret in applied.secrets:
        assert secret not in everything
