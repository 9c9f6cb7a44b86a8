"""GT-supervised ``Segment``s of the tiny synthetic samples, for tests and benchmarks of the learn side.

The samples themselves (images and GT objects) are data (``coordexp.data.tiny``); turning them into
supervised segments is learn's, so this lives here and ``coordexp.data`` never imports ``learn``.
"""

from __future__ import annotations

from typing import Any

from coordexp.core.coordjson import serialize
from coordexp.core.tokens import TokenContext
from coordexp.data.tiny import PROMPT, tiny_samples
from coordexp.data.tiny_tokenizer import IM_END
from coordexp.errors import TokenizerError
from coordexp.learn.encode import encode_teacher_forced, gt_segment
from coordexp.learn.model import coord_token_ids
from coordexp.learn.packed import Segment


def tiny_segments(
    processor: Any, n: int, *, seed: int, prefix_len: int = 0, max_objects: int = 4, boxes: bool = False
) -> list[Segment]:
    """``n`` GT-supervised segments (see ``coordexp.learn.encode``) of ``tiny_samples(n, seed=seed)``.

    ``prefix_len`` answer tokens of every segment play a matched rollout prefix (prefix coord slots,
    no CE), so both coord groups are exercised. ``max_objects`` bounds the objects per answer (about
    28 tokens each), i.e. how long segments get. ``boxes`` marks each answer's bbox objects as the segment's
    boxes, for the AB geometry losses.
    """
    tok = processor.tokenizer
    coord_ids = coord_token_ids(tok)
    if coord_ids is None:
        raise TokenizerError("tiny_segments needs a tokenizer with the coord vocabulary")
    id_to_bin = {i: k for k, i in enumerate(coord_ids)}
    eos = tok.convert_tokens_to_ids(IM_END)
    ctx = TokenContext.from_hf(tok, name="tiny") if boxes else None
    segments = []
    for j, (img, objects) in enumerate(tiny_samples(n, seed=seed, max_objects=max_objects)):
        messages = [
            {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": PROMPT}]}
        ]
        y_ids = tok.encode(serialize(objects), add_special_tokens=False) + [eos]
        enc = encode_teacher_forced(processor, messages, y_ids)
        segments.append(
            gt_segment(enc, coord_id_to_bin=id_to_bin, key=f"tiny-{seed}-{j}", prefix_len=prefix_len, ctx=ctx)
        )
    return segments
