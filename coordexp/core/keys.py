"""The fixed names of the answer format: geometry keys, layouts and the objects-array key.

They live in a module of their own because both the JSON scanner (``coordexp.core.scan``) and the
serializer (``coordexp.core.coordjson``) need them, and the serializer uses the scanner.
"""

from __future__ import annotations

import enum

ARRAY_KEY = "objects"  # the list key of the objects_array layout


class GeomType(enum.StrEnum):
    """Geometry key of an object. A ``StrEnum``, so a member compares equal to its plain string."""

    BBOX = "bbox_2d"
    POLY = "poly"


class Layout(enum.Enum):
    """Where the objects of an answer live: ``object_N`` keys, or one ``"objects"`` list."""

    OBJECT_N = "object_n"
    OBJECTS_ARRAY = "objects_array"
