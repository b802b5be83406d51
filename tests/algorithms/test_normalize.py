import numpy as np
import pytest
import torch

from prefalign.algorithms.normalize import RunningMeanStd


def test_welford_merge_matches_numpy_on_concatenated_data():
    g = torch.Generator().manual_seed(5)
    chunks = [torch.randn(n, generator=g) * 3 + 2 for n in (1, 7, 50, 3)]
    stats = RunningMeanStd(epsilon=0.0)
    for chunk in chunks:
        stats.update(chunk)
    data = torch.cat(chunks).double().numpy()
    assert stats.mean.item() == pytest.approx(np.mean(data))
    assert stats.var.item() == pytest.approx(np.var(data))
    assert stats.std.item() == pytest.approx(np.std(data))
    assert stats.count == len(data)


def test_default_epsilon_is_close_to_exact_and_vector_shape():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    stats = RunningMeanStd(shape=(3,))
    stats.update(x[:120])
    stats.update(x[120:])
    torch.testing.assert_close(stats.mean, x.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.var, x.var(0, unbiased=False), atol=1e-5, rtol=1e-5)


def test_masked_update_uses_only_response_tokens():
    returns = torch.tensor([[1.0, 2.0, 99.0], [3.0, -50.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    stats = RunningMeanStd(epsilon=0.0)
    stats.update(returns, mask=mask)
    assert stats.mean.item() == pytest.approx(2.0)
    assert stats.var.item() == pytest.approx(2 / 3)


def test_normalize_denormalize_round_trip_and_state_dict():
    stats = RunningMeanStd()
    stats.update(torch.tensor([1.0, 5.0, 9.0]))
    x = torch.tensor([[0.0, 4.0], [10.0, -3.0]])
    expected = (x.double() - stats.mean) / (stats.var + 1e-8).sqrt()
    torch.testing.assert_close(stats.normalize(x), expected.float())
    torch.testing.assert_close(stats.denormalize(stats.normalize(x)), x)
    resumed = RunningMeanStd()
    resumed.load_state_dict(stats.state_dict())
    more = torch.tensor([2.0, -1.0])
    stats.update(more)
    resumed.update(more)
    assert resumed.mean.item() == stats.mean.item() and resumed.var.item() == stats.var.item()
    assert resumed.count == stats.count
