"""The storage role's tool (roles/storage/files/xnat_fleet_storage.py) on this machine.

What runs without a disk of its own: the layout plan of the single-disk profile, reading
/proc/mdstat, the configuration's validation, the free-space verdicts and the boot check's
decision. The tool's disk work (partitions, LUKS2 with a TPM2, ext4) runs in the boot tests
(tests/test_image_storage_boot.py), where the guest has a kernel of its own.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parents[1] / "roles/storage/files/xnat_fleet_storage.py"
GIB = 1 << 30
MIB_SECTORS = 2048


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("xnat_fleet_storage", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["xnat_fleet_storage"] = module
    spec.loader.exec_module(module)
    return module


st = _load()


def _disk(gib: int, root_end_mib: int) -> tuple[Any, Any]:
    esp = st.Part("vda1", 1, MIB_SECTORS, 256 * MIB_SECTORS)
    root = st.Part("vda2", 2, 257 * MIB_SECTORS, (root_end_mib - 257) * MIB_SECTORS)
    return st.Disk("vda", gib * GIB // 512, [esp, root]), root


def test_root_grows_to_its_size_and_the_data_takes_the_rest() -> None:
    disk, root = _disk(64, 4095)
    cfg = st.Config(root_size=32 * GIB, data_min_size=GIB)
    plan = st.plan_single(disk, root, cfg)
    assert plan.grows_root
    assert (plan.root_end - root.start) * 512 == 32 * GIB
    assert plan.data_start == plan.root_end and plan.data_start % MIB_SECTORS == 0
    assert plan.data_start + plan.data_size == disk.usable_end
    assert disk.sectors - disk.usable_end >= 34  # room for the backup GPT


def test_a_small_disk_keeps_the_least_data_size_and_a_smaller_one_is_refused() -> None:
    disk, root = _disk(6, 4095)
    plan = st.plan_single(disk, root, st.Config(root_size=32 * GIB, data_min_size=GIB))
    assert plan.data_size * 512 == GIB  # the root grew only as far as the data allows
    assert plan.root_end > root.end
    small, root = _disk(5, 4200)
    with pytest.raises(st.StorageError, match=r"no room for a data partition of at least 1024 MiB"):
        st.plan_single(small, root, st.Config(root_size=32 * GIB, data_min_size=GIB))


def test_the_root_never_shrinks_and_must_be_the_last_partition() -> None:
    disk, root = _disk(64, 40 * 1024)  # built larger than root_size
    plan = st.plan_single(disk, root, st.Config(root_size=32 * GIB))
    assert not plan.grows_root and plan.data_start == root.end
    after = st.Part("vda3", 3, root.end, MIB_SECTORS)
    with pytest.raises(st.StorageError, match="not the last one"):
        st.plan_single(st.Disk("vda", disk.sectors, [*disk.parts, after]), root, st.Config())


MDSTAT = """Personalities : [raid1] [raid6] [raid5] [raid4]
md1 : active raid6 sdd1[3] sdc1[2] sdb1[1]
      16758784 blocks super 1.2 level 6, 512k chunk, algorithm 2 [4/3] [UUU_]
      [==>..................]  recovery = 12.6% (1056768/8379392) finish=0.6min speed=211353K/sec

md0 : active raid1 vdb2[1] vda2[0](F)
      4189184 blocks super 1.0 [2/1] [_U]

md2 : active raid1 vde1[1] vdf1[0]
      1046528 blocks super 1.2 [2/2] [UU]

