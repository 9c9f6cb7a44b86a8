"""The generated config reference is current and every schema field documents itself."""

from __future__ import annotations

import subprocess
import sys

from coordexp.config import docs
from coordexp.config._fields import help_of
from coordexp.config._types import walk_schema
from coordexp.config.schema_root import Config
from coordexp.spec.paths import REPO_ROOT


def test_docs_config_md_is_current():
    current = docs.DOCS_PATH.read_text(encoding="utf-8") if docs.DOCS_PATH.is_file() else ""
    assert current == docs.render(), f"docs/config.md is stale; regenerate it with: {docs.REGENERATE}"


def test_every_field_has_help_and_appears_in_docs():
    text = docs.render()
    for path, field in walk_schema(Config):
        assert help_of(field), path
        assert f"`{path}`" in text, path


def test_docs_show_types_and_defaults():
    text = docs.render()
    assert "| `custom.extra.rollout_matching.repeat_terminate.min_new_tokens` | int | `256` |" in text
    assert "| `training.packing_buffer` | int | `512` |" in text
    assert "(also accepted as top-level `rollout_matching`)" in text


def test_import_stays_light():
    code = "import sys, coordexp.config; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
