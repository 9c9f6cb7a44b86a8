"""Shared by the real-vLLM tests (``tox -e vllm``): the marker, engine settings, the servable tiny model.

Every test under tests/vllm gets the ``vllm`` marker, so the default suite (``-m 'not ... vllm'``) never
collects an engine. Engines are expensive (20-90 s to start on two busy cores): a test module builds at
most one, through a module-scoped fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# vLLM's CPU KV cache defaults to several GiB per engine; the tiny model needs a sliver of one
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="session")
def servable_dir(tmp_path_factory) -> Path:
    """The servable tiny Qwen3-VL (heads of 32, video processor config), saved once per session."""
    from coordexp.data.tiny import build_servable_tiny_qwen3vl

    out = tmp_path_factory.mktemp("servable-tiny")
    build_servable_tiny_qwen3vl(seed=0, out_dir=out)
    return out


def tiny_requests(processor, n: int, *, seed: int = 0, prefix: str = "s"):
    """``n`` image prompts of the tiny samples as rollout requests (the learner's encoding)."""
    from coordexp.backends.protocol import RolloutRequest
    from coordexp.data.tiny import PROMPT, tiny_samples
    from coordexp.learn.encode import encode_prompt

    out = []
    for j, (img, _) in enumerate(tiny_samples(n, seed=seed)):
        messages = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": PROMPT}]}]
        enc = encode_prompt(processor, messages)
        out.append(RolloutRequest(f"{prefix}{seed}-{j}", tuple(enc.input_ids.tolist()), enc, (img,)))
    return out
