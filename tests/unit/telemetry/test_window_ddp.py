"""reduce_across_ranks over a real torch.distributed group (gloo, 2 CPU processes) equals reduce_states."""

from __future__ import annotations

import math
import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from coordexp.telemetry.keys import AB
from coordexp.telemetry.window import MetricWindow, finalize, reduce_across_ranks, reduce_states

# rank-specific steps: sums, a time max, a min flag, a last gauge, a sparse loss seen by one rank only
STEPS = {
    0: [{"rollout/samples": 4, "rollout/parse_truncated": 1, "time/rollout_generate_s": 2.0,
         "rollout/gen_new_tokens_total": 32, "rollout/generated_sequences": 4, "rollout/desc_sem_enabled": 1,
         "learning_rate": 0.1, "stage2/channel_a": 0, "stage2/channel_b": 1, "loss/bbox_ciou": 0.5},
        {"rollout/samples": 2, "stage2/channel_a": 1, "stage2/channel_b": 0, "learning_rate": 0.05}],
    1: [{"rollout/samples": 6, "rollout/parse_truncated": 3, "time/rollout_generate_s": 5.0,
         "rollout/gen_new_tokens_total": 40, "rollout/generated_sequences": 6, "rollout/desc_sem_enabled": 0,
         "learning_rate": 0.3, "stage2/channel_a": 0, "stage2/channel_b": 1}],
}


def _state(rank: int):
    window = MetricWindow(variant=AB)
    for step, metrics in enumerate(STEPS[rank]):
        window.add(metrics, step)
    return window.drain()


def _worker(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        queue.put((rank, finalize(reduce_across_ranks(_state(rank)))))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gloo_all_reduce_matches_the_in_process_reduction():
    ctx = mp.get_context("fork")  # no re-import per worker; CPU-only gloo is fork-safe
    queue = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = dict(queue.get() for _ in range(2))
    expected = finalize(reduce_states([_state(0), _state(1)]))
    assert results[0] == results[1] == expected
    assert expected["rollout/parse_truncated_rate"] == 4 / 12
    assert expected["rollout/gen_tokens_per_s"] == 72 / 5.0
    assert expected["rollout/desc_sem_enabled"] == 0.0
    assert math.isclose(expected["learning_rate"], (0.05 + 0.3) / 2)
    assert expected["loss/bbox_ciou"] == 0.5
    assert expected["stage2/channel_b"] == 2 / 3
