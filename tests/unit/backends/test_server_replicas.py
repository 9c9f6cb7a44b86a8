"""Data-parallel servers: the replica count read from ``/server_info``, the fallback when a server does not say,
and the spread that keeps ``decode_batch_size`` requests in flight per replica, through the real client against
local HTTP peers (``coordexp.spec.runners._server_peer``) that answer as vLLM 0.32 does."""

from __future__ import annotations

import itertools
import logging
import tempfile
from pathlib import Path

import pytest

from coordexp.backends.completion import seed_for
from coordexp.backends.dispatch import chunk_slices, server_batches, spread_chunks
from coordexp.backends.http_json import NO_RETRY, ServerMalformed
from coordexp.backends.server_api import collapse_image_pads, image_data_url, replicas_of_server_info
from coordexp.backends.vllm_server import VllmServerBackend
from coordexp.bind import bind_decoding, bind_stop_rules, minimal_config
from coordexp.bind.server import bind_server
from coordexp.spec.runners._server_peer import Entry, Peers, PeerState, by_server
from coordexp.spec.runners.hf_backend import _requests, _tiny

RM = "custom.extra.rollout_matching"
URL = "http://x/server_info?config_format=json"


def _info(**parallel) -> dict:
    return {"vllm_config": {"parallel_config": parallel, "model_config": {}}, "vllm_env": {}, "system_env": {}}


def test_the_replicas_are_the_data_parallel_size_behind_the_endpoint():
    assert replicas_of_server_info(_info(data_parallel_size=3, data_parallel_size_local=3), URL) == 3
    assert replicas_of_server_info(_info(data_parallel_size=1), URL) == 1
    # one API server per rank behind an external balancer fronts one replica; a hybrid one its node's replicas
    assert replicas_of_server_info(_info(data_parallel_size=4, data_parallel_external_lb=True), URL) == 1
    assert replicas_of_server_info(_info(data_parallel_size=4, data_parallel_size_local=2,
                                         data_parallel_hybrid_lb=True), URL) == 2


@pytest.mark.parametrize("reply", [
    {},
    {"vllm_config": "VllmConfig(model='m', ...)"},  # config_format=text
    _info(),
    _info(data_parallel_size=0),
    _info(data_parallel_size=True),
    _info(data_parallel_size="3"),
    [],
])
def test_a_server_info_without_a_positive_size_is_malformed(reply):
    with pytest.raises(ServerMalformed, match=r"data_parallel_size"):
        replicas_of_server_info(reply, URL)


def test_a_server_keeps_one_chunk_per_replica_in_flight_and_gets_chunks_by_its_size():
    assert server_batches(12, chunk=2, replicas=[1, 2]) == (((0, 2), (2, 4)), ((4, 8), (8, 12)))
    assert server_batches(12, chunk=4, replicas=[3]) == (((0, 12),),)  # 3v1: the one server has 12 in flight
    assert server_batches(7, chunk=2, replicas=[3]) == (((0, 6), (6, 7)),)
    with pytest.raises(ValueError, match="replica count"):
        server_batches(3, chunk=1, replicas=[1, 0])


def test_the_batches_tile_the_requests_in_order_within_each_servers_capacity():
    for n, chunk, replicas in itertools.product((0, 1, 5, 24, 31), (1, 2, 4), ([1], [1, 1], [1, 2], [3], [7, 1])):
        plan = server_batches(n, chunk=chunk, replicas=replicas)
        flat = [b for mine in plan for b in mine]
        assert [i for a, b in flat for i in range(a, b)] == list(range(n))  # every request once, in order
        assert all(0 < b - a <= chunk * r for mine, r in zip(plan, replicas, strict=True) for a, b in mine)
        if set(replicas) == {1}:  # one replica each: the batches are the chunks, spread evenly
            assert plan == spread_chunks(n, chunk=chunk, weights=replicas)
        chunks = spread_chunks(n, chunk=chunk, weights=replicas)
        assert [c for mine in chunks for c in mine] == list(chunk_slices(n, chunk))  # the chunks, weighted by size


