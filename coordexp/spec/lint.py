"""Strict validation of the spec documents (in the spirit of ``openspec validate --strict``).

Every problem is reported as ``path:line: message`` and all of them are collected in one pass, so an
author fixes a document in one go. The rules are the ones docs/dev/conventions.md states for spec changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from coordexp.spec.model import CHANGE_PREFIXES, TRANSITIONS, Change, Scenario, load_changes
from coordexp.spec.paths import CHANGE_IDS, REPO_ROOT, SPEC_DIR

SCENARIO_ID_RE = re.compile(r"^[A-Z]+-[A-Z]+-\d{3}$")
_NORMATIVE_RE = re.compile(r"\b(SHALL|MUST)\b")
_ALLOWED_SECTIONS = ("why", "requirements")

CATALOGUE_RANGES: dict[str, tuple[tuple[str, int], ...]] = {
    "2026-01-15-add-rollout-matching-trainer": (
        ("RM-PARSE", 39), ("RM-APPEND", 9), ("RM-MATCH", 11), ("RM-TARGET", 4), ("RM-MASK", 5),
        ("RM-DECODE", 16), ("RM-CODEC", 7),
    ),
    "2026-01-19-update-stage2-post-rollout-packing-binpacking": (("BP-SELECT", 6),),
    "stage2-ab-training": (
        ("AB-SCHED", 8), ("AB-CONFIG", 17), ("AB-ROLLOUT", 11), ("AB-TARGET", 15), ("AB-LOSS", 11),
        ("AB-METRIC", 4), ("AB-EXEC", 6), ("AB-LAUNCH", 2),
    ),
}
"""Ids derived from the reference catalogues (conventions id table): each change must define all of them,
numbered 001..N, so fixtures written from the catalogue always find their scenario."""


@attrs.frozen(order=True)
class LintError:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{display_path(self.path)}:{self.line}: {self.message}"


@attrs.frozen
class LintReport:
    changes: tuple[Change, ...]
    errors: tuple[LintError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        n_req = sum(len(c.requirements) for c in self.changes)
        n_scn = sum(len(c.scenarios) for c in self.changes)
        head = f"{len(self.changes)} change(s), {n_req} requirement(s), {n_scn} scenario(s)"
        if self.errors:
            return f"{head}: {len(self.errors)} error(s)"
        return f"{head}: valid"


def display_path(path: Path) -> str:
    """Repository-relative when inside the repository (stable across checkouts), else as given."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def lint(
    spec_dir: Path = SPEC_DIR,
    *,
    only: Iterable[str] | None = None,
    required: Iterable[str] = CHANGE_IDS,
    prefixes: Mapping[str, str] = CHANGE_PREFIXES,
    catalogue: Mapping[str, tuple[tuple[str, int], ...]] = CATALOGUE_RANGES,
) -> LintReport:
    """Validate every change under `spec_dir` (errors reported only for `only`, if given).

    All changes are always read, so a scenario id reused across changes is caught even when one change
    is validated on its own.
    """
    selected = set(only) if only is not None else None
    changes = load_changes(spec_dir)
    errors: list[LintError] = []
    present = {c.id for c in changes}
    for cid in required:
        if cid not in present and (selected is None or cid in selected):
            errors.append(LintError(spec_dir / cid / "spec.md", 0, f"change {cid!r} has no spec.md; "
                                    "write its requirements there"))
    if selected is not None:
        for cid in sorted(selected - present):
            if cid not in set(required):
                errors.append(LintError(spec_dir / cid / "spec.md", 0, f"no spec.md for change {cid!r}"))
    first_seen: dict[str, Scenario] = {}
    for change in changes:
        change_errors = _lint_change(change, prefixes, catalogue.get(change.id, ()))
        for scn in change.scenarios:
            if not scn.id:
                continue
            prev = first_seen.get(scn.id)
            if prev is None:
                first_seen[scn.id] = scn
            else:
                change_errors.append(LintError(
                    scn.path, scn.line,
                    f"duplicate scenario id {scn.id} (first defined at {display_path(prev.path)}:{prev.line}); "
                    "give this scenario the next free number of its area",
                ))
        if selected is None or change.id in selected:
            errors.extend(change_errors)
    shown = tuple(c for c in changes if selected is None or c.id in selected)
    return LintReport(shown, tuple(sorted(errors)))


