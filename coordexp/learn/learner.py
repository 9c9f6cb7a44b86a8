"""The Learn state: one optimizer step over every pack of the step.

Normalisation follows the contract in ``coordexp.learn.losses``: the step's total CE weight and coord
weight are summed over ALL its packs before the first forward, and every pack backpropagates
``ce_sum / W_ce + coord_sum / W_coord``. The step objective is then the token-weighted mean over the
whole step, whatever the number or fill of its packs (fixing the per-pack means of reference rollout
15.1 W18).

Distributed: when the model is wrapped in ``DistributedDataParallel`` the step weights are summed over
ranks (one all-reduce of two scalars) and every pack's loss is multiplied by the world size, so DDP's
gradient averaging yields the global token mean; every pack but the last runs under
``model.no_sync()`` so gradients are all-reduced once per step. Every rank must call ``step`` with
at least one pack (a rank without segments would leave the others waiting in the all-reduce). In a
single process none of this applies and the code paths reduce to plain backward calls.

Logits are computed only for rows that a loss reads (``logits_to_keep`` as a boolean mask): prompt and
image tokens, most of a long pack, never go through the vocabulary projection. The kept rows are
laid out as a compact sequence (row i predicts compact position i + 1), so the loss functions of
``losses.py`` apply unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import attrs
import torch
import torch.distributed as dist

from coordexp.config.schema_training import TrainingConfig
from coordexp.errors import ConfigError, PackingError
from coordexp.learn.attention import check_attention, packed_forward_kwargs
from coordexp.learn.losses import (
    IGNORE_INDEX,
    LOSS_CE,
    LOSS_COORD,
    LOSS_COORD_PREFIX,
    LOSS_COORD_TAIL,
    CoordLossConfig,
    coord_slot_losses,
    token_ce,
)
from coordexp.learn.model import unwrap
from coordexp.learn.optim import build_optimizer, build_scheduler
from coordexp.learn.packed import TrainBatch
from coordexp.learn.tuner import trainable_parameters, upcast_trainable

# Config keys this module reads (checked by the key-reach test, coordexp.bind.reach).
CONFIG_READS = (
    "training.bf16",
    "training.gradient_checkpointing",
    "training.max_grad_norm",
)


class LossSums(NamedTuple):
    """One batch's loss sums and weights (0-dim float32; the ``*_sum`` of ``ce``/``coord`` carry grad)."""

    ce_sum: torch.Tensor
    ce_weight: torch.Tensor
    coord_sum: torch.Tensor
    coord_weight: torch.Tensor
    prefix_sum: torch.Tensor
    prefix_weight: torch.Tensor
    tail_sum: torch.Tensor
    tail_weight: torch.Tensor


