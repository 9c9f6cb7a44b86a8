"""The one way a config field is declared: a default (or a factory) plus a help text.

Every default of the config surface is written exactly once, here in the schema modules, through
``knob``/``section``; the help text is what ``docs/config.md`` shows, so a field without one cannot be
declared.
"""

from __future__ import annotations

from typing import Any

import attrs

HELP = "help"


def knob(default: Any = attrs.NOTHING, *, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A scalar (or tuple) setting with its meaning; ``attrs.NOTHING`` makes it required."""
    if not help.strip():
        raise ValueError("a config field needs a non-empty help text")
    return attrs.field(default=default, metadata={HELP: help})


def section(cls: type, *, help: str) -> Any:  # noqa: A002
    """A nested section that is always present, filled with its own defaults when omitted."""
    return attrs.field(factory=cls, metadata={HELP: help})


def help_of(field: attrs.Attribute) -> str:
    return str(field.metadata.get(HELP, ""))
