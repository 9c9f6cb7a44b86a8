"""Collector for validation results: every rule adds messages, nothing stops at the first problem."""

from __future__ import annotations

from collections.abc import Callable

import attrs


@attrs.define
class Findings:
    display: Callable[[str], str] = str
    errors: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)

    def error(self, key: str, what: str, fix: str) -> None:
        """``key`` is the canonical dotted path; it is shown in the user's layout."""
        self.errors.append(f"{self.display(key)}: {what}. Fix: {fix}.")

    def warn(self, key: str, what: str, fix: str) -> None:
        self.warnings.append(f"{self.display(key)}: {what}. Consider: {fix}.")
