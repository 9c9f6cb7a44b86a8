"""What the model is asked, and the answer it is taught: chat messages and the GT answer text.

The built-in prompts are coordexp's own wording of the legacy's content (reference rollout §1.5):
a system turn with the answer format and a user turn asking for every object, in the order
``custom.object_ordering`` names. A checkpoint trained with other prompts keeps working by setting
``custom.user_prompt`` / ``custom.user_prompt_file`` and ``custom.system_prompt`` /
``custom.system_prompt_file`` (the config loader resolves the files against the config file); an
empty ``system_prompt`` means no system turn at all.

Rollouts and the teacher-forced forward build their prompt from the same ``build_messages`` output,
so the prompt ids of both agree (reference §1.4, §6.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from PIL import Image

from coordexp.core.coordjson import Layout, serialize
from coordexp.core.tokens import TokenContext
from coordexp.data.records import ObjectOrdering, Sample, order_objects
from coordexp.errors import ConfigError, DataError

if TYPE_CHECKING:
    from coordexp.config.schema_root import CustomConfig

_USER = {
    "sorted": (
        "Find every object in this image and list them from top to bottom, and from left to right within a "
        "row. Give each one a short description and its box or outline in coordinate tokens."
    ),
    "random": (
        "Find every object in this image and list them in any order. Give each one a short description and "
        "its box or outline in coordinate tokens."
    ),
}

_KEYS = {
    Layout.OBJECT_N: "Key the entries object_1, object_2, ... in the order you list them, starting at 1.",
    Layout.OBJECTS_ARRAY: 'Put the entries, in the order you list them, in one list under the key "objects".',
}

_SYSTEM = """You are a visual detection assistant. Report what you see as one JSON object and nothing else.
- {keys}
- Each entry holds "desc", a short plain-English description, and exactly one geometry.
- "bbox_2d" is [x1, y1, x2, y2], the top-left and bottom-right corners, with x1 <= x2 and y1 <= y2.
- "poly" is one closed outline, a list of [x, y] points that starts at the highest point (the leftmost of equals) and runs clockwise.
- Coordinates are coordinate tokens on a 0-999 grid spanning the image, never plain numbers.
- Write the JSON on one line with one space after each colon and comma.
- If there is nothing to report, answer {{}}."""


CONFIG_READS = (
    "custom.user_prompt",
    "custom.user_prompt_file",
    "custom.system_prompt",
    "custom.system_prompt_file",
)

@attrs.frozen
class Prompts:
    """The texts of one run's prompt; ``system`` None means no system turn."""

    user: str
    system: str | None


def default_prompts(ordering: ObjectOrdering, *, layout: Layout = Layout.OBJECT_N) -> Prompts:
    """coordexp's built-in prompts for an object ordering and answer layout."""
    if ordering not in _USER:
        raise ConfigError(f"custom.object_ordering must be one of {sorted(_USER)}, got {ordering!r}")
    return Prompts(user=_USER[ordering], system=_SYSTEM.format(keys=_KEYS[layout]))


def resolve_prompts(custom: CustomConfig, *, layout: Layout = Layout.OBJECT_N) -> Prompts:
    """The run's prompts: the config's texts or files where set, the built-in ones elsewhere."""
    builtin = default_prompts(custom.object_ordering, layout=layout)
    user = _chosen("user_prompt", custom.user_prompt, custom.user_prompt_file)
    system = _chosen("system_prompt", custom.system_prompt, custom.system_prompt_file)
    if user is not None and not user.strip():
        raise ConfigError("custom.user_prompt is empty; remove it to use the built-in prompt, or write one")
    return Prompts(
        user=builtin.user if user is None else user,
        system=builtin.system if system is None else (system or None),
    )


def _chosen(key: str, text: str | None, file: str | None) -> str | None:
    """The text, or the file's content (config validation already refuses both at once)."""
    if file is None:
        return text
    try:
        return Path(file).read_text(encoding="utf-8").rstrip("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"custom.{key}_file: cannot read {file} ({exc}); give a UTF-8 text file (a relative path is taken from "
            "the config file's folder)"
        ) from exc


def build_messages(sample: Sample, images: Sequence[Image.Image], prompts: Prompts) -> list[dict[str, Any]]:
    """The chat turns of one sample: optional system turn, then the user turn (images first, then text).

    ``images`` are the decoded pixels (``coordexp.data.records.open_images``); the format is what
    ``coordexp.learn.encode.encode_prompt`` and the rollout backends take.
    """
    if len(images) != len(sample.images):
        raise DataError(
            f"sample {sample.sample_id}: build_messages got {len(images)} image(s) for a sample with "
            f"{len(sample.images)}; pass open_images(sample)"
        )
    content: list[dict[str, Any]] = [{"type": "image", "image": img} for img in images]
    content.append({"type": "text", "text": prompts.user})
    messages: list[dict[str, Any]] = []
    if prompts.system is not None:
        messages.append({"role": "system", "content": prompts.system})
    messages.append({"role": "user", "content": content})
    return messages


def gt_answer_text(
    sample: Sample,
    ordering: ObjectOrdering,
    *,
    layout: Layout = Layout.OBJECT_N,
    seed: int | None = None,
    epoch: int = 0,
) -> str:
    """The GT CoordJSON answer, objects in ``custom.object_ordering`` order (``{}`` without objects)."""
    return serialize(order_objects(sample, ordering, seed=seed, epoch=epoch), layout=layout)


def gt_answer_ids(
    sample: Sample,
    ordering: ObjectOrdering,
    *,
    ctx: TokenContext,
    layout: Layout = Layout.OBJECT_N,
    seed: int | None = None,
    epoch: int = 0,
) -> tuple[int, ...]:
    """The GT answer's token ids followed by the EOS ``<|im_end|>`` (the Channel-A / Stage-1 target)."""
    text = gt_answer_text(sample, ordering, layout=layout, seed=seed, epoch=epoch)
    return (*ctx.encode(text), ctx.im_end_id)
