import pytest
import torch

from prefalign.algorithms.ema import ema_update_


def test_ema_matches_a_loop():
    g = torch.Generator().manual_seed(7)
    target = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g)]
    source = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g)]
    expected = [t.clone() for t in target]
    for _ in range(3):
        ema_update_(target, source, 0.1)
        for e, s in zip(expected, source):
            for i in range(e.numel()):
                e.view(-1)[i] = 0.9 * e.view(-1)[i] + 0.1 * s.view(-1)[i]
    for t, e in zip(target, expected):
        torch.testing.assert_close(t, e)


def test_ema_on_modules_with_grad_and_edge_rates():
    ref = torch.nn.Linear(3, 2)
    policy = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ref.parameters()]
    ema_update_(ref.parameters(), policy.parameters(), 0.0)
    for p, b in zip(ref.parameters(), before):
        assert torch.equal(p, b)
    ema_update_(ref.parameters(), policy.parameters(), 1.0)
    for p, q in zip(ref.parameters(), policy.parameters()):
        assert torch.equal(p, q)
        assert p.grad is None


def test_ema_rejects_misaligned_inputs_and_copies_integer_buffers():
    with pytest.raises(ValueError):
        ema_update_([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)], 0.5)
    with pytest.raises(ValueError):
        ema_update_([torch.zeros(2)], [torch.zeros(3)], 0.5)
    with pytest.raises(ValueError):
        ema_update_([torch.zeros(2)], [torch.zeros(2)], 1.5)
    counter = torch.tensor([3])
    ema_update_([counter], [torch.tensor([8])], 0.5)
    assert counter.item() == 8
