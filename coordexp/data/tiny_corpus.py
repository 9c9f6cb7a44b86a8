"""The deterministic training text for the tiny fixture tokenizer.

The tiny BPE must tokenize CoordJSON the way the real Qwen tokenizer does in the places that matter to
the parser: closing punctuation after a coord token fuses (``"]``, ``"]}``, ``"]},``, ``"]}}``), as do
brace runs such as ``}}`` and ``},``; keys and descs split into a few word pieces. So the corpus is
CoordJSON answers in both layouts, append-ready rollout prefixes, JSONL data records and prompt-like English, generated from a fixed
seed so that a rebuild is byte-identical.

Coord tokens are added tokens in the final tokenizer, so the text between them is what BPE ever sees;
``training_segments`` cuts each line at the coord tokens exactly as added-token splitting will.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator

SEED = 20260115
NUM_ANSWERS = 1500
NUM_RECORDS = 300
NUM_PREFIXES = 300

# Category names in the style of LVIS / COCO labels (multi-word, some with parentheses or hyphens).
# fmt: off
DESCS = (
    "person", "dog", "cat", "dog bed", "car", "traffic light", "bicycle", "chair", "dining table",
    "potted plant", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange (fruit)", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "couch",
    "bed", "toilet", "television set", "laptop computer", "mouse (computer equipment)", "remote control",
    "keyboard", "cellular telephone", "microwave oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "yellow box", "tool cabinet",
    "street sign", "baseball cap", "t-shirt", "jacket", "handbag", "backpack", "umbrella", "necktie",
    "suitcase", "frisbee", "skateboard", "surfboard", "tennis racket", "kite", "bench", "pigeon",
    "horse", "sheep", "cow", "elephant", "zebra", "giraffe", "window", "door", "lamp", "pillow",
    "curtain", "shelf", "painting", "flower arrangement", "license plate", "wheel", "headlight",
    "say \"hi\" sign", "café sign", "crème brûlée",
)
# fmt: on

SENTENCES = (
    "Detect every object in the image and list them from top to bottom, then left to right.",
    "Return one JSON object whose entries each hold a desc and exactly one geometry.",
    "Write coordinates only as coord tokens between 0 and 999.",
    "Use bbox_2d for boxes as [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2.",
    "A poly is one closed polygon given as a list of [x, y] vertices, clockwise from the top-most vertex.",
    "Keep the answer on a single line with one space after every colon and comma.",
    "Number the objects from object_1 upwards; if there is nothing to detect, answer {}.",
    "You are a careful detection and grounding assistant.",
    "Describe each object in plain English, in a few words.",
    "Output nothing except the JSON object.",
)


def _coord(rng: random.Random) -> str:
    return f"<|coord_{rng.randrange(1000)}|>"


def _geometry(rng: random.Random) -> tuple[str, list]:
    """A bbox (most objects, as in the data) or a polygon of 3..8 vertices."""
    if rng.random() < 0.75:
        return "bbox_2d", [_coord(rng) for _ in range(4)]
    return "poly", [[_coord(rng), _coord(rng)] for _ in range(rng.randint(3, 8))]


def _objects(rng: random.Random) -> list[dict]:
    n = rng.choice((0, 1, 2, 3, 4, 6, 9, 12, 15, 24))
    out = []
    for _ in range(n):
        key, value = _geometry(rng)
        out.append({"desc": rng.choice(DESCS), key: value})
    return out


def _dumps(payload: object) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(", ", ": "))


def answer_lines(seed: int = SEED, count: int = NUM_ANSWERS) -> Iterator[str]:
    """CoordJSON answers, alternating the ``object_N`` and ``{"objects": [...]}`` layouts."""
    rng = random.Random(seed)
    for i in range(count):
        objs = _objects(rng)
        if i % 3 == 2:
            yield _dumps({"objects": objs})
        else:
            yield _dumps({f"object_{n}": o for n, o in enumerate(objs, start=1)})


def prefix_lines(seed: int = SEED + 2, count: int = NUM_PREFIXES) -> Iterator[str]:
    """Append-ready rollout prefixes: an answer cut right after an object entry (ends ``"]}``)."""
    rng = random.Random(seed)
    for _ in range(count):
        objs = _objects(rng) or [{"desc": rng.choice(DESCS), "bbox_2d": [_coord(rng)] * 4}]
        keep = rng.randint(1, len(objs))
        text = _dumps({f"object_{n}": o for n, o in enumerate(objs[:keep], start=1)})
        yield text[:-1]


def record_lines(seed: int = SEED + 1, count: int = NUM_RECORDS) -> Iterator[str]:
    """JSONL data records with integer coordinates; their nested ``metadata`` closes with ``}}``."""
    rng = random.Random(seed)
    for i in range(count):
        objs = [
            {"bbox_2d": [rng.randrange(1000) for _ in range(4)], "desc": rng.choice(DESCS)}
            for _ in range(rng.randint(0, 4))
        ]
        record = {
            "images": [f"images/{i:06d}.jpg"],
            "objects": objs,
            "width": rng.choice((480, 512, 640, 768, 1024)),
            "height": rng.choice((360, 480, 512, 600, 768)),
            "metadata": {"dataset": rng.choice(("lvis", "coco", "refcoco")), "id": rng.randrange(100000)},
        }
        yield _dumps(record)


def corpus_lines(seed: int = SEED, count: int = NUM_ANSWERS) -> Iterator[str]:
    """Every training line: answers and data records, with a prompt sentence after every tenth answer."""
    for i, line in enumerate(answer_lines(seed, count)):
        yield line
        if i % 10 == 0:
            yield SENTENCES[(i // 10) % len(SENTENCES)]
    yield from prefix_lines()
    yield from record_lines()


_COORD_SPLIT = re.compile(r"<\|coord_\d+\|>")


def training_segments(lines: Iterator[str]) -> Iterator[str]:
    """Cut lines at coord tokens (they never reach BPE once they are added tokens)."""
    for line in lines:
        for seg in _COORD_SPLIT.split(line):
            if seg:
                yield seg
