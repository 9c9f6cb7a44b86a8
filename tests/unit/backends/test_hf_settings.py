"""The hf backend's pure parts: generation settings (reference rollout 14.7 D1/D2), batching, beam choice."""

from __future__ import annotations

import attrs
import pytest
import torch

from coordexp.backends.hf import _best_beams, _left_padded, generation_kwargs
from coordexp.backends.protocol import DecodingConfig, RolloutRequest
from coordexp.learn.encode import Encoding

GREEDY = DecodingConfig(
    decode_mode="greedy", num_beams=1, num_return_sequences=1, temperature=0.0, top_p=0.9, top_k=50,
    repetition_penalty=1.05, max_new_tokens=64, decode_batch_size=2,
)  # fmt: skip


def test_greedy_neutralises_the_sampling_knobs():
    kw = generation_kwargs(GREEDY)
    assert (kw["do_sample"], kw["temperature"], kw["top_p"], kw["top_k"]) == (False, 1.0, 1.0, 0)
    assert kw["repetition_penalty"] == 1.05 and kw["max_new_tokens"] == 64
    assert (kw["num_beams"], kw["num_return_sequences"]) == (1, 1)


@pytest.mark.parametrize(("top_k", "expected"), [(-1, 0), (50, 50)])
def test_sampling_passes_the_knobs_through(top_k, expected):
    kw = generation_kwargs(attrs.evolve(GREEDY, decode_mode="sampling", temperature=0.01, top_k=top_k))
    assert (kw["do_sample"], kw["temperature"], kw["top_p"], kw["top_k"]) == (True, 0.01, 0.9, expected)


def test_beam_asks_for_its_beams_and_candidates():
    kw = generation_kwargs(attrs.evolve(GREEDY, decode_mode="beam", num_beams=4, num_return_sequences=2))
    assert (kw["num_beams"], kw["num_return_sequences"], kw["do_sample"]) == (4, 2, False)


def _request(n_ids: int, n_patches: int | None, sid: str) -> RolloutRequest:
    ids = torch.arange(10, 10 + n_ids)
    enc = Encoding(
        input_ids=ids,
        mm_token_type_ids=torch.ones(n_ids, dtype=torch.int32),
        pixel_values=None if n_patches is None else torch.full((n_patches, 3), float(n_ids)),
        image_grid_thw=None if n_patches is None else torch.tensor([[1, 1, n_patches]]),
        prompt_len=n_ids,
    )
    return RolloutRequest(sid, tuple(ids.tolist()), enc, ())


def test_prompts_are_left_padded_and_images_concatenated_in_row_order():
    batch, width = _left_padded([_request(3, 2, "a"), _request(5, None, "b"), _request(4, 1, "c")], 0, torch.device("cpu"))
    assert width == 5
    assert batch["input_ids"].tolist() == [[0, 0, 10, 11, 12], [10, 11, 12, 13, 14], [0, 10, 11, 12, 13]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [1] * 5, [0, 1, 1, 1, 1]]
    assert batch["mm_token_type_ids"].tolist() == batch["attention_mask"].tolist()
    assert batch["pixel_values"][:, 0].tolist() == [3.0, 3.0, 4.0] and batch["image_grid_thw"].tolist() == [[1, 1, 2], [1, 1, 1]]


def test_the_best_scoring_beam_of_each_sample_is_picked():
    class Out:
        sequences_scores = torch.tensor([-1.0, -0.5, -2.0, -0.1, -3.0, -0.2])

    assert _best_beams(Out(), 2) == [1, 3]


def test_a_request_whose_prompt_ids_differ_from_its_encoding_is_refused():
    """RM-DECODE-105: the backend feeds the encoding; ids that disagree would mean a re-tokenized prompt."""
    from coordexp.backends.completion import check_request as _check_request
    from coordexp.errors import RolloutError

    good = _request(4, None, "ok")
    _check_request(good)
    bad = attrs.evolve(good, prompt_ids=(*good.prompt_ids[:-1], 99))
    with pytest.raises(RolloutError, match="sample ok: request prompt_ids differ"):
        _check_request(bad)