unused devices: <none>
"""


def test_mdstat_names_degraded_arrays_failed_members_and_rebuilds() -> None:
    arrays = {a["name"]: a for a in st.md_arrays(MDSTAT)}
    assert arrays["md1"]["level"] == "raid6" and arrays["md1"]["degraded"]
    assert arrays["md1"]["health"] == "[UUU_]" and "recovery = 12.6%" in arrays["md1"]["rebuild"]
    assert arrays["md0"]["failed"] == ["vda2"] and arrays["md0"]["degraded"]
    assert not arrays["md2"]["degraded"] and arrays["md2"]["members"] == ["vde1", "vdf1"]


def test_configuration_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "storage.json"
    path.write_text(json.dumps({"layout": "single", "colour": "blue"}))
    with pytest.raises(st.StorageError, match=r"storage.json: unknown keys colour"):
        st.Config.load(path)
    path.write_text(json.dumps({"space_warn_percent": 95, "space_alarm_percent": 90}))
    with pytest.raises(st.StorageError, match="space_warn_percent <= space_alarm_percent"):
        st.Config.load(path)
    path.write_text("{")
    with pytest.raises(st.StorageError, match="not JSON"):
        st.Config.load(path)
    path.write_text(json.dumps({"layout": "single", "root_size": 2 * GIB}))
    assert st.Config.load(path).root_size == 2 * GIB
    assert st.main(["check-config", str(path)]) == 0


def _cfg(tmp_path: Path, **kw: Any) -> Any:
    return st.Config(
        data_mount=str(tmp_path / "data"), state_file=str(tmp_path / "state.json"),
        status_file=str(tmp_path / "status.json"), **kw,
    )  # fmt: skip


def test_free_space_verdicts_follow_the_thresholds(tmp_path: Path) -> None:
    used = st.space("/", st.Config())["used_percent"]
    assert 0 < used < 100
    warn = st.space("/", st.Config(space_warn_percent=max(1, int(used) - 1)))
    assert warn["level"] == "warn"
    alarm = st.space("/", st.Config(space_warn_percent=1, space_alarm_percent=max(1, int(used))))
    assert alarm["level"] == "alarm"
    report = st.status(_cfg(tmp_path, space_warn_percent=1, space_alarm_percent=100))
    assert report["verdict"] == "warn" and report["reasons"][0].startswith("/ is ")


def test_the_boot_check_waits_for_the_layout_then_insists_on_the_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts: list[tuple[str, str]] = []
    monkeypatch.setattr(st, "alert", lambda subject, body, cfg: alerts.append((subject, body)))
    monkeypatch.setattr(st, "run", lambda *a, **k: st.subprocess.CompletedProcess(a, 0, "", ""))
    cfg = _cfg(tmp_path, encrypt=True)
    assert st.check_boot(cfg) == 0 and not alerts  # before the first boot laid it out
    st.save_state(cfg, {"applied": "2026-12-03T00:00:00Z"})
    assert st.check_boot(cfg) == 1
    subject, body = alerts[0]
    assert "is not mounted, XNAT stays stopped" in subject
    assert "relay-data is not open" in body and "recovery passphrase" in body
    report = st.status(cfg)
    assert report["verdict"] == "fail" and f"{cfg.data_mount} is not mounted" in report["reasons"]


def test_the_pool_members_are_found_by_name_with_one_search_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []
    export = (
        "DEVNAME=/dev/sdd1\nLABEL=any:pool\nTYPE=linux_raid_member\n\n"
        "DEVNAME=/dev/sdx1\nLABEL=any:pool\nTYPE=ext4\n\n"
        "DEVNAME=/dev/sdc1\nLABEL=any:pool\nTYPE=linux_raid_member\n"
    )

    def fake_run(argv: list[str], **kwargs: Any) -> Any:
        calls.append(argv)
        return st.subprocess.CompletedProcess(argv, 0, export, "")

    monkeypatch.setattr(st, "run", fake_run)
    # an ext4 that happens to carry the label is no member
    assert st.array_members("pool") == ["/dev/sdc1", "/dev/sdd1"]
    # blkid refuses a second -t ("Can only search for one NAME=value pair")
    assert [a for a in calls[0] if a == "-t"] == ["-t"] and "LABEL=any:pool" in calls[0]


def test_an_array_named_by_its_link_has_the_members_of_its_md_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slaves = tmp_path / "sys/block/md127/slaves"
    slaves.mkdir(parents=True)
    for name in ("sdd1", "sdc1"):
        (slaves / name).touch()
    link = tmp_path / "dev/md/pool"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "dev/md127")
    monkeypatch.setattr(st, "SYS", tmp_path / "sys")
    assert st.PoolLayout.members(str(link)) == ["sdc1", "sdd1"]
    assert st.PoolLayout.members(str(tmp_path / "dev/md127")) == ["sdc1", "sdd1"]


def test_a_line_of_crypttab_or_fstab_is_replaced_not_repeated(tmp_path: Path) -> None:
    tab = tmp_path / "crypttab"
    tab.write_text("# comment\nother UUID=1 none luks\nrelay-data UUID=old none luks\n")
    applier = st.Applier(_cfg(tmp_path), dry_run=False, recovery_key=None)
    st.replace_line(tab, "relay-data", "relay-data UUID=new none luks,tpm2-device=auto", applier)
    st.replace_line(tab, "relay-data", "relay-data UUID=new none luks,tpm2-device=auto", applier)
    assert tab.read_text().splitlines() == [
        "# comment", "other UUID=1 none luks", "relay-data UUID=new none luks,tpm2-device=auto",
    ]  # fmt: skip
    assert applier.actions == ["write relay-data to " + str(tab)]
    dry = st.Applier(_cfg(tmp_path), dry_run=True, recovery_key=None)
    st.replace_line(tab, "relay-data", "relay-data UUID=newer none luks", dry)
    assert "UUID=newer" not in tab.read_text() and dry.actions


# -- layout pool: which disks, and which are left alone ------------------------------------


def _bd(name: str, gib: int, rotational: bool, sigs: list[str] | None = None,
        labels: list[str] | None = None) -> Any:  # fmt: skip
    return st.BlockDisk(
        name, gib * GIB, rotational, f"/dev/disk/by-id/ata-DISK_{name}", sigs or [], labels or []
    )


def _box(*extra: Any) -> list[Any]:
    return [
        _bd("sda", 120, False, ["gpt partition table"], ["esp", "root"]),  # SSD A (boot)
        _bd("sdb", 120, False),  # SSD B
        *[_bd(n, 4000, True) for n in ("sdc", "sdd", "sde", "sdf")],
        *extra,
    ]


def test_the_rule_takes_blank_rotational_disks_and_leaves_a_foreign_one_alone() -> None:
    foreign = _bd("sdg", 4000, True, ["gpt partition table", "sdg1: ext4 (scans)"], [""])
    small = _bd("sdh", 0, True)
    choice = st.choose_pool_disks(_box(foreign, small), {"sda", "sdb"}, st.Config(layout="pool"))
    assert [d.name for d in choice.disks] == ["sdc", "sdd", "sde", "sdf"]
    why = {d.name: reason for d, reason in choice.skipped}
    assert "left untouched" in why["sdg"] and "ext4 (scans)" in why["sdg"]
    assert "smaller than" in why["sdh"]
    assert set(why) == {"sdg", "sdh"}  # the SSD B was a boot disk, not a candidate


def test_with_a_foreign_disk_among_four_there_is_no_pool_unless_wipe_names_it() -> None:
    disks = _box()
    disks[5] = _bd("sdf", 4000, True, ["xfs (old-archive)"])
    cfg = st.Config(layout="pool")
    choice = st.choose_pool_disks(disks, {"sda", "sdb"}, cfg)
    assert len(choice.disks) == 3 and choice.skipped[0][0].name == "sdf"
    wipe = st.Config(layout="pool", wipe=["/dev/disk/by-id/ata-DISK_sdf"])
    assert len(st.choose_pool_disks(disks, {"sda", "sdb"}, wipe).disks) == 4


def test_disks_of_this_pool_are_chosen_again_and_named_disks_must_all_be_usable() -> None:
    disks = _box()
    for d in disks[2:]:
        d.signatures, d.part_labels = (
            ["gpt partition table", "x1: linux_raid_member"],
            ["relay-pool"],
        )
    choice = st.choose_pool_disks(disks, {"sda", "sdb"}, st.Config(layout="pool"))
    assert len(choice.disks) == 4 and all(st.is_pool_member(d) for d in choice.disks)
    named = [f"/dev/disk/by-id/ata-DISK_{n}" for n in ("sdc", "sdd", "sde", "sdg")]
    with pytest.raises(st.StorageError, match="ata-DISK_sdg is not attached"):
        st.choose_pool_disks(disks, set(), st.Config(layout="pool", pool_disks=named))
    disks[3].signatures, disks[3].part_labels = ["ext4"], []
    named[3] = "/dev/disk/by-id/ata-DISK_sdf"
    with pytest.raises(st.StorageError, match=r"cannot all be used: .*ata-DISK_sdd: holds ext4"):
        st.choose_pool_disks(disks, {"sda", "sdb"}, st.Config(layout="pool", pool_disks=named))


def test_the_mirror_disk_is_the_one_other_ssd_or_the_named_one() -> None:
    disks = _box()
    cfg = st.Config(layout="pool")
    assert st.choose_mirror_disk(disks, disks[0], 10 * GIB, cfg).name == "sdb"
    with pytest.raises(st.StorageError, match="exactly one more SSD of at least 204800 MiB"):
        st.choose_mirror_disk(disks, disks[0], 200 * GIB, cfg)
    two = [*disks, _bd("sdi", 240, False)]
    with pytest.raises(st.StorageError, match=r"found .*ata-DISK_sdb, .*ata-DISK_sdi"):
        st.choose_mirror_disk(two, disks[0], 10 * GIB, cfg)
    named = st.Config(layout="pool", mirror_disk="/dev/disk/by-id/ata-DISK_sdi")
    assert st.choose_mirror_disk(two, disks[0], 10 * GIB, named).name == "sdi"


def test_pool_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "storage.json"
    for raw, message in (
        ({"layout": "pool", "pool_level": "raid5"}, "pool_level 'raid5' is not raid6 or raid10"),
        ({"layout": "pool", "pool_level": "raid10", "pool_disk_count": 5}, "even pool_disk_count"),
        ({"layout": "pool", "pool_disks": ["/dev/sdc"] * 4}, "named by /dev/disk/by-id/"),
        ({"layout": "pool", "pool_disks": ["/dev/disk/by-id/a"]}, "names 1 disks"),
    ):
        path.write_text(json.dumps(raw))
        with pytest.raises(st.StorageError, match=message):
            st.Config.load(path)
    path.write_text(json.dumps({"layout": "pool"}))
    cfg = st.Config.load(path)
    assert cfg.device_timeout == "90s" and cfg.pool_volume == "/dev/relaypool/data"


def test_mdadm_conf_needs_known_keywords_and_a_mail_address(tmp_path: Path) -> None:
    conf = tmp_path / "mdadm.conf"
    conf.write_text("# x\nHOMEHOST <system>\nMAILADDR root\n")
    assert st.check_mdadm_conf(conf) == 0
    conf.write_text("HOMEHOST <system>\n")
    assert st.check_mdadm_conf(conf) == 1
    conf.write_text("MAILADDR root\nMAILTO root\n")
    assert st.check_mdadm_conf(conf) == 1
