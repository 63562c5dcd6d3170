"""Hardware profiles in relay_images/: both load, and a broken one names its file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xnat_fleet.image import recipe
from xnat_fleet.paths import project_root

PROFILES = project_root() / "relay_images"


@pytest.mark.parametrize("profile", ["nuc", "supermicro"])
def test_the_shipped_profiles_are_valid(profile: str) -> None:
    r = recipe.load(profile)
    assert r.profile == profile
    assert r.disk.partitions[0].type == "esp"
    assert any(s.path == "/etc/machine-id" and s.content == "uninitialized\n" for s in r.seal)
    assert "intel-microcode" in r.packages.firmware
    assert r.boot.cmdline("abc").startswith("root=UUID=abc ")


def test_supermicro_takes_what_it_does_not_set_from_nuc() -> None:
    nuc, sm = recipe.load("nuc"), recipe.load("supermicro")
    assert sm.seal == nuc.seal and sm.identity == nuc.identity and sm.disk.size == nuc.disk.size
    # its own disk: the root is a mirror member of fixed size, the NUC's grows
    sm_root, nuc_root = sm.disk.partitions[1], nuc.disk.partitions[1]
    assert sm_root.md_mirror and not sm_root.grow_on_first_boot
    assert nuc_root.grow_on_first_boot and not nuc_root.md_mirror
    assert sm.boot.consoles[0] == "ttyS1,115200n8" != nuc.boot.consoles[0]
    assert "mdadm" in sm.packages.base and "mdadm" not in nuc.packages.base
    assert sm.digest() != nuc.digest()


def test_only_a_fixed_size_ext4_root_can_be_a_mirror_member(tmp_path: Path) -> None:
    _copy(tmp_path)
    text = (tmp_path / "supermicro.yml").read_text()
    (tmp_path / "supermicro.yml").write_text(
        text.replace(
            "      md_mirror: true", "      md_mirror: true\n      grow_on_first_boot: true"
        )
    )
    with pytest.raises(recipe.RecipeError, match="md_mirror and grow_on_first_boot"):
        recipe.load("supermicro", tmp_path)


def _copy(tmp_path: Path) -> Path:
    for name in ("nuc", "supermicro"):
        shutil.copy(PROFILES / f"{name}.yml", tmp_path / f"{name}.yml")
    return tmp_path


def test_a_yaml_error_names_file_line_and_column(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    text = (d / "nuc.yml").read_text().replace("suite: bookworm", "suite: [bookworm")
    (d / "nuc.yml").write_text(text)
    line = text.splitlines().index("suite: [bookworm") + 1
    with pytest.raises(recipe.RecipeError, match=rf"nuc\.yml:{line + 1}:\d+: YAML syntax error"):
        recipe.load("nuc", d)


def test_a_bad_field_names_file_line_and_field(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    text = (d / "nuc.yml").read_text().replace("size: 256MiB", "size: 256MB")
    text = text.replace("components: [main, non-free-firmware]", "components: 7")
    (d / "nuc.yml").write_text(text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "size: 256MB" in x)
    with pytest.raises(recipe.RecipeError) as info:
        recipe.load("nuc", d)
    assert f"nuc.yml:{line}: disk.partitions.0.size:" in str(info.value)
    assert "256MB" in str(info.value)
    # Through supermicro (its own disk, nuc's components): the error names the file that holds
    # the bad value.
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "components: 7" in x)
    with pytest.raises(recipe.RecipeError) as info:
        recipe.load("supermicro", d)
    assert f"nuc.yml:{line}: components" in str(info.value) and "256MB" not in str(info.value)


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(recipe.RecipeError, match="profiles: nuc, supermicro"):
        recipe.load("rpi", _copy(tmp_path))


def test_profiles_that_extend_each_other_in_a_loop_are_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    text = (d / "nuc.yml").read_text()
    (d / "nuc.yml").write_text(text.replace("\n---\n", "\n---\nextends: supermicro\n", 1))
    with pytest.raises(recipe.RecipeError, match="loop"):
        recipe.load("supermicro", d)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            {"path": "/x", "action": "write", "content": "a", "template": "image/a.j2"},
            "exactly one",
        ),
        ({"path": "/x", "action": "write"}, "exactly one"),
        ({"path": "/x", "action": "symlink", "template": "image/a.j2"}, "symlink takes content"),
        ({"path": "/x", "action": "remove", "content": "a"}, "neither content nor template"),
        ({"path": "/x", "action": "write", "template": "../etc/passwd.j2"}, "under templates/"),
    ],
)
def test_a_seal_step_takes_what_its_action_needs(step: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recipe.SealStep.model_validate({**step, "why": "test"})


def test_a_seal_template_is_rendered_and_a_missing_one_named(tmp_path: Path) -> None:
    from xnat_fleet.image import seal

    template = "image/units/xnat-fleet-ssh-keygen.service.j2"
    unit = recipe.SealStep(path="/etc/u.service", action="write", template=template, why="test")
    (tmp_path / "etc").mkdir()
    seal.apply(tmp_path, [unit])
    assert "ExecStart=/usr/bin/ssh-keygen -A" in (tmp_path / "etc/u.service").read_text()
    missing = recipe.SealStep(path="/etc/v", action="write", template="image/nope.j2", why="t")
    with pytest.raises(seal.SealError, match=r"image/nope\.j2 is not in templates/"):
        seal.apply(tmp_path, [missing])
