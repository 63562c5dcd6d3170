"""Typed changes and plans: what a reconciler would do, printable as a diff and as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

SECRET = "(secret)"  # noqa: S105  # what a plan shows instead of a secret value

Action = Literal["create", "update", "delete", "run", "note"]
_SYMBOL = {"create": "+", "update": "~", "delete": "-", "run": ">", "note": "!"}


class ReconcileError(Exception):
    """The desired state cannot be applied as written (raised before any request)."""

    def __init__(self, host: str, area: str, message: str) -> None:
        self.host = host
        self.area = area
        super().__init__(f"{host}: {area}: {message}")


@dataclass
class Change:
    """One difference between the inventory and XNAT, with the closure that removes it.

    ``action="note"`` marks something shown in the plan that is not applied and not drift
    (e.g. a receiver the inventory no longer lists, kept without ``--prune``).
    """

    area: str
    action: Action
    target: str
    before: Any = None
    after: Any = None
    detail: str = ""  # e.g. a unified diff of script text
    apply: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def is_drift(self) -> bool:
        return self.action != "note"

    def render(self) -> str:
        head = f"  {_SYMBOL[self.action]} {self.area}: {self.action} {self.target}"
        lines = [head]
        if (
            self.action == "update"
            and isinstance(self.before, dict | type(None))
            and isinstance(self.after, dict)
        ):
            before = self.before or {}
            for key in self.after:
                lines.append(f"      {key}: {_show(before.get(key))} -> {_show(self.after[key])}")
        elif self.after is not None and self.action in ("create", "update", "run"):
            lines.append(f"      {_show(self.after)}")
        elif self.before is not None and self.action in ("delete", "note"):
            lines.append(f"      {_show(self.before)}")
        if self.detail:
            lines.extend("      " + line for line in self.detail.rstrip("\n").splitlines())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "detail": self.detail,
        }


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value == SECRET else json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Plan:
    host: str
    url: str
    changes: list[Change] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # e.g. "stand-in" for the demo

    @property
    def drift(self) -> list[Change]:
        return [c for c in self.changes if c.is_drift]

    def render(self) -> str:
        label = f" [{', '.join(self.labels)}]" if self.labels else ""
        head = f"{self.host} ({self.url}){label}"
        if not self.changes:
            return f"{head}: no changes"
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.action] = counts.get(c.action, 0) + 1
        summary = ", ".join(f"{n} to {a}" for a, n in counts.items())
        return "\n".join([f"{head}: {summary}", *(c.render() for c in self.changes)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "url": self.url,
            "labels": self.labels,
            "changes": [c.to_dict() for c in self.changes],
        }
