"""Channel A's soft self-context: ``n_iter`` full forwards where coord inputs become the model's own belief.

Forward 0 is plain GT teacher forcing. Forward m >= 1 feeds, at every coord slot p, the expected coord
embedding under forward m-1's distribution at row p-1 (the row that predicts p), instead of the GT coord
token: ``e_p = softmax(z_coord / temperature) @ E_coord`` (reference AB 2.2). All slots are updated at once
from the previous forward (Jacobi style), so slot p's context comes from what the model believed one forward
earlier, and the coord losses of the last forward teach coordinates that hold up when the model conditions
on its own uncertain coordinates, as it does when it generates.

- CE comes from forward 0 (pure teacher forcing); coord-slot and geometry losses from the last forward.
- ``grad_mode``: ``unroll`` keeps every forward and every expected embedding in the graph (gradients cross
  iterations and slots); ``em_detach`` runs the middle forwards without grad and feeds the last forward
  detached embeddings, while forward 0 keeps its grad so the CE still trains (the legacy trainer ran
  forward 0 under ``no_grad`` too, and its CE had no gradient at all; reference AB 11).
- ``embed_mode``: ``soft`` feeds the expectation; ``st`` (straight-through) feeds the argmax bin's own
  embedding, exactly, with the expectation's gradient (``hard + soft - soft.detach()``).
- Every forward gets ``inputs_embeds`` only (no ``input_ids``): the embedding module's output on the
  teacher-forced ids, coord rows replaced. The model scatters the image features into the image-placeholder
  rows itself (it finds them because those rows are untouched placeholder embeddings), so image embeddings
  and the vision tower's work are exactly those of a plain forward. Without ``input_ids`` the model cannot
  derive positions, so every forward gets explicit 4-row ``position_ids`` (text row + 3 M-RoPE rows): a packed
  row already carries them; a padded batch gets them from the model's ``get_rope_index`` and its mask.
- Works on packed rows: slots are (row, position) pairs of the batch, and the segment bounds reach the
  attention exactly as in a plain forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import attrs
import torch

from coordexp.errors import LossError
from coordexp.learn.coord_targets import coord_logits
from coordexp.learn.model import unwrap
from coordexp.learn.packed import TrainBatch

GradMode = Literal["unroll", "em_detach"]
EmbedMode = Literal["soft", "st"]


@attrs.frozen
class SoftContextConfig:
    """``custom.extra.stage2_ab`` soft self-context knobs (defaults live in the schema)."""

    n_iter: int  # n_softctx_iter: full forwards, >= 1 (1 = plain teacher forcing)
    grad_mode: GradMode  # softctx_grad_mode
    temperature: float  # softctx_temperature (> 0)
    embed_mode: EmbedMode  # coord_ctx_embed_mode

    def __attrs_post_init__(self) -> None:
        problems = []
        if self.n_iter < 1:
            problems.append(f"n_softctx_iter must be >= 1, got {self.n_iter}")
        if self.grad_mode not in ("unroll", "em_detach"):
            problems.append(f"softctx_grad_mode must be unroll or em_detach, got {self.grad_mode!r}")
        if not self.temperature > 0:
            problems.append(f"softctx_temperature must be > 0, got {self.temperature}")
        if self.embed_mode not in ("soft", "st"):
            problems.append(f"coord_ctx_embed_mode must be soft or st, got {self.embed_mode!r}")
        if problems:
            raise LossError("; ".join(problems))

    @property
    def iterates(self) -> bool:
        return self.n_iter > 1


class SoftContextLogits(NamedTuple):
    """What the losses read: forward 0's compact rows (CE) and the last forward's rows at the coord slots."""

    first: torch.Tensor  # [K, V]: rows of ``keep`` in row-major order (as ``logits_to_keep`` returns them)
    slots: torch.Tensor  # [S, V]: row predicting each coord slot, in the batch's slot order


def checked_rows(out: Any, keep: torch.Tensor) -> torch.Tensor:
    """The logits of a ``logits_to_keep=keep`` forward, refused unless there is one row per kept position.

    A model (or a wrapper) that slices the logits differently would shift every label by some rows and
    train on the wrong targets without any error; a cache in the output means the forward ran with one,
    under which the segments of a packed row attend to each other.
    """
    if getattr(out, "cache", None) is not None:  # transformers 5 names past_key_values ``cache``
        raise LossError("the model returned a cache (past_key_values): the learner's forwards must run with "
                        "use_cache=False")
    rows = out.logits
    kept = int(keep.sum())
    if rows.dim() != 2 or rows.shape[0] != kept:
        raise LossError(
            f"sliced logits: the model returned logits of shape {tuple(rows.shape)} for {kept} kept positions "
            "(logits_to_keep is a [B, L] boolean mask and must give one row per True); a model or wrapper that "
            "drops or shifts rows would misalign every label. Use a transformers model whose forward honours "
            "logits_to_keep (Qwen3-VL / Qwen2.5-VL in transformers >= 5)"
        )
    return rows


def compact_rows(keep: torch.Tensor, batch_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Index of ``(batch_index, positions)`` among the True entries of ``keep`` in row-major order."""
    row_of = keep.flatten().cumsum(0).view_as(keep) - 1
    return row_of[batch_index, positions]


