"""The spec documents as records: ``spec/changes/<change-id>/spec.md`` -> Change / Requirement / Scenario.

Parsing is deliberately lenient: it records what it sees, with file and line numbers, and leaves judging
to :mod:`coordexp.spec.lint` so that one run reports every problem of a document at once instead of
stopping at the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import attrs

from coordexp.spec.paths import SPEC_DIR

TRANSITIONS: frozenset[str] = frozenset(
    {
        "coords", "parse", "append", "serialize", "geometry", "match", "target", "labels",
        "pack_select", "pack_buffer", "pack_row", "loss", "schedule", "config", "decode", "repeat",
        "metrics", "executor", "backend", "hf_backend", "launcher", "eval", "buffer", "learn",
        "channel_a", "guard",
    }
)
"""The closed `Transition:` vocabulary of docs/dev/conventions.md (a test keeps the two in step)."""

CHANGE_PREFIXES: dict[str, str] = {
    "2026-01-15-add-rollout-matching-trainer": "RM",
    "2026-01-16-add-stage2-post-rollout-packing": "PK",
    "2026-01-19-add-stage2-rollout-buffer-offload": "BUF",
    "2026-01-19-update-stage2-post-rollout-packing-binpacking": "BP",
    "stage2-ab-training": "AB",
    "stage2-stability-controls": "ST",
}
"""Scenario-id prefix of each change (the conventions table; a test keeps the two in step)."""

_REQ_RE = re.compile(r"^###\s+Requirement:\s*(?P<title>.*)$")
_SCN_RE = re.compile(r"^####\s+Scenario:\s*(?P<id>\S*)\s*(?P<title>.*)$")
_FIELD_RE = re.compile(r"^(?P<key>Transition|Source|Corrects):\s*(?P<value>.*)$")
_STEP_RE = re.compile(r"^-\s+\*\*(?P<kw>WHEN|THEN|AND)\*\*\s*(?P<text>.*)$")
_H2_RE = re.compile(r"^##\s+(?P<title>.*)$")
_H1_RE = re.compile(r"^#\s+(?P<title>.*)$")


@attrs.frozen
class Step:
    """One ``- **WHEN**`` / ``- **THEN**`` / ``- **AND**`` line (continuation lines joined with a space)."""

    keyword: str
    text: str
    line: int


@attrs.frozen
class Field:
    """A ``Key: value`` metadata line of a scenario."""

    value: str
    line: int


@attrs.frozen
class Scenario:
    id: str
    title: str
    path: Path
    line: int  # the `#### Scenario:` heading, 1-based
    requirement: str
    fields: tuple[tuple[str, Field], ...] = ()  # every metadata line in order, duplicates kept for lint
    steps: tuple[Step, ...] = ()
    stray: tuple[tuple[int, str], ...] = ()  # lines that are neither metadata nor steps

    def field(self, key: str) -> Field | None:
        for k, f in self.fields:
            if k == key:
                return f
        return None

    @property
    def transition(self) -> str | None:
        f = self.field("Transition")
        return f.value if f else None

    @property
    def source(self) -> str | None:
        f = self.field("Source")
        return f.value if f else None

    @property
    def corrects(self) -> str | None:
        f = self.field("Corrects")
        return f.value if f else None

    def _group(self, head: str) -> tuple[str, ...]:
        """Texts of the `head` steps plus the AND lines that follow them."""
        out, current = [], None
        for s in self.steps:
            if s.keyword in ("WHEN", "THEN"):
                current = s.keyword
            if current == head:
                out.append(s.text)
        return tuple(out)

    @property
    def when(self) -> tuple[str, ...]:
        return self._group("WHEN")

    @property
    def then(self) -> tuple[str, ...]:
        return self._group("THEN")


@attrs.frozen
class Requirement:
    title: str
    text: str  # the normative paragraph(s) between the heading and the first scenario
    path: Path
    line: int
    scenarios: tuple[Scenario, ...] = ()


@attrs.frozen
class Change:
    id: str
    path: Path
    title: str | None
    why: str | None  # None when there is no `## Why` section
    requirements: tuple[Requirement, ...] = ()
    sections: tuple[tuple[str, int], ...] = ()  # every `## ` heading with its line
    orphans: tuple[tuple[int, str], ...] = ()  # scenarios or text outside any requirement

    @property
    def scenarios(self) -> tuple[Scenario, ...]:
        return tuple(s for r in self.requirements for s in r.scenarios)


@attrs.define
class _ScenarioBuilder:
    id: str
    title: str
    line: int
    fields: list = attrs.Factory(list)
    steps: list = attrs.Factory(list)
    stray: list = attrs.Factory(list)

    def add(self, lineno: int, raw: str) -> None:
        line = raw.strip()
        if not line:
            return
        m = _STEP_RE.match(line)
        if m:
            self.steps.append(Step(m["kw"], m["text"].strip(), lineno))
            return
        m = _FIELD_RE.match(line)
        if m:
            self.fields.append((m["key"], Field(m["value"].strip(), lineno)))
            return
        if raw[:1].isspace() and self.steps:  # indented continuation of the previous step
            last = self.steps[-1]
            self.steps[-1] = attrs.evolve(last, text=f"{last.text} {line}")
            return
        self.stray.append((lineno, line))

    def build(self, path: Path, requirement: str) -> Scenario:
        return Scenario(
            self.id, self.title, path, self.line, requirement,
            tuple(self.fields), tuple(self.steps), tuple(self.stray),
        )


@attrs.define
class _RequirementBuilder:
    title: str
    line: int
    text: list = attrs.Factory(list)
    scenarios: list = attrs.Factory(list)


def parse_change(text: str, *, path: Path, change_id: str) -> Change:
    """Parse one spec.md. Never raises on content; problems are left for the linter to report."""
    title = None
    why_lines: list[str] | None = None  # None: no `## Why` section seen
    in_why = False
    sections: list[tuple[str, int]] = []
    orphans: list[tuple[int, str]] = []
    reqs: list[_RequirementBuilder] = []
    req: _RequirementBuilder | None = None
    scn: _ScenarioBuilder | None = None
    in_code = False

    def close_scenario() -> None:
        nonlocal scn
        if scn is not None and req is not None:
            req.scenarios.append(scn.build(path, req.title))
        scn = None

    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            in_code = not in_code
        if not in_code and (m := _SCN_RE.match(stripped)):
            close_scenario()
            if req is None:
                orphans.append((lineno, stripped))
                continue
            scn = _ScenarioBuilder(m["id"], m["title"].strip(), lineno)
            continue
        if not in_code and (m := _REQ_RE.match(stripped)):
            close_scenario()
            req = _RequirementBuilder(m["title"].strip(), lineno)
            reqs.append(req)
            in_why = False
            continue
        if not in_code and (m := _H2_RE.match(stripped)):
            close_scenario()
            req = None
            sections.append((m["title"].strip(), lineno))
            in_why = m["title"].strip().lower() == "why"
            if in_why and why_lines is None:
                why_lines = []
            continue
        if not in_code and title is None and not sections and (m := _H1_RE.match(stripped)):
            title = m["title"].strip()
            continue
        if scn is not None:
            scn.add(lineno, raw)
        elif req is not None:
            req.text.append(raw)
        elif in_why and why_lines is not None:
            why_lines.append(raw)
        elif stripped and sections and sections[-1][0].lower() == "requirements":
            orphans.append((lineno, stripped))
    close_scenario()
    requirements = tuple(
        Requirement(r.title, "\n".join(r.text).strip(), path, r.line, tuple(r.scenarios)) for r in reqs
    )
    why = None if why_lines is None else "\n".join(why_lines).strip()
    return Change(change_id, path, title, why, requirements, tuple(sections), tuple(orphans))


def load_change(change_id: str, spec_dir: Path = SPEC_DIR) -> Change:
    path = spec_dir / change_id / "spec.md"
    return parse_change(path.read_text(encoding="utf-8"), path=path, change_id=change_id)


def change_dirs(spec_dir: Path = SPEC_DIR) -> list[str]:
    """Change folders that hold a spec.md, sorted."""
    if not spec_dir.is_dir():
        return []
    return sorted(p.name for p in spec_dir.iterdir() if (p / "spec.md").is_file())


def load_changes(spec_dir: Path = SPEC_DIR, change_ids: Iterable[str] | None = None) -> list[Change]:
    """Every change with a spec.md (or the named ones that have one), in folder order."""
    names = change_dirs(spec_dir) if change_ids is None else [
        c for c in change_ids if (spec_dir / c / "spec.md").is_file()
    ]
    return [load_change(c, spec_dir) for c in names]
