import pytest
from syrupy.extensions.json import JSONSnapshotExtension


@pytest.fixture
def snapshot_json(snapshot):
    """One reviewed JSON file per scenario (keys sorted, non-ASCII kept)."""
    return snapshot.use_extension(JSONSnapshotExtension)
