"""Reading coord-bin distributions out of logits, and the targets they are compared with.

A coord slot at sequence position ``p`` is predicted by the logits row ``p - 1`` (next-token shift).
Of that row only the 1000 coord-token logits matter for the distribution over bins; they are gathered
in bin order (``coord_ids[k]`` is the vocab id of ``<|coord_k|>``), so index ``k`` of the result is
bin ``k``. All math here is float32 whatever the model's dtype, because softmax over 1000 bins at a low
temperature loses too much in bfloat16.
"""

from __future__ import annotations

import torch

from coordexp.errors import LossError

NUM_BINS = 1000
MAX_BIN = NUM_BINS - 1
LOGIT_LIMIT = 1e4


def sanitize_logits(z: torch.Tensor) -> torch.Tensor:
    """float32 copy with NaN -> 0 and +-inf / huge values -> +-1e4.

    A single non-finite logit would otherwise turn the whole step's loss into NaN; clamping keeps
    the softmax well defined and the gradient finite.
    """
    z = torch.nan_to_num(z.float(), nan=0.0, posinf=LOGIT_LIMIT, neginf=-LOGIT_LIMIT)
    return z.clamp(-LOGIT_LIMIT, LOGIT_LIMIT)


def _check_positions(logits: torch.Tensor, positions: torch.Tensor, batch_index: torch.Tensor | None) -> None:
    seq_len = logits.shape[-2]
    if positions.numel() and bool(((positions < 1) | (positions >= seq_len)).any()):
        raise LossError(
            f"coord slot positions must lie in [1, {seq_len}) (the row p-1 must exist); "
            f"got min {int(positions.min())}, max {int(positions.max())}"
        )
    if logits.dim() == 3 and batch_index is None:
        raise LossError("logits are [B, T, V]: pass batch_index (the row of every coord slot)")
    if logits.dim() not in (2, 3):
        raise LossError(f"logits must be [T, V] or [B, T, V], got shape {tuple(logits.shape)}")


def rows_before(
    logits: torch.Tensor, positions: torch.Tensor, batch_index: torch.Tensor | None = None
) -> torch.Tensor:
    """The logits rows that predict the tokens at ``positions``: ``logits[b, p - 1]`` -> [N, V].

    Rows keep the model's dtype; callers sanitise (and upcast) only what they use.
    """
    _check_positions(logits, positions, batch_index)
    if logits.dim() == 2:
        return logits[positions - 1]
    return logits[batch_index, positions - 1]


def coord_logits(full_rows: torch.Tensor, coord_ids: torch.Tensor) -> torch.Tensor:
    """Sanitised float32 logits of the 1000 coord tokens, in bin order: [N, V] -> [N, 1000]."""
    if coord_ids.numel() != NUM_BINS:
        raise LossError(f"coord_ids must hold {NUM_BINS} vocab ids (bin order), got {coord_ids.numel()}")
    return sanitize_logits(full_rows.index_select(-1, coord_ids.to(full_rows.device)))


def check_target_bins(target_bins: torch.Tensor) -> None:
    """Integer bins in 0..999, or LossError naming the range found (no silent clamping)."""
    if target_bins.dtype.is_floating_point:
        raise LossError(f"target bins must be an integer tensor, got {target_bins.dtype}")
    if target_bins.numel() and bool(((target_bins < 0) | (target_bins > MAX_BIN)).any()):
        raise LossError(
            f"target bins must lie in 0..{MAX_BIN}, got min {int(target_bins.min())}, "
            f"max {int(target_bins.max())}"
        )


def gaussian_targets(target_bins: torch.Tensor, sigma: float, truncate: float | None) -> torch.Tensor:
    """Soft targets over bins: q_k ∝ exp(-0.5 ((k - t) / sigma)^2), zero beyond ``truncate`` bins.

    Returns [N, 1000] rows that sum to 1 (reference rollout 7.2). A neighbourhood instead of a
    one-hot target rewards "almost right" coordinates, which a hard CE over 1000 bins does not.
    With integer targets and ``truncate >= 0`` the target bin itself is always in the support, so
    the normaliser is never zero.
    """
    if sigma <= 0:
        raise LossError(f"target_sigma must be > 0, got {sigma}")
    if truncate is not None and truncate < 0:
        raise LossError(f"target_truncate must be >= 0 or null, got {truncate}")
    check_target_bins(target_bins)
    bins = torch.arange(NUM_BINS, dtype=torch.float32, device=target_bins.device)
    dist = bins.unsqueeze(0) - target_bins.float().unsqueeze(-1)
    q = torch.exp(-0.5 * (dist / sigma) ** 2)
    if truncate is not None:
        q = torch.where(dist.abs() <= truncate, q, torch.zeros_like(q))
    return q / q.sum(-1, keepdim=True)


def one_hot_targets(target_bins: torch.Tensor) -> torch.Tensor:
    """[N] bins -> [N, 1000] deltas (float32)."""
    check_target_bins(target_bins)
    return torch.nn.functional.one_hot(target_bins.long(), NUM_BINS).float()


def wasserstein1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """W1 between distributions over bins, in units of the normalised coordinate: [N, 1000] -> [N].

    On a line W1 is the L1 distance between CDFs; dividing by 999 makes moving a delta by one bin
    cost 1/999, i.e. the coordinate distance in [0, 1].
    """
    return (p.cumsum(-1) - q.cumsum(-1)).abs().sum(-1) / MAX_BIN


def bin_values(device: torch.device | None = None) -> torch.Tensor:
    """The normalised coordinate of every bin, k / 999 (float32, [1000])."""
    return torch.arange(NUM_BINS, dtype=torch.float32, device=device) / MAX_BIN
