"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.data._files import write_image


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder with ``img/a.png`` (64 x 48) and ``img/b.jpg`` (32 x 32)."""
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.jpg", (32, 32))
    return tmp_path
