"""Generate ``docs/config.md`` (every key: dotted path, type, default, meaning) from the schema.

    python -m coordexp.config.docs            # print the reference
    python -m coordexp.config.docs --write    # rewrite docs/config.md
    python -m coordexp.config.docs --check    # exit 1 when docs/config.md is stale

The schema is the only source: defaults and help texts come from the attrs fields, so the reference cannot
drift from the code without a failing test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs

from coordexp.cli import generated_doc_main
from coordexp.config._fields import help_of
from coordexp.config._types import fields_of, section_class, tuple_item, type_name
from coordexp.config.schema_root import Config

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"
REGENERATE = "python -m coordexp.config.docs --write"
ALIASES = {
    "custom.extra.rollout_matching": "rollout_matching",
    "custom.extra.stage2_ab": "stage2_ab",
}

HEADER = f"""# Config reference

Generated from the schema (`coordexp/config/schema_*.py`) by `{REGENERATE}`; do not edit by hand.

A config is YAML. `extends:` (a path or list of paths relative to the file) layers files, `--base_config`
adds one more file underneath, and `--set key.path=value` (value read as YAML) overrides single keys.
Mappings merge key by key; lists, scalars and `null` replace. Unknown keys are errors.
Cross-field rules run at load time (`python -m coordexp.run --config C --dry-run`); every error names its key
and how to fix it.
"""


def _default(field: attrs.Attribute) -> str:
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return "(section)"
    return f"`{_literal(default)}`"


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render_section(cls: type, path: str, about: str, out: list[str]) -> None:
    title = path or "top level"
    alias = f" (also accepted as top-level `{ALIASES[path]}`)" if path in ALIASES else ""
    out += ["", f"## `{title}`{alias}", "", about, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[type, str, str]] = []
    for field in fields_of(cls):
        key = f"{path}.{field.name}" if path else field.name
        sub, item = section_class(field.type), tuple_item(field.type)
        if sub is not None:
            nested.append((sub, key, help_of(field)))
        elif item is not None and section_class(item) is not None:
            nested.append((section_class(item), f"{key}[]", help_of(field)))
        out.append(f"| `{key}` | {_cell(type_name(field.type))} | {_cell(_default(field))} | {_cell(help_of(field))} |")
    for sub, key, about_sub in nested:
        _render_section(sub, key, about_sub, out)


def render() -> str:
    out = [HEADER.rstrip("\n")]
    _render_section(Config, "", "Keys at the top level of the file.", out)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated_doc_main(argv, prog="python -m coordexp.config.docs", description=__doc__.splitlines()[0], path=DOCS_PATH,
                              render=render, regenerate=REGENERATE)


if __name__ == "__main__":
    sys.exit(main())