def _compact(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows to keep [B, L] and, in compact numbering, CE labels/weights [K + 1] and coord positions."""
    ce_mask = batch.ce_mask()
    keep = torch.zeros_like(ce_mask)
    keep[:, :-1] = ce_mask[:, 1:]
    keep[batch.coord_batch_index, batch.coord_positions - 1] = True
    row_of = keep.flatten().cumsum(0).view_as(keep) - 1  # compact row of each kept (b, t)
    n_rows = int(keep.sum())
    ce_b, ce_p = ce_mask.nonzero(as_tuple=True)
    ce_pos = row_of[ce_b, ce_p - 1] + 1
    labels = torch.full((n_rows + 1,), IGNORE_INDEX, dtype=torch.long, device=keep.device)
    weights = torch.zeros(n_rows + 1, dtype=torch.float32, device=keep.device)
    labels[ce_pos] = batch.labels[ce_b, ce_p].long()
    weights[ce_pos] = batch.ce_weights[ce_b, ce_p].float()
    coord_pos = row_of[batch.coord_batch_index, batch.coord_positions - 1] + 1
    return keep, labels, weights, coord_pos


def _attention_kwargs(model: torch.nn.Module, batch: TrainBatch) -> dict:
    """Segment bounds for a packed row (padded batches carry an attention mask instead)."""
    if "attention_mask" in batch.inputs:
        return {}
    return packed_forward_kwargs(model, batch.cu_seqlens, device=batch.inputs["input_ids"].device)


def forward_loss_sums(
    model: torch.nn.Module, batch: TrainBatch, *, coord_ids: torch.Tensor, coord_cfg: CoordLossConfig
) -> LossSums:
    """Forward ``batch`` and return its loss sums (see the module docstring for the compact rows)."""
    keep, labels, weights, coord_pos = _compact(batch)
    out = model(**batch.inputs, **_attention_kwargs(model, batch), logits_to_keep=keep, use_cache=False)
    rows = out.logits  # [K, V]
    logits = torch.cat([rows, rows.new_zeros(1, rows.shape[-1])])  # +1 placeholder: never read
    ce = token_ce(logits, labels, weights)
    slots = coord_slot_losses(logits, coord_pos, batch.coord_bins, coord_ids, cfg=coord_cfg)
    w = batch.coord_weights.float()
    prefix_w = torch.where(batch.coord_is_prefix, w, torch.zeros_like(w))
    tail_w = w - prefix_w
    return LossSums(
        ce_sum=ce.total,
        ce_weight=ce.weight,
        coord_sum=(w * slots.loss).sum(),
        coord_weight=w.sum(),
        prefix_sum=(prefix_w * slots.loss).sum().detach(),
        prefix_weight=prefix_w.sum(),
        tail_sum=(tail_w * slots.loss).sum().detach(),
        tail_weight=tail_w.sum(),
    )


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def step_weights(packs: Sequence[TrainBatch]) -> tuple[float, float]:
    """This process's total CE and coord weights over one optimizer step's packs."""
    return sum(p.ce_weight() for p in packs), sum(p.coord_weight() for p in packs)


def pack_loss(sums: LossSums, w_ce: float, w_coord: float, scale: float = 1.0) -> torch.Tensor:
    """One pack's share of the step loss: its sums over the step's total weights (losses.py contract)."""
    return sums.ce_sum * _ratio(scale, w_ce) + sums.coord_sum * _ratio(scale, w_coord)


def backward_packs(
    model: torch.nn.Module, packs: Sequence[TrainBatch], *, coord_ids: torch.Tensor, coord_cfg: CoordLossConfig
) -> float:
    """Single-process forward/backward of one step's packs (gradients zeroed first); returns the step loss.

    The same normalisation as ``Learner.step`` without the optimizer, DDP or autocast, so benchmarks and
    equivalence tests measure exactly what training computes.
    """
    w_ce, w_coord = step_weights(packs)
    model.zero_grad(set_to_none=True)
    total = 0.0
    for pack in packs:
        loss = pack_loss(forward_loss_sums(model, pack, coord_ids=coord_ids, coord_cfg=coord_cfg), w_ce, w_coord)
        loss.backward()
        total += float(loss.detach())
    return total


@attrs.frozen
class StepStats:
    """What one optimizer step did (rank-local values)."""

    loss: float  # ce + coord
    ce: float  # token-weighted CE mean over the step
    coord: float  # weighted coord-slot mean over the step
    coord_prefix: float  # mean over prefix slots (0 if none)
    coord_tail: float  # mean over tail slots (0 if none)
    grad_norm: float  # before clipping
    lr: float  # learning rate of the first parameter group during this step
    n_packs: int
    n_segments: int
    ce_tokens: int
    coord_slots: int

    @property
    def supervised_tokens(self) -> int:
        return self.ce_tokens + self.coord_slots

    def metrics(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            LOSS_CE: self.ce,
            LOSS_COORD: self.coord,
            LOSS_COORD_PREFIX: self.coord_prefix,
            LOSS_COORD_TAIL: self.coord_tail,
            "grad_norm": self.grad_norm,
            "learning_rate": self.lr,
            "learn/packs": float(self.n_packs),
            "learn/segments": float(self.n_segments),
            "learn/supervised_tokens": float(self.supervised_tokens),
        }


def _is_ddp(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def _enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing, under the name this transformers version uses.

    transformers 5.23 renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``
    and made the old name warn; older releases only have the old one.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _fp32_master_weights(model: torch.nn.Module, training: TrainingConfig) -> int:
    """Make every trainable parameter float32 (returns how many were cast); frozen ones keep their dtype.

    AdamW updates a parameter in its own dtype. On bf16 weights an update below half a bf16 ulp (a
    relative 2^-9, so most late-training steps at lr 1e-5) rounds back to the old value and is lost,
    and the moment estimates are bf16 too. With fp32 trainable weights (the master copy) and fp32
    optimizer state, ``training.bf16`` autocast still computes in bf16: weights are cast per op,
    gradients flow back to the fp32 parameters. LoRA adapters are trainable, so they stay fp32 on a
    bf16 base. Without autocast a low-precision trainable weight is refused: there is nothing to
    compute in bf16 for, and the updates would be lost.
    """
    low = [(n, p.dtype) for n, p in trainable_parameters(model) if p.dtype != torch.float32]
    if not low:
        return 0
    name, dtype = low[0]
    if not training.bf16:
        raise ConfigError(
            f"training.bf16 is false but {len(low)} trainable parameters are {dtype} (e.g. {name}): AdamW would "
            "update them in low precision and drop every step below its resolution; set training.bf16: true "
            "(bf16 autocast over fp32 trainable weights) or model.torch_dtype: float32"
        )
    if _is_ddp(model):
        raise ConfigError(
            f"{len(low)} trainable parameters are {dtype} (e.g. {name}) under DistributedDataParallel: call "
            "coordexp.learn.tuner.upcast_trainable(model) before wrapping, so DDP's buckets hold the fp32 weights"
        )
    return upcast_trainable(model)


class Learner:
    """Owns the model, AdamW and the schedule; ``step(packs)`` is one optimizer step."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        training: TrainingConfig,
        coord_cfg: CoordLossConfig,
        coord_ids: Sequence[int],
        total_steps: int,
    ) -> None:
        self.model = model
        self.training = training
        self.coord_cfg = coord_cfg
        self.device = next(model.parameters()).device
        self.coord_ids = torch.tensor(list(coord_ids), dtype=torch.long, device=self.device)
        if training.gradient_checkpointing:
            _enable_activation_checkpointing(unwrap(model))
        self.upcast_params = _fp32_master_weights(model, training)
        self.attention_kernel = check_attention(model, self.device, torch.bfloat16 if training.bf16 else None)
        self.params = [p for _, p in trainable_parameters(model)]
        self.optimizer = build_optimizer(model, training)
        self.scheduler = build_scheduler(self.optimizer, training, total_steps)
        self.global_step = 0

    def _step_weights(self, packs: Sequence[TrainBatch]) -> tuple[float, float, float]:
        """(W_ce, W_coord, loss scale): global weights under DDP, known before any forward."""
        local = torch.tensor(step_weights(packs))
        if not (_is_ddp(self.model) and dist.is_initialized()):
            return float(local[0]), float(local[1]), 1.0
        weights = local.to(self.device, torch.float64)
        dist.all_reduce(weights, op=dist.ReduceOp.SUM)
        return float(weights[0]), float(weights[1]), float(dist.get_world_size())

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        if last or not _is_ddp(self.model):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.training.bf16)

    def _run_pack(self, pack: TrainBatch, w_ce: float, w_coord: float, scale: float, last: bool) -> LossSums:
        with self._sync(last):
            with self._autocast():
                sums = forward_loss_sums(self.model, pack.to(self.device), coord_ids=self.coord_ids, coord_cfg=self.coord_cfg)
            pack_loss(sums, w_ce, w_coord, scale).backward()
        return sums

    def step(self, packs: Sequence[TrainBatch]) -> StepStats:
        """Forward/backward every pack, clip, one optimizer step, advance the schedule."""
        if not packs:
            raise PackingError("an optimizer step needs at least one pack (every rank must take part)")
        self.model.train()
        w_ce, w_coord, scale = self._step_weights(packs)
        totals = torch.zeros(8, dtype=torch.float64)
        for i, pack in enumerate(packs):
            sums = self._run_pack(pack, w_ce, w_coord, scale, last=i == len(packs) - 1)
            totals += torch.stack([t.detach().double().cpu() for t in sums])
        totals = self._global_totals(totals)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.training.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return self._stats(totals, float(grad_norm), lr, packs)

    def _global_totals(self, totals: torch.Tensor) -> torch.Tensor:
        """Under DDP, the loss sums of every rank: the logged step loss is the global token mean, the
        same number a single process computes over the same samples."""
        if not (_is_ddp(self.model) and dist.is_initialized()):
            return totals
        summed = totals.to(self.device)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed.cpu()

    def _stats(self, t: torch.Tensor, grad_norm: float, lr: float, packs: Sequence[TrainBatch]) -> StepStats:
        s = LossSums(*(float(x) for x in t))
        ce, coord = _ratio(s.ce_sum, s.ce_weight), _ratio(s.coord_sum, s.coord_weight)
        return StepStats(
            loss=ce + coord,
            ce=ce,
            coord=coord,
            coord_prefix=_ratio(s.prefix_sum, s.prefix_weight),
            coord_tail=_ratio(s.tail_sum, s.tail_weight),
            grad_norm=grad_norm,
            lr=lr,
            n_packs=len(packs),
            n_segments=sum(p.n_segments for p in packs),
            ce_tokens=sum(int(p.ce_mask().sum()) for p in packs),
            coord_slots=sum(p.coord_positions.numel() for p in packs),
        )