def _lint_change(change: Change, prefixes: Mapping[str, str], ranges) -> list[LintError]:
    p = change.path
    out: list[LintError] = []
    prefix = prefixes.get(change.id)
    if prefix is None:
        out.append(LintError(p, 1, f"unknown change folder {change.id!r}; known: {sorted(prefixes)} "
                                   "(add new changes to paths.CHANGE_IDS and the conventions prefix table)"))
    if change.why is None:
        out.append(LintError(p, 1, "missing `## Why` section; say in a short paragraph why the change exists"))
    elif not change.why:
        line = next(ln for t, ln in change.sections if t.lower() == "why")
        out.append(LintError(p, line, "`## Why` section is empty"))
    for title, line in change.sections:
        if title.lower() not in _ALLOWED_SECTIONS:
            out.append(LintError(p, line, f"unexpected section `## {title}`; a spec has only "
                                          "`## Why` and `## Requirements`"))
    if not change.requirements:
        out.append(LintError(p, 1, "no `### Requirement:` blocks; a change states at least one requirement"))
    for line, text in change.orphans:
        out.append(LintError(p, line, f"text outside any requirement: {text[:60]!r}; "
                                      "put it under a `### Requirement:` heading"))
    seen_titles: dict[str, int] = {}
    for req in change.requirements:
        if not req.title:
            out.append(LintError(p, req.line, "requirement without a title"))
        elif req.title in seen_titles:
            out.append(LintError(p, req.line, f"duplicate requirement title {req.title!r} "
                                              f"(first at line {seen_titles[req.title]})"))
        else:
            seen_titles[req.title] = req.line
        if not _NORMATIVE_RE.search(req.text):
            out.append(LintError(p, req.line, f"requirement {req.title!r} has no SHALL or MUST in its text; "
                                              "state the obligation normatively"))
        if not req.scenarios:
            out.append(LintError(p, req.line, f"requirement {req.title!r} has no scenario; add at least one "
                                              "`#### Scenario: <ID> <title>`"))
        for scn in req.scenarios:
            out.extend(_lint_scenario(scn, prefix))
    out.extend(_lint_catalogue(change, ranges))
    return out


def _lint_scenario(scn: Scenario, prefix: str | None) -> list[LintError]:
    p, out = scn.path, []
    if not SCENARIO_ID_RE.match(scn.id):
        out.append(LintError(p, scn.line, f"malformed scenario id {scn.id!r}; expected "
                                          "<PREFIX>-<AREA>-<NNN>, e.g. RM-PARSE-012"))
    elif prefix is not None and scn.id.split("-", 1)[0] != prefix:
        out.append(LintError(p, scn.line, f"scenario id {scn.id} does not use this change's prefix {prefix}-"))
    if not scn.title:
        out.append(LintError(p, scn.line, f"scenario {scn.id} has no title after its id"))
    counts: dict[str, int] = {}
    for key, f in scn.fields:
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == 2:
            out.append(LintError(p, f.line, f"scenario {scn.id}: `{key}:` given more than once"))
        if not f.value:
            out.append(LintError(p, f.line, f"scenario {scn.id}: empty `{key}:` line"))
    t = scn.field("Transition")
    if t is None:
        out.append(LintError(p, scn.line, f"scenario {scn.id} has no `Transition:` line; name the runner "
                                          f"that executes it ({', '.join(sorted(TRANSITIONS))})"))
    elif t.value and t.value not in TRANSITIONS:
        out.append(LintError(p, t.line, f"scenario {scn.id}: unknown transition {t.value!r}; "
                                        f"use one of {', '.join(sorted(TRANSITIONS))}"))
    if scn.field("Source") is None:
        out.append(LintError(p, scn.line, f"scenario {scn.id} has no `Source:` line; say where it comes from"))
    if not any(s.keyword == "WHEN" for s in scn.steps):
        out.append(LintError(p, scn.line, f"scenario {scn.id} has no `- **WHEN**` line"))
    if not any(s.keyword == "THEN" for s in scn.steps):
        out.append(LintError(p, scn.line, f"scenario {scn.id} has no `- **THEN**` line"))
    if scn.steps and scn.steps[0].keyword != "WHEN":
        out.append(LintError(p, scn.steps[0].line, f"scenario {scn.id}: steps must start with `- **WHEN**`"))
    for s in scn.steps:
        if not s.text:
            out.append(LintError(p, s.line, f"scenario {scn.id}: empty `{s.keyword}` step"))
    for line, text in scn.stray:
        out.append(LintError(p, line, f"scenario {scn.id}: unrecognised line {text[:60]!r}; expected "
                                      "`Transition:`, `Source:`, `Corrects:` or `- **WHEN|THEN|AND** ...`"))
    return out


def _lint_catalogue(change: Change, ranges) -> list[LintError]:
    ids = {s.id for s in change.scenarios}
    missing = [f"{area}-{n:03d}" for area, count in ranges for n in range(1, count + 1)
               if f"{area}-{n:03d}" not in ids]
    if not missing:
        return []
    return [LintError(change.path, 1, f"catalogue scenarios missing from this change: {', '.join(missing)} "
                                      "(conventions id table maps every catalogue item to one id)")]
