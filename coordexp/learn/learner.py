"""The Learn state: one optimizer step over every pack of the step.

Normalisation follows the contract in ``coordexp.learn.losses``: the step's total CE weight, coord weight
and box count are summed over ALL its packs before the first forward, and every pack backpropagates
``ce_sum / W_ce + coord_sum / W_coord + box_sum / W_box`` (the one formula, ``step_loss.pack_loss``). The
step objective is then the token-weighted mean over the whole step, whatever the number or fill of its
packs (fixing the per-pack means of reference rollout 15.1 W18).

The step's channel decides the forward: Channel A with ``n_softctx_iter > 1`` runs the soft self-context
forwards (``coordexp.learn.channel_a``); every other step one plain forward. The AB geometry terms apply to
the boxes the segments carry on both channels (GT boxes on A; matched-prefix and FN boxes on B).

Distributed: when the model is wrapped in ``DistributedDataParallel`` the step weights are summed over
ranks (one all-reduce of three scalars) and every pack's loss is multiplied by the world size, so DDP's
gradient averaging yields the global token mean; every pack but the last runs under
``model.no_sync()`` so gradients are all-reduced once per step. Every rank must call ``step`` with
at least one pack (a rank without segments would leave the others waiting in the all-reduce). In a
single process none of this applies and the code paths reduce to plain backward calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import attrs
import torch
import torch.distributed as dist

from coordexp.config.schema_training import TrainingConfig
from coordexp.core.schedule import Channel
from coordexp.errors import ConfigError, PackingError
from coordexp.learn.attention import check_attention
from coordexp.learn.channel_a import SoftContextConfig
from coordexp.learn.geometry_losses import (
    LOSS_BBOX_CIOU,
    LOSS_BBOX_NONFINITE,
    LOSS_BBOX_SMOOTHL1,
    LOSS_COORD_CE,
    LOSS_COORD_EHUBER,
    LOSS_COORD_EL1,
    LOSS_COORD_ENTROPY,
    LOSS_COORD_REG,
    GeometryLossConfig,
)
from coordexp.learn.losses import LOSS_CE, LOSS_COORD, LOSS_COORD_PREFIX, LOSS_COORD_TAIL, CoordLossConfig
from coordexp.learn.model import unwrap
from coordexp.learn.optim import build_optimizer, build_scheduler
from coordexp.learn.packed import TrainBatch
from coordexp.learn.step_loss import (  # noqa: F401  (re-exported: the learner's loss API)
    LossSums,
    StepWeights,
    backward_packs,
    forward_loss_sums,
    pack_loss,
    step_weights,
)
from coordexp.learn.tuner import trainable_parameters, upcast_trainable

# Config keys this module reads (checked by the key-reach test, coordexp.bind.reach).
CONFIG_READS = (
    "training.bf16",
    "training.gradient_checkpointing",
    "training.max_grad_norm",
)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def geometry_metrics(s: LossSums) -> dict[str, float]:
    """Per-term step means over the step's boxes (unweighted; 0 when the step had none), from summed totals."""
    n = float(s.box_weight)
    return {
        LOSS_BBOX_SMOOTHL1: _ratio(s.smoothl1_sum, n),
        LOSS_BBOX_CIOU: _ratio(s.ciou_sum, n),
        LOSS_COORD_CE: _ratio(s.coord_ce_sum, n),
        LOSS_COORD_EL1: _ratio(s.el1_sum, n),
        LOSS_COORD_EHUBER: _ratio(s.ehuber_sum, n),
        LOSS_COORD_ENTROPY: _ratio(s.entropy_sum, n),
        LOSS_COORD_REG: _ratio(s.reg_sum, n),
        LOSS_BBOX_NONFINITE: float(s.nonfinite),
    }


@attrs.frozen
class StepStats:
    """What one optimizer step did (rank-local values)."""

    loss: float  # ce + coord + geometry: the step objective
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
    geometry: dict[str, float] | None = None  # ``loss/*`` geometry terms; None when the run has no geometry

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
            **(self.geometry or {}),
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
    """Owns the model, AdamW and the schedule; ``step(packs, channel=...)`` is one optimizer step.

    ``geometry`` (the AB geometry / coord-regularizer weights) and ``soft_context`` (Channel A's soft
    self-context) come from ``coordexp.bind``; None (rollout_matching_sft) means neither applies.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        training: TrainingConfig,
        coord_cfg: CoordLossConfig,
        coord_ids: Sequence[int],
        total_steps: int,
        geometry: GeometryLossConfig | None = None,
        soft_context: SoftContextConfig | None = None,
    ) -> None:
        self.model = model
        self.training = training
        self.coord_cfg = coord_cfg
        self.geometry = geometry
        self.soft_context = soft_context
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

    def _step_weights(self, packs: Sequence[TrainBatch]) -> tuple[StepWeights, float]:
        """(step denominators, loss scale): global weights under DDP, known before any forward."""
        local = step_weights(packs)
        if not (_is_ddp(self.model) and dist.is_initialized()):
            return local, 1.0
        weights = torch.tensor(local, dtype=torch.float64, device=self.device)
        dist.all_reduce(weights, op=dist.ReduceOp.SUM)
        return StepWeights(*(float(w) for w in weights)), float(dist.get_world_size())

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        if last or not _is_ddp(self.model):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.training.bf16)

    def _run_pack(self, pack: TrainBatch, weights: StepWeights, scale: float, last: bool, channel: Channel) -> LossSums:
        soft = self.soft_context if channel is Channel.A else None
        with self._sync(last):
            with self._autocast():
                sums = forward_loss_sums(self.model, pack.to(self.device), coord_ids=self.coord_ids,
                                         coord_cfg=self.coord_cfg, geometry=self.geometry, soft_context=soft)
            pack_loss(sums, *weights, scale=scale).backward()
        return sums

    def step(self, packs: Sequence[TrainBatch], *, channel: Channel = Channel.B) -> StepStats:
        """Forward/backward every pack, clip, one optimizer step, advance the schedule.

        ``channel`` is the step's (Channel A runs the soft self-context when it is configured).
        """
        if not packs:
            raise PackingError("an optimizer step needs at least one pack (every rank must take part)")
        self.model.train()
        weights, scale = self._step_weights(packs)
        totals = torch.zeros(len(LossSums._fields), dtype=torch.float64)
        for i, pack in enumerate(packs):
            sums = self._run_pack(pack, weights, scale, last=i == len(packs) - 1, channel=channel)
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
            loss=ce + coord + _ratio(s.box_sum, s.box_weight),
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
            geometry=None if self.geometry is None else geometry_metrics(s),
        )
