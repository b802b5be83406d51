import math

import pytest
import torch

from prefalign.algorithms.rollout_correction import logprob_mismatch, truncated_importance_weights


def _loop_mismatch(trainer, rollout, mask):
    gaps = [abs(math.exp(t - r) - 1) for t, r, m in zip(trainer.flatten(), rollout.flatten(), mask.flatten()) if m]
    return sum(gaps) / len(gaps), max(gaps)


def test_mismatch_matches_a_plain_loop_and_ignores_the_prompt():
    g = torch.Generator().manual_seed(0)
    trainer = -torch.rand(3, 6, generator=g) * 3
    rollout = trainer + torch.randn(3, 6, generator=g) * 0.1
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]])
    rollout_off = rollout.clone()
    rollout_off[mask == 0] = -50.0  # off the response: never read
    got = logprob_mismatch(trainer, rollout_off, mask)
    mean, largest = _loop_mismatch(trainer, rollout, mask)
    assert float(got["mean"]) == pytest.approx(mean, rel=1e-5)
    assert float(got["max"]) == pytest.approx(largest, rel=1e-5)


def test_identical_log_probs_give_no_mismatch_and_unit_weights():
    lp = -torch.rand(2, 5)
    mask = torch.ones(2, 5, dtype=torch.long)
    got = logprob_mismatch(lp, lp, mask)
    assert float(got["mean"]) == 0.0 and float(got["max"]) == 0.0
    torch.testing.assert_close(truncated_importance_weights(lp, lp, mask, cap=2.0), torch.ones(2, 5))


def test_temperature_scaled_engine_log_probs_show_ratios_near_two():
    """An engine reporting log-probs of the raw logits while sampling at temperature 0.5 (TRL #4159)."""
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    tokens = torch.tensor([[1]])
    trainer = torch.log_softmax(logits / 0.5, dim=-1).gather(1, tokens)
    raw = torch.log_softmax(logits, dim=-1).gather(1, tokens)
    ratio = math.exp(float(trainer - raw))
    got = logprob_mismatch(trainer, raw, torch.ones(1, 1))
    assert float(got["max"]) == pytest.approx(abs(ratio - 1), rel=1e-5) and abs(ratio - 1) > 0.5


def test_weights_are_truncated_at_the_cap_and_zero_off_the_response():
    trainer = torch.log(torch.tensor([[0.5, 0.9, 0.2, 0.3]]))
    rollout = torch.log(torch.tensor([[0.5, 0.3, 0.4, 0.3]]))
    mask = torch.tensor([[1, 1, 1, 0]])
    weights = truncated_importance_weights(trainer, rollout, mask, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 2.0, 0.5, 0.0]]))
    with pytest.raises(ValueError, match="cap must be positive"):
        truncated_importance_weights(trainer, rollout, mask, cap=0.0)


def test_no_response_token_gives_zeros():
    got = logprob_mismatch(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 3))
    assert all(float(v) == 0.0 for v in got.values())
