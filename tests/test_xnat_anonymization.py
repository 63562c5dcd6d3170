"""Anonymization reconciler against the XNAT REST stand-in over real HTTP (docs/xnat-api.md §11)."""

from __future__ import annotations

import pytest
import requests

from tests.xnat_helpers import (
    AUTH,
    apply_all,
    context,
    desired,
    drift,
    initialise,
    project,
    refused,
    targets,
    writes,
)
from tests.xnat_standin import XnatStandin
from xnat_fleet.xnat.desired import DesiredXnat
from xnat_fleet.xnat.reconcilers import anonymization, projects

SITE_SCRIPT = 'version "6.1"\n// study site profile\n(0010,0030) := "19000101"\n'
PROJECT_SCRIPT = 'version "6.1"\n(0008,0080) := "REMOVED"\n'


def full(url: str) -> DesiredXnat:
    return desired(
        url,
        site_anon_script=SITE_SCRIPT,
        site_anon_enabled=True,
        projects=(
            project("ANON", anon_script=PROJECT_SCRIPT, anon_enabled=True),
            project("PLAIN"),  # no script: its anonymization is left alone
        ),
    )


def put(url: str, path: str, body: str | None = None, **params: str) -> None:
    r = requests.put(
        url + path,
        data=body,
        params=params,
        # docs/xnat-api.md §11: script PUTs take text/plain, the .../enabled PUTs application/json
        headers={"Content-Type": "application/json" if path.endswith("/enabled") else "text/plain"},
        auth=AUTH,
        timeout=10,
    )
    r.raise_for_status()


def converge_projects(d: DesiredXnat) -> None:
    apply_all(projects.plan(context(d)))


def test_plan_on_empty_site_lists_every_change(sa: XnatStandin) -> None:
    d = full(sa.url)
    converge_projects(d)
    changes = anonymization.plan(context(d))
    assert targets(changes) == [
        ("update", "site anonymization"),
        ("create", "project ANON anonymization"),
    ]
    site, proj = changes
    # The site keeps XNAT's default flag (enabled) but gets the inventory's script.
    assert set(site.after) == {"script"}
    assert "+// study site profile" in site.detail
    assert site.detail.startswith("--- site script (XNAT)\n+++ site script (inventory)")
    assert proj.before == {"script": anonymization.UNREADABLE, "enabled": False}
    assert proj.after == {"script": anonymization.summary(PROJECT_SCRIPT), "enabled": True}
    assert '+(0008,0080) := "REMOVED"' in proj.detail
    assert sa.state.projects["ANON"].anon_script is None  # planning wrote nothing


def test_apply_converges_and_second_apply_changes_nothing(sa: XnatStandin) -> None:
    d = full(sa.url)
    converge_projects(d)
    ctx = context(d)
    apply_all(anonymization.plan(ctx))
    cfg = sa.state.site_config
    assert cfg["sitewideAnonymizationScript"] == SITE_SCRIPT
    assert cfg["enableSitewideAnonymizationScript"] is True
    assert sa.state.projects["ANON"].anon_script == PROJECT_SCRIPT
    assert sa.state.projects["ANON"].anon_enabled is True
    assert sa.state.projects["PLAIN"].anon_script is None

    mark = len(sa.requests_log)
    again = anonymization.plan(ctx)
    assert again == []
    apply_all(again)
    log = sa.requests_log[mark:]
    assert not writes(log)
    assert not [r for r in log if "/PLAIN" in r[1]]  # projects without a script are not read