def position_ids(model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
    """[4, B, L] position ids (text row, then M-RoPE t/h/w) for a forward given ``inputs_embeds`` only."""
    inputs = batch.inputs
    pos = inputs.get("position_ids")
    if "attention_mask" not in inputs:  # a padding-free packed row
        if pos is None or pos.dim() != 3 or pos.shape[0] != 4:
            shape = None if pos is None else tuple(pos.shape)
            raise LossError(
                f"packing enabled but the packed row has no 4-row position_ids (got {shape}): a Qwen-VL forward on "
                "inputs_embeds cannot derive M-RoPE positions, and without per-segment text positions the segments "
                "would attend to each other. Build packed rows with coordexp.learn.packed.pack_segments"
            )
        return pos
    if pos is not None:
        return pos
    mask = inputs["attention_mask"]
    with torch.no_grad():
        mrope, _ = unwrap(model).model.get_rope_index(
            inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"), attention_mask=mask,
        )
    text = (mask.long().cumsum(-1) - 1).clamp_min(0)
    return torch.cat([text[None].to(mrope.dtype), mrope.to(mask.device)])


def expected_embeddings(
    rows: torch.Tensor, coord_ids: torch.Tensor, table: torch.Tensor, cfg: SoftContextConfig
) -> torch.Tensor:
    """[S, V] logits rows -> [S, H] context embeddings (float32, outside autocast: a 1000-way softmax and its
    weighted sum of embeddings lose too much in bfloat16)."""
    with torch.autocast(device_type=rows.device.type, enabled=False):
        probs = torch.softmax(coord_logits(rows, coord_ids) / cfg.temperature, -1)
        table = table.float()
        soft = probs @ table
        if cfg.embed_mode == "soft":
            return soft
        hard = table[probs.argmax(-1)].detach()
        return hard + (soft - soft.detach())


def _forward(
    model: torch.nn.Module, embeds: torch.Tensor, batch: TrainBatch, pos: torch.Tensor, keep: torch.Tensor,
    attention: Mapping[str, Any],
) -> torch.Tensor:
    inputs = {k: v for k, v in batch.inputs.items() if k not in ("input_ids", "position_ids")}
    out = model(inputs_embeds=embeds, position_ids=pos, **inputs, **attention, logits_to_keep=keep, use_cache=False)
    return checked_rows(out, keep)


def soft_context_logits(
    model: torch.nn.Module,
    batch: TrainBatch,
    *,
    keep: torch.Tensor,
    coord_ids: torch.Tensor,
    cfg: SoftContextConfig,
    attention: Mapping[str, Any],
) -> SoftContextLogits:
    """Run the ``cfg.n_iter`` forwards of ``batch`` (see the module docstring).

    ``keep`` is forward 0's row mask (CE rows and coord-predicting rows); later forwards keep only the rows
    that predict a coord slot, the only rows they are read at.
    """
    embed = unwrap(model).get_input_embeddings()
    # Under DDP only the last forward goes through the wrapper: one forward per backward prepares its gradient
    # all-reduce, and the gradients of the earlier forwards reach the same parameters within that one backward.
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    b, p = batch.coord_batch_index, batch.coord_positions
    pos = position_ids(model, batch)
    base = embed(batch.inputs["input_ids"])
    table = embed(coord_ids)  # the module is called (its hooks apply), never indexed through .weight
    first = _forward(inner, base, batch, pos, keep, attention)
    slots = first[compact_rows(keep, b, p - 1)]
    if not p.numel():  # no coord slot (samples without objects): nothing to feed back, forward 0 is the answer
        return SoftContextLogits(first, slots)
    slot_keep = torch.zeros_like(keep)
    slot_keep[b, p - 1] = True
    slot_rows = compact_rows(slot_keep, b, p - 1)
    detach = cfg.grad_mode == "em_detach"
    for m in range(1, cfg.n_iter):
        with_grad = torch.is_grad_enabled() and (m == cfg.n_iter - 1 or not detach)
        with torch.set_grad_enabled(with_grad):
            ctx = expected_embeddings(slots.detach() if detach else slots, coord_ids,
                                      table.detach() if detach else table, cfg)
            embeds = base.index_put((b, p), ctx.to(base.dtype))
            slots = _forward(model if m == cfg.n_iter - 1 else inner, embeds, batch, pos, slot_keep, attention)[slot_rows]
    return SoftContextLogits(first, slots)