def _backend(peers: Peers, tmp: Path, *config: str) -> VllmServerBackend:
    tiny, ctx = _tiny()
    servers = ", ".join(f'{{base_url: "{u}", group_port: 51216}}' for u in peers.urls)
    cfg = minimal_config("rollout_matching_sft", (f"{RM}.rollout_backend=vllm", f"{RM}.vllm.mode=server",
                                                  f"{RM}.vllm.server.servers=[{servers}]", *config))
    return VllmServerBackend(model=tiny.model, processor=tiny.processor, ctx=ctx, decoding=bind_decoding(cfg),
                             stop_rules=bind_stop_rules(cfg), server=bind_server(cfg), run_dir=tmp, retry=NO_RETRY)


def _state(n: int, **kw) -> tuple[list, PeerState]:
    tiny, ctx = _tiny()
    requests = _requests([{"size": 32, "index": i} for i in range(n)])
    pad = int(tiny.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    entries = {image_data_url(r.images[0]): Entry(i, collapse_image_pads(r.prompt_ids, pad), r.prompt_ids,
                                                  (*ctx.encode_fragment("{}"), ctx.im_end_id))
               for i, r in enumerate(requests)}
    assert len(entries) == n, "every request needs its own image (the peers recognise requests by it)"
    return requests, PeerState("tiny", entries, "stop", 0.0, **kw)


def _generate(replicas: list, seed: int = 7, **kw) -> tuple[VllmServerBackend, list, PeerState, Peers]:
    requests, state = _state(12, replicas=replicas, **kw)
    peers = Peers(len(replicas), state)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backend = _backend(peers, Path(tmp), f"{RM}.decode_batch_size=2", f"{RM}.decoding.temperature=0.7")
            results = backend.generate(requests, seed=seed)
    finally:
        peers.close()
    return backend, [r.rollout.sample_id for r in results], state, peers


def test_a_data_parallel_server_gets_requests_by_its_replicas_and_keeps_them_all_in_flight():
    # the peers hold each reply (up to 5 s) until the batch the client should send together is there
    backend, order, state, peers = _generate([1, 2], gather=[2, 4], gather_s=5.0)
    assert backend.replicas == [1, 2] and backend.stats["replicas_unknown"] == 0
    assert backend.parallel_requests == 6  # decode_batch_size 2 x (1 + 2) replicas
    assert by_server(peers, state.posts) == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11]]
    assert state.peak == {0: 2, 1: 4}
    requests = _requests([{"size": 32, "index": i} for i in range(12)])
    assert order == [r.sample_id for r in requests]  # results in request order
    seeds = {p["index"]: p["sampling"]["seed"] for p in state.posts}
    assert seeds == {i: seed_for(7, i) for i in range(12)}  # per request index, whatever the spread


def test_the_seeds_and_the_order_do_not_depend_on_the_spread():
    _, order_dp, dp, _ = _generate([1, 2])
    _, order_one, one, _ = _generate([1, 1])
    assert order_dp == order_one
    assert sorted((p["index"], p["sampling"]["seed"]) for p in dp.posts) == \
        sorted((p["index"], p["sampling"]["seed"]) for p in one.posts)
    assert max(one.peak.values()) <= 2  # one replica each: never more than a chunk in flight


def test_a_server_that_does_not_say_its_size_counts_as_one_replica_and_a_warning_names_it(caplog):
    logger = logging.getLogger("coordexp")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="coordexp")
    try:
        backend, order, state, peers = _generate([None, 3])
    finally:
        logger.removeHandler(caplog.handler)
    assert backend.replicas == [1, 3] and backend.stats["replicas_unknown"] == 1
    assert backend.parallel_requests == 8
    assert len(order) == 12 and by_server(peers, state.posts) == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11]]
    assert state.peak[0] <= 2 and state.peak[1] <= 6
    [warning] = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}  # the handler may see it twice
    assert f"{peers.urls[0]}: cannot read its data-parallel size" in warning and "VLLM_SERVER_DEV_MODE=1" in warning
    assert f"{peers.urls[1]}: 3 data-parallel replicas: 6 requests in flight" in caplog.text
