"""Projecting only the response positions onto the vocabulary gives the same log-probs, entropies,
top-k supports and gradients as projecting every position."""

from __future__ import annotations

import torch

from prefalign.models.logprobs import token_logprobs
from prefalign.models.tiny import tiny_model_and_tokenizer


def _batch():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 0, 0], [11, 12, 13, 14, 15, 16, 17, 18], [19, 20, 21, 22, 0, 0, 0, 0]])
    attention = (ids != 0).long()
    response = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0, 0]])
    return ids, attention, response


def test_response_only_equals_full_projection_with_gradients():
    model, _ = tiny_model_and_tokenizer(seed=2)
    ids, attention, response = _batch()
    results, grads = [], []
    for only in (False, True):
        model.zero_grad()
        lp, ent = token_logprobs(
            model, ids, attention, response, temperature=0.7, return_entropy=True, response_only=only
        )
        (lp * torch.arange(1.0, 9.0)).sum().backward()
        results.append((lp.detach(), ent))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-6, rtol=0)
    assert ((results[1][0] != 0) == response.bool()).all()
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_response_only_top_k_support():
    model, _ = tiny_model_and_tokenizer(seed=3)
    ids, attention, response = _batch()
    with torch.no_grad():
        full_lp, full_support = token_logprobs(model, ids, attention, response, top_k=4)
        lp, support = token_logprobs(model, ids, attention, response, top_k=4, response_only=True)
        again = token_logprobs(model, ids, attention, response, support=support, response_only=True)
    mask = response.bool()
    torch.testing.assert_close(lp, full_lp, atol=1e-6, rtol=0)
    assert torch.equal(support[mask].sort(-1).values, full_support[mask].sort(-1).values)
    torch.testing.assert_close(again, lp, atol=1e-6, rtol=0)
