"""The converge benchmark's per-host timings (benchmarks/converge.py), from progress events."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from xnat_fleet.runner import Progress, RunResult, summarize_events

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("converge", ROOT / "benchmarks" / "converge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["converge"] = module
    spec.loader.exec_module(module)
    return module


def test_timings_per_host_from_task_starts_and_results(bench: ModuleType) -> None:
    now = [0.0]
    timings = bench.Timings(clock=lambda: now[0])
    for at, progress in [
        (0.0, Progress("task", "", "Gathering Facts")),
        (2.0, Progress("ok", "relay", "Gathering Facts")),
        (3.0, Progress("ok", "central", "Gathering Facts")),
        (5.0, Progress("task", "", "Install packages")),
        (6.0, Progress("changed", "relay", "Install packages")),
        (9.0, Progress("skipped", "central", "Install packages")),
        # a handler: no task start event, timed from the host's previous result
        (10.0, Progress("changed", "relay", "Restart sshd")),
        (12.0, Progress("task", "", "Only the relay")),
        (12.5, Progress("failed", "relay", "Only the relay", "boom")),
    ]:
        now[0] = at
        timings(progress)
    relay, central = timings.hosts["relay"], timings.hosts["central"]
    assert relay.tasks == 4 and relay.counts["changed"] == 2 and relay.counts["failed"] == 1
    assert relay.busy == pytest.approx(2 + 1 + 4 + 0.5)
    assert relay.wall == pytest.approx(12.5)
    assert relay.per_task == pytest.approx(7.5 / 4)
    assert central.tasks == 2 and central.counts["skipped"] == 1
    assert central.busy == pytest.approx(3 + 4) and central.wall == pytest.approx(9)


def test_table_and_json_carry_every_host_and_the_run(bench: ModuleType) -> None:
    timings = bench.Timings(clock=iter([0.0, 1.0, 2.0]).__next__)
    timings(Progress("task", "", "t"))
    timings(Progress("ok", "relay-kings", "t"))  # changed, but no_log: its event does not say
    timings(Progress("ok", "relay-kings", "handler"))
    result = summarize_events(
        [
            {"event": "playbook_on_task_start", "event_data": {"task": "t"}},
            {"event": "playbook_on_stats", "event_data": {"ok": {"relay-kings": 2},
                                                          "changed": {"relay-kings": 1}}},
        ]
    )  # fmt: skip
    result.status, result.rc = "successful", 0
    run = bench.Run("first", result, 2.0, timings)
    text = bench.table([run])
    assert "relay-kings" in text and "(run)" in text and "successful" in text
    data = run.to_dict()
    host = data["hosts"]["relay-kings"]
    assert host["tasks"] == 2 and host["changed"] == 1 and host["seconds_per_task"] == 1.0
    assert host["recap"]["changed"] == 1 and data["changed"] == 1
    assert isinstance(result, RunResult)


def test_strategy_default_is_the_projects_own(bench: ModuleType) -> None:
    """The benchmark's default is what ansible.cfg (so the runner and the lab) runs."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    assert cfg["defaults"]["strategy"] == "xnat_fleet_linear"
    assert (ROOT / cfg["defaults"]["strategy_plugins"] / "xnat_fleet_linear.py").is_file()
    assert bench.strategy_env("xnat_fleet_linear") == {"ANSIBLE_STRATEGY": "xnat_fleet_linear"}
    assert bench.build_parser().parse_args([]).strategy == "xnat_fleet_linear"


def test_strategy_linear_is_ansibles_own(bench: ModuleType) -> None:
    assert bench.strategy_env("linear") == {"ANSIBLE_STRATEGY": "linear"}
    with pytest.raises(bench.FleetError, match="not one of"):
        bench.strategy_env("free-for-all")


@pytest.mark.parametrize("strategy", ["mitogen_linear", "mitogen_free"])
def test_strategy_mitogen_names_its_plugin_dir(bench: ModuleType, strategy: str) -> None:
    pytest.importorskip("ansible_mitogen")
    env = bench.strategy_env(strategy)
    assert env["ANSIBLE_STRATEGY"] == strategy
    plugins = Path(env["ANSIBLE_STRATEGY_PLUGINS"])
    assert plugins.parts[-3:] == ("ansible_mitogen", "plugins", "strategy")
    assert (plugins / f"{strategy}.py").is_file()


def test_strategy_flag_reaches_ansible_runners_environment(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner passes no strategy of its own: the benchmark puts it in os.environ, which
    ansible-runner hands on to ansible-playbook (with the runner's envvars on top)."""
    pytest.importorskip("ansible_mitogen")
    from ansible_runner.config.runner import RunnerConfig

    env = bench.strategy_env("mitogen_linear")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = RunnerConfig(
        private_data_dir=str(tmp_path),
        project_dir=str(ROOT / "playbooks"),
        playbook=str(ROOT / "playbooks" / "site.yml"),
        envvars={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        suppress_env_files=True,
        quiet=True,
    )
    config.prepare()
    assert {k: config.env[k] for k in env} == env
    assert config.env["ANSIBLE_CONFIG"] == str(ROOT / "ansible.cfg")


def test_ssh_options_as_ssh_applies_them_first_value_wins(bench: ModuleType) -> None:
    argv = ["ssh", "-C", "-o", "StrictHostKeyChecking=no", "-oUserKnownHostsFile=/lab/kh"]
    argv += ["-o", "StrictHostKeyChecking yes", "-o", "UserKnownHostsFile /dev/null", "host"]
    assert bench.ssh_options(argv) == {
        "stricthostkeychecking": "no",
        "userknownhostsfile": "/lab/kh",
    }


def test_ssh_watch_tells_mitogen_from_ansible_ssh(bench: ModuleType, tmp_path: Path) -> None:
    lab = "/work/.lab/example-123456"
    known = f"UserKnownHostsFile={lab}/kh"
    boot = "exec(zlib.decompress(binascii.a2b_base64(sys.argv[1]),-15))"
    procs = {
        "101": ["ssh", "-o", "StrictHostKeyChecking=no", "-o", known, "h", "python3"],
        "102": ["/usr/bin/ssh", "-o", "StrictHostKeyChecking yes", "-o", known, "h", "-c", boot],
        "103": ["ssh", "-o", "UserKnownHostsFile=/elsewhere/kh", "other"],  # not the lab's
        "104": ["python3", f"{lab}/x"],  # not ssh
    }
    for pid, argv in procs.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()
    watch = bench.SshWatch(lab, proc=tmp_path)
    assert watch.seen.transport == "none seen"
    watch.scan()
    seen = watch.seen
    assert seen.processes == {101, 102} and seen.mitogen == {102} and seen.transport == "mixed"
    options = {dict(o)["StrictHostKeyChecking"] for o in seen.host_keys}
    assert options == {"no", "yes"}
    assert "1 of them Mitogen's" in seen.describe()
    assert seen.to_dict()["host_key_options"][0]["GlobalKnownHostsFile"] == "(ssh default)"
    # processes there before the watch started are an earlier run's, not this one's
    with bench.SshWatch(lab, interval=3600, proc=tmp_path) as later:
        later.scan()
    assert later.seen.transport == "none seen"


def test_extra_vars_are_key_value_pairs(bench: ModuleType) -> None:
    assert bench.extra_vars(["mitogen_task_isolation=fork", "a=b=c"]) == {
        "mitogen_task_isolation": "fork",
        "a": "b=c",
    }
    with pytest.raises(bench.FleetError, match="KEY=VALUE"):
        bench.extra_vars(["fork"])
