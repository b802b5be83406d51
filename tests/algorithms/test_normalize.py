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


def test_exponential_statistics_match_a_hand_computation():
    from prefalign.algorithms.normalize import ExponentialMeanStd

    stats = ExponentialMeanStd(beta=0.9)
    assert float(stats.mean) == 0.0 and float(stats.var) == 1.0  # before any update: the identity
    x1 = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    stats.update(x1, mask=torch.tensor([[1, 1, 1, 0]]))  # the masked 99 is not an observation
    # One batch: bias correction makes the statistics exactly the batch's.
    assert abs(float(stats.mean) - 2.0) < 1e-12
    assert abs(float(stats.var) - (14 / 3 - 4)) < 1e-12
    stats.update(torch.tensor([4.0, 6.0]))
    # Weights: batch 1 has 0.1 * 0.9, batch 2 has 0.1, both divided by their sum 0.19 (batch sizes do not count).
    mean = (0.09 * 2.0 + 0.1 * 5.0) / 0.19
    mean_sq = (0.09 * (14 / 3) + 0.1 * 26.0) / 0.19
    assert abs(float(stats.mean) - mean) < 1e-12
    assert abs(float(stats.var) - (mean_sq - mean**2)) < 1e-12
    y = torch.tensor([[0.5, -1.0], [7.0, 2.0]])
    expected = (y - mean) / (mean_sq - mean**2) ** 0.5
    torch.testing.assert_close(stats.normalize(y), expected)
    torch.testing.assert_close(stats.denormalize(stats.normalize(y)), y)


def test_exponential_statistics_floor_the_variance_and_resume_from_state():
    from prefalign.algorithms.normalize import ExponentialMeanStd

    stats = ExponentialMeanStd(beta=0.99995, var_floor=1e-2)
    stats.update(torch.full((6,), 3.0))  # constant returns: variance 0, floored
    assert abs(float(stats.mean) - 3.0) < 1e-9 and float(stats.var) == 1e-2
    resumed = ExponentialMeanStd(beta=0.99995)
    resumed.load_state_dict(stats.state_dict())
    stats.update(torch.tensor([1.0, 5.0]))
    resumed.update(torch.tensor([1.0, 5.0]))
    assert float(stats.mean) == float(resumed.mean) and float(stats.var) == float(resumed.var)
    with pytest.raises(ValueError, match="beta"):
        ExponentialMeanStd(beta=0.9).load_state_dict(stats.state_dict())
    with pytest.raises(ValueError, match="beta"):
        ExponentialMeanStd(beta=1.0)
