"""The desc monitor's sentence encoder and the monitor itself (metrics only, reference rollout 11.2).

The encoder is a local sentence-embedding model (``desc_monitor.semantic_model``) loaded with
transformers' ``AutoModel`` / ``AutoTokenizer``: the attention-masked mean of the last hidden state,
L2-normalised, so a cosine is a dot product (how sentence-transformers' MiniLM models pool). A model
that is missing or cannot be loaded is a ``ConfigError`` naming the key when the monitor is built, at
the start of the run: the legacy silently logged a 0 mean instead. A failure later, while encoding,
is a diagnostic failure (the step logger's guard counts it in
``telemetry/diagnostic_failures/desc_monitor``), never a made-up value.

Usage::

    monitor = DescMonitor.build(bound.desc_monitor)     # None when desc_monitor.enabled is false
    metrics = monitor.metrics(pairs, prefix="rollout")  # pairs: [(pred desc, GT desc)] in match order
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordexp.core.desc_agreement import DescMonitorSettings, tally, tally_metrics
from coordexp.errors import ConfigError

KEY = "custom.extra.rollout_matching.desc_monitor"
CACHE_LIMIT = 100_000  # normalised descs kept with their embedding; the cache starts over past it


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a local transformers model; embeddings cached."""

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 64, max_length: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = torch.device(resolve_device(device))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{KEY}.semantic_device={device!r}: this machine has no CUDA device. Fix: set it to "
                              "cpu or auto")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            self.model = AutoModel.from_pretrained(model_path, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ConfigError(
                f"{KEY}.semantic_model={model_path!r}: cannot load a sentence-embedding model from it "
                f"({' '.join(str(exc).split())[:300]}). Fix: give a local folder with a transformers encoder and its "
                f"tokenizer (for example a downloaded sentence-transformers/all-MiniLM-L6-v2), or set "
                f"{KEY}.mode: exact"
            ) from exc
        self.batch_size, self.max_length = batch_size, max_length
        self._cache: dict[str, Any] = {}

    def encode(self, texts: Sequence[str]) -> Any:
        """A float tensor (len(texts), dim) of unit vectors; each distinct text is encoded once."""
        import torch

        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if len(self._cache) + len(todo) > CACHE_LIMIT:
            self._cache.clear()
            todo = list(dict.fromkeys(texts))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            for text, vec in zip(chunk, self._embed(chunk)):
                self._cache[text] = vec
        if not texts:
            return torch.zeros((0, 0))
        return torch.stack([self._cache[t] for t in texts])

    def _embed(self, texts: list[str]) -> Any:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()

    def cosine(self, left: Sequence[str], right: Sequence[str]) -> list[float]:
        if not left:
            return []
        a, b = self.encode(left), self.encode(right)
        return (a * b).sum(dim=-1).tolist()


def resolve_device(device: str) -> str:
    """``auto``: the first GPU when there is one, else the CPU (reference rollout 11.2)."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class DescMonitor:
    """Desc agreement metrics of a step's (or eval batch's) matched pairs."""

    def __init__(self, settings: DescMonitorSettings, encoder: SentenceEncoder | None) -> None:
        self.settings, self.encoder = settings, encoder
        self.last_seen: int | None = None  # the last training step with rollouts offered to ``due``

    def due(self, step: int) -> bool:
        """Whether this training step with rollouts is measured (see ``DescMonitorSettings.due``)."""
        due = self.settings.due(step, last_seen=self.last_seen)
        self.last_seen = step
        return due

    @classmethod
    def build(cls, settings: DescMonitorSettings) -> DescMonitor | None:
        """None when the monitor is off; loads the encoder for modes semantic/both (ConfigError if it cannot)."""
        if not settings.enabled:
            return None
        encoder = None
        if settings.semantic:
            encoder = SentenceEncoder(settings.semantic_model, device=settings.semantic_device,
                                      batch_size=settings.semantic_batch_size,
                                      max_length=settings.semantic_max_length)
        return cls(settings, encoder)

    def metrics(self, pairs: Sequence[tuple[str, str]], *, prefix: str) -> dict[str, float]:
        """Base keys ``<prefix>/desc_*`` of ``pairs`` (``prefix`` ``rollout`` caps pairs as training does)."""
        s = self.settings
        similarity = self.encoder.cosine if self.encoder is not None else None
        t = tally(pairs, cap=s.pair_cap(training=prefix == "rollout"), threshold=s.semantic_threshold,
                  similarity=similarity)
        return tally_metrics(t, prefix=prefix)
