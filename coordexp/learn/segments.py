"""From a core ``TrainTarget`` (pure, tuples) to the tensor ``Segment`` the packer and the learner take.

The prompt part is the rollout's own prompt encoding, reused as is: the image is processed once per
sample and the prompt ids the learner trains on are exactly the ids the rollout backend generated from
(reference rollout 6.3). ``Y_train`` follows verbatim; its labels, CE weights and coord slots are the
target's, shifted by the prompt length.
"""

from __future__ import annotations

import torch

from coordexp.core.box_slots import box_slot_groups
from coordexp.core.keys import Layout
from coordexp.core.target_records import TrainTarget
from coordexp.core.tokens import TokenContext
from coordexp.learn.encode import Encoding, box_slots_tensor, with_answer
from coordexp.learn.losses import IGNORE_INDEX
from coordexp.learn.packed import Segment


def target_segment(
    prompt: Encoding, target: TrainTarget, *, key: str, ctx: TokenContext | None = None, layout: Layout = Layout.OBJECT_N
) -> Segment:
    """The Segment of ``prompt`` + ``target.y_train_ids`` with the target's supervision.

    With ``ctx`` the target's boxes (matched prefix and FN objects whose 4 coord tokens are coord slots,
    ``core.box_slots``) go with it, for the geometry losses; without it the segment has none.
    """
    enc = with_answer(prompt, target.y_train_ids)
    n_prompt = prompt.prompt_len
    labels = torch.tensor(target.labels, dtype=torch.long)  # core's IGNORE is the torch ignore index
    weights = torch.tensor(target.ce_weights, dtype=torch.float32)
    return Segment(
        key=key,
        input_ids=enc.input_ids,
        mm_token_type_ids=enc.mm_token_type_ids,
        pixel_values=enc.pixel_values,
        image_grid_thw=enc.image_grid_thw,
        labels=torch.cat([torch.full((n_prompt,), IGNORE_INDEX, dtype=torch.long), labels]),
        ce_weights=torch.cat([torch.zeros(n_prompt), weights]),
        coord_positions=torch.tensor([n_prompt + p for p in target.coord_positions], dtype=torch.long),
        coord_bins=torch.tensor(target.coord_target_bins, dtype=torch.long),
        coord_is_prefix=torch.tensor(target.coord_is_prefix, dtype=torch.bool),
        coord_weights=torch.ones(len(target.coord_positions)),
        box_slots=box_slots_tensor(
            box_slot_groups(target.y_train_ids, target.coord_positions, ctx=ctx, layout=layout, sample_id=key)
            if ctx is not None else ()
        ),
    )
