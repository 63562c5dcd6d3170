"""Hardware profiles of relay images (``relay_images/<profile>.yml``), validated.

A profile is data: disk layout, packages for the hardware, consoles and kernel command line, the
``seal`` list (what sealing removes or resets, and why) and the ``identity`` list (what
personalisation writes). ``extends: <profile>`` takes every top-level key the file does not set
from another profile. Errors name the file and line. docs/images.md describes the fields.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from xnat_fleet.errors import FleetError
from xnat_fleet.model.fleet import Strict
from xnat_fleet.model.loader import _yaml_error
from xnat_fleet.paths import project_root

_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|TiB)$")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
MiB = 1 << 20


class RecipeError(FleetError):
    """A profile that cannot be read or is not valid."""


def parse_size(value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = _SIZE.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a size like 256MiB or 4GiB")
    return int(m.group(1)) * _UNITS[m.group(2)]


class Partition(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    type: Literal["esp", "linux-root-x86-64", "linux"]
    size: str  # a size, or "rest": to the end of the image
    filesystem: Literal["vfat", "ext4"]
    label: str = Field(max_length=11)
    grow_on_first_boot: bool = False
    # The root only: one member of an md RAID1 (format 1.0, the superblock at the partition's
    # end); the storage role adds the second boot disk at first boot (docs/storage.md).
    md_mirror: bool = False

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if v != "rest":
            parse_size(v)
        return v

    def size_bytes(self, rest: int) -> int:
        return rest if self.size == "rest" else parse_size(self.size)


class Disk(Strict):
    size: str
    partitions: list[Partition] = Field(min_length=2)

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v

    @field_validator("partitions")
    @classmethod
    def _layout(cls, v: list[Partition]) -> list[Partition]:
        if [p.type for p in v].count("esp") != 1 or v[0].type != "esp":
            raise ValueError("the first partition, and only it, must be the ESP (type esp)")
        if [p.type for p in v].count("linux-root-x86-64") != 1:
            raise ValueError("exactly one partition must be the root (type linux-root-x86-64)")
        if any(p.size == "rest" for p in v[:-1]):
            raise ValueError("only the last partition may take the rest of the disk")
        if len({p.name for p in v}) != len(v) or len({p.label for p in v}) != len(v):
            raise ValueError("partition names and labels must be unique")
        for p in v:
            if p.md_mirror and (p.type != "linux-root-x86-64" or p.filesystem != "ext4"):
                raise ValueError(f"partition {p.name}: md_mirror is for the ext4 root only")
            if p.md_mirror and p.grow_on_first_boot:
                raise ValueError(
                    f"partition {p.name}: a mirrored root keeps its size (md_mirror and "
                    "grow_on_first_boot exclude each other)"
                )
        return v

    @property
    def size_bytes(self) -> int:
        return parse_size(self.size)


class Packages(Strict):
    kernel: list[str] = Field(min_length=1)
    firmware: list[str] = Field(default_factory=list)
    base: list[str] = Field(min_length=1)

    def all(self) -> list[str]:
        return sorted({*self.kernel, *self.firmware, *self.base})


class Boot(Strict):
    loader: Literal["systemd-boot"]
    consoles: list[str] = Field(min_length=1)
    kernel_cmdline: list[str] = Field(default_factory=list)
    blacklist_modules: list[str] = Field(default_factory=list)

    def cmdline(self, root_uuid: str) -> str:
        consoles = [f"console={c}" for c in self.consoles]
        return " ".join([f"root=UUID={root_uuid}", *self.kernel_cmdline, *consoles])


class SealStep(Strict):
    path: str = Field(pattern=r"^/")
    # preset: a systemd preset file that keeps the units enabled now and enables nothing else
    # (seal.preset_lines): systemd's first boot runs `preset-all`, which would otherwise enable
    # every installed unit (Debian's policy: enable all), Tomcat included.
    action: Literal["remove", "truncate", "write", "symlink", "preset"]
    content: str | None = None
    # write: a Jinja2 template under templates/ instead of `content` (units, drop-ins)
    template: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_./-]+\.j2$")
    mode: str = Field(default="0644", pattern=r"^0[0-7]{3}$")  # write: the file's mode
    why: str = Field(min_length=1)

    @model_validator(mode="after")
    def _content(self) -> SealStep:
        given = (self.content is not None) + (self.template is not None)
        if self.action == "write" and given != 1:
            raise ValueError("write takes exactly one of content and template")
        if self.action == "symlink" and (self.content is None or self.template is not None):
            raise ValueError("symlink takes content (the link's target) and no template")
        if self.action not in ("write", "symlink") and given:
            raise ValueError(f"{self.action} takes neither content nor template")
        if self.template is not None and ".." in self.template.split("/"):
            raise ValueError("template must stay under templates/")
        return self


class IdentityItem(Strict):
    item: str
    paths: list[str]
    source: str


class Recipe(Strict):
    profile: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    description: str
    suite: str
    architecture: Literal["amd64"]
    components: list[str] = Field(default_factory=lambda: ["main"])
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    disk: Disk
    packages: Packages
    boot: Boot
    seal: list[SealStep] = Field(min_length=1)
    identity: list[IdentityItem] = Field(min_length=1)

    def digest(self) -> str:
        """sha256 of the resolved recipe: a change to any field is a new recipe."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (pydantic's error location)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _read(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the profile: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1:1: a profile is a mapping of fields")
    return data, node


def profiles_dir() -> Path:
    return project_root() / "relay_images"


def available(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or profiles_dir()).glob("*.yml"))


def load(profile: str, directory: Path | None = None) -> Recipe:
    """The profile ``profile`` from ``directory``, its ``extends`` resolved, validated."""
    directory = directory or profiles_dir()
    seen: list[str] = []
    merged: dict[str, Any] = {}
    nodes: dict[str, tuple[Path, yaml.Node | None]] = {}
    name: str | None = profile
    while name is not None:
        if name in seen:
            raise RecipeError(f"{directory}: profiles extend each other in a loop: {seen}")
        seen.append(name)
        path = directory / f"{name}.yml"
        if not path.exists():
            known = ", ".join(available(directory)) or "none"
            raise RecipeError(f"{path}: no such hardware profile (profiles: {known})")
        data, node = _read(path)
        parent = data.pop("extends", None)
        for key, value in data.items():
            if key not in merged:
                merged[key] = value
                nodes[key] = (path, node)
        name = parent if parent is None else str(parent)
    try:
        return Recipe.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            path, node = nodes.get(str(loc[0]), (directory / f"{profile}.yml", None))
            line = _line_of(node, loc)
            where = f"{path}:{line}" if line else str(path)
            field = ".".join(str(x) for x in loc)
            problems.append(f"{where}: {field}: {err['msg']}")
        raise RecipeError("\n".join(problems)) from None
