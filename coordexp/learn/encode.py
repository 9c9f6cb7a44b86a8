"""Teacher-forced encodings: chat prompt + image(s) through the processor, then answer ids verbatim.

The answer (``Y_train``: rollout prefix + appended FN objects + EOS, or a GT answer) is a list of
token ids and is appended as is, never re-tokenized from text (reference rollout 6.3): a coord token
or a fused piece that the model produced stays exactly the id it was. The prompt is the chat template
rendered with ``add_generation_prompt=True``, so the prompt ids equal what a rollout backend fed the
model, and ``prompt_len`` marks where supervision may start.

``gt_segment`` supervises a whole answer the Channel-A way (every non-coord answer token gets CE,
every coord token a coord slot with its own bin); Stage-2 targets built by the core target builder
carry their own label arrays and go to ``Segment`` directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from coordexp.core.box_slots import box_slot_groups
from coordexp.core.keys import Layout
from coordexp.core.tokens import TokenContext
from coordexp.errors import TargetError
from coordexp.learn.losses import IGNORE_INDEX
from coordexp.learn.packed import Segment


@attrs.frozen(eq=False)
class Encoding:
    """One sample's model inputs (1-D, unbatched)."""

    input_ids: torch.Tensor  # [T] long
    mm_token_type_ids: torch.Tensor  # [T]
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None  # [n_images, 3]
    prompt_len: int  # tokens; [0, prompt_len) is the prompt


def _images(messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Images of ``{"type": "image", "image": PIL}`` parts, in the order the template renders them."""
    found = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            continue
        for part in content:
            if part.get("type") == "image":
                if "image" not in part:
                    raise TargetError("an image content part has no `image` (a PIL image) to encode")
                found.append(part["image"])
    return found


def encode_prompt(processor: Any, messages: Sequence[Mapping[str, Any]]) -> Encoding:
    """The prompt (messages + opened assistant turn) as the model sees it at rollout time.

    A trailing assistant message is dropped: its content is what the answer ids replace.
    """
    turns = list(messages)
    if turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    text = processor.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    images = _images(turns)
    enc = processor(text=[text], images=images or None, return_tensors="pt")
    ids = enc["input_ids"][0]
    return Encoding(
        input_ids=ids,
        mm_token_type_ids=enc["mm_token_type_ids"][0],
        pixel_values=enc.get("pixel_values"),
        image_grid_thw=enc.get("image_grid_thw"),
        prompt_len=ids.numel(),
    )


def with_answer(prompt: Encoding, y_ids: Sequence[int]) -> Encoding:
    """``prompt`` (an ``encode_prompt`` result) followed by ``y_ids`` verbatim, as text tokens.

    The prompt's image encoding is reused as is, so a rollout's prompt is processed once per sample.
    """
    if not y_ids:
        raise TargetError("teacher-forced encode got no answer ids (Y_train is empty)")
    if prompt.prompt_len != prompt.input_ids.numel():
        raise TargetError("with_answer takes a prompt encoding, this one already holds answer tokens")
    answer = torch.tensor(list(y_ids), dtype=prompt.input_ids.dtype)
    return attrs.evolve(
        prompt,
        input_ids=torch.cat([prompt.input_ids, answer]),
        mm_token_type_ids=torch.cat([prompt.mm_token_type_ids, torch.zeros_like(answer, dtype=prompt.mm_token_type_ids.dtype)]),
    )


def encode_teacher_forced(processor: Any, messages: Sequence[Mapping[str, Any]], y_ids: Sequence[int]) -> Encoding:
    """Prompt ids + ``y_ids`` verbatim (``y_ids`` should end with the EOS ``<|im_end|>``)."""
    return with_answer(encode_prompt(processor, messages), y_ids)


def gt_segment(
    enc: Encoding,
    *,
    coord_id_to_bin: Mapping[int, int],
    key: str,
    prefix_len: int = 0,
    ctx: TokenContext | None = None,
    layout: Layout = Layout.OBJECT_N,
) -> Segment:
    """Supervise the whole answer of ``enc``.

    Answer tokens in ``[prompt_len, prompt_len + prefix_len)`` play the matched rollout prefix: their
    coord tokens are prefix coord slots and their text gets no CE. After that, text tokens get CE and
    coord tokens tail coord slots, each targeting its own bin. With ``ctx`` (the tokenizer context) the
    answer's bbox objects also become the segment's boxes for the geometry losses (``core.box_slots``);
    without it the segment has none.
    """
    ids = enc.input_ids
    n = ids.numel()
    if enc.prompt_len >= n:
        raise TargetError(f"segment {key!r}: teacher-forced encode produced no answer span")
    labels = torch.full_like(ids, IGNORE_INDEX)
    positions, bins, prefix = [], [], []
    for p in range(enc.prompt_len, n):
        tok = int(ids[p])
        in_prefix = p < enc.prompt_len + prefix_len
        if tok in coord_id_to_bin:
            positions.append(p)
            bins.append(coord_id_to_bin[tok])
            prefix.append(in_prefix)
        elif not in_prefix:
            labels[p] = tok
    return Segment(
        key=key,
        input_ids=ids,
        mm_token_type_ids=enc.mm_token_type_ids,
        pixel_values=enc.pixel_values,
        image_grid_thw=enc.image_grid_thw,
        labels=labels,
        ce_weights=(labels != IGNORE_INDEX).float(),
        coord_positions=torch.tensor(positions, dtype=torch.long),
        coord_bins=torch.tensor(bins, dtype=torch.long),
        coord_is_prefix=torch.tensor(prefix, dtype=torch.bool),
        coord_weights=torch.ones(len(positions)),
        box_slots=_boxes(ids[enc.prompt_len:], [p - enc.prompt_len for p in positions], ctx, layout, key),
    )


def _boxes(answer: torch.Tensor, slots: list[int], ctx: TokenContext | None, layout: Layout, key: str) -> torch.Tensor:
    if ctx is None:
        return torch.zeros((0, 4), dtype=torch.long)
    return box_slots_tensor(box_slot_groups(answer.tolist(), slots, ctx=ctx, layout=layout, sample_id=key))


def box_slots_tensor(groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """``core.box_slots`` groups as the [G, 4] long tensor a ``Segment`` carries."""
    return torch.tensor([list(g) for g in groups], dtype=torch.long).reshape(-1, 4)
