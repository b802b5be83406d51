"""Rollout generation: layout of the Rollout record, EOS handling, padding and seeding."""

from __future__ import annotations

import pytest
import torch

from prefalign.models.logprobs import forward_logits
from prefalign.models.tiny import tiny_model_and_tokenizer
from prefalign.rollout.generate import SamplingConfig, _split_generated, build_rollout, generate

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16, 17, 18]]


def eos_biased_model(bias: float = 2.5, seed: int = 0):
    """A tiny Llama whose EOS logit gets +bias, so some rows stop early and some do not."""
    model, tok = tiny_model_and_tokenizer(seed=seed)
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = bias
    model.lm_head = head
    return model, tok


def test_split_generated_cuts_after_first_eos_and_keeps_truncated_rows_whole():
    eos, pad = 2, 0
    new = torch.tensor([[7, 2, 0, 0], [7, 8, 9, 10], [2, 0, 0, 0], [7, 2, 9, 2]])
    rows, ended = _split_generated(new, eos)
    assert rows == [[7, 2], [7, 8, 9, 10], [2], [7, 2]]
    assert ended == [True, False, True, True]
    del pad


def test_rollout_layout_eos_and_padding():
    model, tok = eos_biased_model()
    sampling = SamplingConfig(max_new_tokens=12, num_samples=3)
    ro = generate(model, tok, PROMPTS, sampling, micro_batch_size=5, generator_seed=1)
    n = len(PROMPTS) * 3
    assert ro.sequences.shape == ro.attention_mask.shape == ro.response_mask.shape
    assert ro.sequences.shape[0] == n and len(ro.response_texts) == n
    assert ro.prompt_index.tolist() == [i for i in range(len(PROMPTS)) for _ in range(3)]
    assert ro.ended_with_eos.any() and (~ro.ended_with_eos).any(), "the EOS bias should give both kinds of rows"
    for i in range(n):
        p = PROMPTS[int(ro.prompt_index[i])]
        plen, rlen = int(ro.prompt_lengths[i]), int(ro.response_lengths[i])
        assert plen == len(p) and ro.sequences[i, :plen].tolist() == p
        resp = ro.sequences[i, plen : plen + rlen].tolist()
        assert ro.response_mask[i].tolist() == [0] * plen + [1] * rlen + [0] * (ro.sequences.shape[1] - plen - rlen)
        assert ro.attention_mask[i].tolist() == [1] * (plen + rlen) + [0] * (ro.sequences.shape[1] - plen - rlen)
        assert (ro.sequences[i, plen + rlen :] == tok.pad_token_id).all()
        if ro.ended_with_eos[i]:
            assert resp[-1] == tok.eos_token_id and tok.eos_token_id not in resp[:-1]
        else:
            assert rlen == sampling.max_new_tokens and tok.eos_token_id not in resp
        assert ro.response_texts[i] == tok.decode(resp[:-1] if ro.ended_with_eos[i] else resp, skip_special_tokens=True)


def test_generator_seed_reproduces_and_leaves_global_rng_alone():
    model, tok = tiny_model_and_tokenizer()
    sampling = SamplingConfig(max_new_tokens=8, num_samples=2, top_k=20, top_p=0.9, temperature=0.7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate(model, tok, PROMPTS, sampling, micro_batch_size=8, generator_seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate(model, tok, PROMPTS, sampling, micro_batch_size=8, generator_seed=7)
    c = generate(model, tok, PROMPTS, sampling, micro_batch_size=8, generator_seed=8)
    assert torch.equal(a.sequences, b.sequences)
    assert a.response_texts != c.response_texts


def test_greedy_is_independent_of_left_padding_and_matches_full_forward():
    """Greedy tokens from KV-cached, left-padded generation equal the argmax of a full forward pass on the
    right-padded rollout: positions and masks of generation and scoring agree."""
    model, tok = tiny_model_and_tokenizer(seed=3)
    model.train()  # generate must switch to eval and restore the mode
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=10)
    one = generate(model, tok, PROMPTS, sampling, micro_batch_size=1)
    assert model.training
    batched = generate(model, tok, PROMPTS, sampling, micro_batch_size=len(PROMPTS))
    assert torch.equal(one.sequences, batched.sequences)
    model.eval()
    with torch.no_grad():
        logits = forward_logits(model, batched.sequences, batched.attention_mask)  # (N, T, V)
    predicted = logits[:, :-1].argmax(-1)  # token t+1 predicted at t
    mask = batched.response_mask[:, 1:].bool()
    assert torch.equal(predicted[mask], batched.sequences[:, 1:][mask])


def test_select_and_build_rollout_validation():
    _, tok = tiny_model_and_tokenizer()
    ro = build_rollout([[5, 6], [7]], [[8, tok.eos_token_id], [9, 10, 11]], [True, False], [0, 1], tok)
    sub = ro.select([1])
    assert sub.sequences.tolist() == [[7, 9, 10, 11]] and sub.response_mask.tolist() == [[0, 1, 1, 1]]
    assert ro.truncated.tolist() == [False, True]
    with pytest.raises(ValueError):
        build_rollout([[5]], [[]], [False], [0], tok)
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0.0)