def test_drift_behind_the_tools_back_is_planned_and_repaired(sa: XnatStandin) -> None:
    d = full(sa.url)
    converge_projects(d)
    ctx = context(d)
    apply_all(anonymization.plan(ctx))
    put(sa.url, "/xapi/anonymize/site", 'version "6.1"\n// study site profile\n')
    put(sa.url, "/xapi/anonymize/site/enabled", enable="false")
    put(sa.url, "/xapi/anonymize/projects/ANON/enabled", enable="false")

    changes = drift(anonymization.plan(ctx))
    # Disabled scripts are hidden (docs/xnat-api.md §11): each is written again, then enabled.
    assert [(c.target, c.before, c.after) for c in changes] == [
        (
            "site anonymization",
            {"script": anonymization.UNREADABLE, "enabled": False},
            {"script": anonymization.summary(SITE_SCRIPT), "enabled": True},
        ),
        (
            "project ANON anonymization",
            {"script": anonymization.UNREADABLE, "enabled": False},
            {"script": anonymization.summary(PROJECT_SCRIPT), "enabled": True},
        ),
    ]
    apply_all(changes)
    assert drift(anonymization.plan(ctx)) == []
    assert sa.state.site_config["enableSitewideAnonymizationScript"] is True


def test_scripts_compare_modulo_a_trailing_newline(sa: XnatStandin) -> None:
    d = full(sa.url)
    converge_projects(d)
    ctx = context(d)
    apply_all(anonymization.plan(ctx))
    put(sa.url, "/xapi/anonymize/site", SITE_SCRIPT.rstrip("\n"))
    put(sa.url, "/xapi/anonymize/projects/ANON", PROJECT_SCRIPT + "\n\n")
    assert anonymization.plan(ctx) == []


def test_no_site_script_leaves_its_text_alone_but_sets_the_flag(sa: XnatStandin) -> None:
    put(sa.url, "/xapi/anonymize/site", "// someone's script\n")
    ctx = context(desired(sa.url, site_anon_script=None, site_anon_enabled=False))
    changes = anonymization.plan(ctx)
    # XNAT's default is enabled (§11): the flag is always set explicitly.
    assert [(c.action, c.before, c.after) for c in changes] == [
        ("update", {"enabled": True}, {"enabled": False})
    ]
    apply_all(changes)
    assert anonymization.plan(ctx) == []
    assert sa.state.site_config["sitewideAnonymizationScript"] == "// someone's script\n"
    assert sa.state.site_config["enableSitewideAnonymizationScript"] is False


def test_project_not_created_yet_is_planned_without_reading_it(sa: XnatStandin) -> None:
    d = full(sa.url)
    mark = len(sa.requests_log)
    changes = anonymization.plan(context(d))
    assert [c.target for c in changes] == ["site anonymization", "project ANON anonymization"]
    assert changes[1].before == {"script": anonymization.UNREADABLE, "enabled": False}
    assert not [r for r in sa.requests_log[mark:] if r[1].startswith("/xapi/anonymize/projects")]
    converge_projects(d)  # the projects area runs first
    apply_all(changes)
    assert anonymization.plan(context(d)) == []


def test_fresh_site_is_planned_without_any_request(standin: XnatStandin) -> None:
    d = full(standin.url)
    changes = anonymization.plan(context(d, fresh=True))
    assert standin.requests_log == []
    assert targets(changes) == [
        ("update", "site anonymization"),
        ("create", "project ANON anonymization"),
    ]
    assert changes[0].before == {"script": "none"}  # XNAT's default: enabled already
    initialise(standin.url)
    converge_projects(d)
    apply_all(changes)
    assert anonymization.plan(context(d)) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"site_anon_script": " \n"}, "site anonymization script is empty"),
        (
            {"projects": (project("P", anon_script="", anon_enabled=False),)},
            "project P: the anonymization script is empty",
        ),
        (
            {"projects": (project("P", anon_script=None, anon_enabled=True),)},
            "enabled without a script",
        ),
    ],
)
def test_invalid_desired_state_is_refused_before_any_request(
    sa: XnatStandin, fields: dict[str, object], message: str
) -> None:
    err = refused(sa, lambda: anonymization.plan(context(desired(sa.url, **fields))), message)
    assert err.area == "anonymization"


def test_script_diff_is_a_unified_diff() -> None:
    diff = anonymization.script_diff("a\nb\n", "a\nc", "x")
    assert diff.splitlines() == [
        "--- x (XNAT)",
        "+++ x (inventory)",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
    assert anonymization.same_script("a\n", "a")
    assert not anonymization.same_script(None, "a")
    assert not anonymization.same_script("a\n", "a \n")
