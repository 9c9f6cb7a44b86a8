"""Collector for validation results: every rule adds messages, nothing stops at the first problem."""

from __future__ import annotations

from collections.abc import Callable

import attrs


def _nowhere(_key: str) -> str | None:
    return None


@attrs.define
class Findings:
    """``display`` writes a canonical key in the user's layout; ``locate`` gives the ``file:line`` that set it."""

    display: Callable[[str], str] = str
    locate: Callable[[str], str | None] = _nowhere
    errors: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)

    def error(self, key: str, what: str, fix: str) -> None:
        """``key`` is the canonical dotted path; it is shown in the user's layout."""
        self.errors.append(f"{self._where(key)}{self.display(key)}: {what}. Fix: {fix}.")

    def error_message(self, key: str, message: str) -> None:
        """A message another module wrote (it already names the key, in the layout given to it)."""
        self.errors.append(f"{self._where(key)}{message}")

    def warn(self, key: str, what: str, fix: str) -> None:
        self.warnings.append(f"{self._where(key)}{self.display(key)}: {what}. Consider: {fix}.")

    def _where(self, key: str) -> str:
        where = self.locate(key)
        return f"{where}: " if where else ""
