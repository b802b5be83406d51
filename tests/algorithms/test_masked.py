import math

import pytest
import torch

from prefalign.algorithms.masked import aggregate_loss, masked_mean, masked_sum, masked_var, masked_whiten


def _values_and_mask():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 7, generator=g, dtype=torch.float64)
    mask = torch.tensor(
        [
            [0, 0, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 1],
            [0, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 1, 1],
        ]
    )
    return values, mask


def _selected(values, mask):
    return [values[b, t].item() for b in range(values.shape[0]) for t in range(values.shape[1]) if mask[b, t]]


def test_sum_and_mean_match_a_loop():
    values, mask = _values_and_mask()
    flat = _selected(values, mask)
    assert masked_sum(values, mask).item() == pytest.approx(sum(flat))
    assert masked_mean(values, mask).item() == pytest.approx(sum(flat) / len(flat))
    per_row = masked_mean(values, mask, dim=-1)
    for b in range(4):
        row = [values[b, t].item() for t in range(7) if mask[b, t]]
        assert per_row[b].item() == pytest.approx(sum(row) / len(row))
        assert masked_sum(values, mask, dim=-1)[b].item() == pytest.approx(sum(row))


def test_nan_in_padding_does_not_leak():
    values, mask = _values_and_mask()
    values = values.masked_fill(mask == 0, float("nan"))
    assert torch.isfinite(masked_mean(values, mask))
    assert torch.isfinite(masked_var(values, mask))
    assert torch.isfinite(masked_whiten(values, mask)).all()


def test_empty_row_mean_is_zero():
    values = torch.ones(2, 3)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(values, mask, dim=-1).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("unbiased", [True, False])
def test_var_matches_hand_formula(unbiased):
    values, mask = _values_and_mask()
    flat = _selected(values, mask)
    n = len(flat)
    mean = sum(flat) / n
    expected = sum((v - mean) ** 2 for v in flat) / (n - 1 if unbiased else n)
    assert masked_var(values, mask, unbiased=unbiased).item() == pytest.approx(expected)


def test_var_needs_enough_elements():
    values = torch.tensor([[1.0, 2.0]])
    with pytest.raises(ValueError):
        masked_var(values, torch.tensor([[1, 0]]), unbiased=True)
    assert masked_var(values, torch.tensor([[1, 0]]), unbiased=False).item() == 0.0
    with pytest.raises(ValueError):
        masked_var(values, torch.tensor([[0, 0]]), unbiased=False)


@pytest.mark.parametrize("shift_mean", [True, False])
@pytest.mark.parametrize("unbiased", [True, False])
def test_whiten_by_hand(shift_mean, unbiased):
    values, mask = _values_and_mask()
    flat = _selected(values, mask)
    n = len(flat)
    mean = sum(flat) / n
    var = sum((v - mean) ** 2 for v in flat) / (n - 1 if unbiased else n)
    out = masked_whiten(values, mask, shift_mean=shift_mean, unbiased=unbiased, eps=1e-8)
    for b in range(4):
        for t in range(7):
            if mask[b, t]:
                expected = (values[b, t].item() - mean) / math.sqrt(var + 1e-8)
                if not shift_mean:
                    expected += mean
                assert out[b, t].item() == pytest.approx(expected)
            else:
                assert out[b, t].item() == 0.0
    if shift_mean:
        assert masked_mean(out, mask).item() == pytest.approx(0.0, abs=1e-12)
        assert masked_var(out, mask, unbiased=unbiased).item() == pytest.approx(1.0, rel=1e-6)


def test_aggregation_modes_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert aggregate_loss(loss, mask, "token-mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4 + 0) / 3)
    # the empty third row is left out of the per-sequence mean
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    with pytest.raises(ValueError):
        aggregate_loss(loss, mask, "sum")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_split_batch_with_global_normalizer_equals_full_batch(mode):
    values, mask = _values_and_mask()
    full = aggregate_loss(values, mask, mode)
    if mode == "token-mean":
        normalizer = mask.sum()
    else:
        normalizer = int(mask.any(dim=-1).sum()) if mode == "seq-mean-token-mean" else mask.shape[0]
    halves = sum(aggregate_loss(values[s], mask[s], mode, normalizer=normalizer) for s in (slice(0, 2), slice(2, 4)))
    assert halves.item() == pytest.approx(full.item())


def test_per_token_sums_of_halves_add_up():
    values, mask = _values_and_mask()
    assert (masked_sum(values[:2], mask[:2]) + masked_sum(values[2:], mask[2:])).item() == pytest.approx(
        masked_sum(values, mask).item()
    )
