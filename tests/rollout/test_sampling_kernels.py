"""The decode kernels against the modules they stand in for, and the inverse-CDF draw against its distribution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from prefalign.rollout import kernels
from prefalign.rollout.sampling import _draw_full, next_tokens


@pytest.mark.parametrize("weight_first", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 24), (8, 24), (5, 1, 24), (33, 24)])
def test_project_equals_the_linear_module(monkeypatch, weight_first, bias, shape):
    monkeypatch.setattr(kernels, "weight_first", lambda weight, rows: weight_first)
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape)
    out = kernels.project(linear, x)
    assert out.shape == (*shape[:-1], 40)
    torch.testing.assert_close(out, linear(x), atol=1e-5, rtol=1e-5)


class Scaled(torch.nn.Linear):
    """Not a plain ``nn.Linear``: its forward differs from the weight product, as a LoRA or quantised layer's does."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_project_calls_anything_but_a_plain_linear_as_a_module():
    torch.manual_seed(1)
    layer, x = Scaled(16, 8), torch.randn(4, 16)
    torch.testing.assert_close(kernels.project(layer, x), 2 * F.linear(x, layer.weight, layer.bias))
    peft = pytest.importorskip("peft")
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    wrapped = lora.base_model.model[0]
    assert type(wrapped) is not torch.nn.Linear
    expected = wrapped(x)
    assert not torch.allclose(expected, wrapped.base_layer(x))  # the adapter changes the output
    torch.testing.assert_close(kernels.project(wrapped, x), expected)


def test_weight_first_for_tall_weights_or_several_threads(monkeypatch):
    vocabulary, square = torch.empty(4096, 64), torch.empty(64, 64)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert kernels.weight_first(vocabulary, 8) and not kernels.weight_first(square, 8)
    assert not kernels.weight_first(vocabulary, kernels.WEIGHT_FIRST_MAX_ROWS + 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert kernels.weight_first(square, 8)


def test_mlp_equals_the_llama_mlp_module():
    torch.manual_seed(2)
    config = LlamaConfig(hidden_size=32, intermediate_size=72, hidden_act="silu")
    module = LlamaMLP(config).eval()
    x = torch.randn(6, 1, 32)
    torch.testing.assert_close(kernels.mlp(module, x), module(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kv_heads", "group"), [(2, 3), (4, 1), (1, 4)])
def test_attend_one_equals_sdpa_with_repeated_heads_and_padding(kv_heads, group):
    torch.manual_seed(3)
    rows, slots, dim = 4, 9, 8
    q = torch.randn(rows, kv_heads, group, dim)
    keys, values = torch.randn(rows, kv_heads, slots, dim), torch.randn(rows, kv_heads, slots, dim)
    first = torch.tensor([0, 3, 8, 5])  # left padding: row r attends to slots first[r]..slots-1
    mask = (torch.arange(slots)[None, :] >= first[:, None])[:, None, None, :]  # (B, 1, 1, S)
    ours = kernels.attend_one(q, keys, values, mask, 0.3)
    # reference: every query head its own (repeated) key/value head, as Hugging Face's eager path does
    heads = q.reshape(rows, kv_heads * group, 1, dim)
    rep_k, rep_v = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    theirs = F.scaled_dot_product_attention(heads, rep_k, rep_v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(ours.reshape(rows, kv_heads * group, 1, dim), theirs, atol=1e-5, rtol=1e-5)
    # the padded slots take no part: changing them changes nothing
    keys[:, :, :3] += 100.0
    values[:, :, :3] -= 1000.0
    torch.testing.assert_close(kernels.attend_one(q, keys, values, mask, 0.3)[1:], ours[1:])


def _frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / tokens.numel()


def _chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic of the token counts against ``probs`` (over the tokens of non-zero probability)."""
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    expected = probs.double() * tokens.numel()
    keep = expected > 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


LOGITS = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, float("-inf"), 1.5, -0.5])
CHI2_999 = 24.32  # chi-square critical value, 7 degrees of freedom (7 tokens of non-zero probability, one fixed sum)


def test_inverse_cdf_draw_follows_the_softmax():
    draws = 40_000
    generator = torch.Generator().manual_seed(0)
    tokens = _draw_full(LOGITS.expand(draws, -1), generator)
    probs = LOGITS.softmax(-1)
    assert not (tokens == 5).any()  # probability 0 is never drawn
    assert _chi_square(tokens, probs) < CHI2_999 - 1  # the statistic has 6 degrees of freedom here
    # the check can fail: a shifted distribution is rejected
    assert _chi_square(tokens, (LOGITS * 1.3).softmax(-1)) > 10 * CHI2_999
    torch.testing.assert_close(_frequencies(tokens, 8), probs.double(), atol=0.01, rtol=0)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_next_tokens_without_filters_draws_at_the_temperature(temperature):
    draws = 40_000
    generator = torch.Generator().manual_seed(1)
    tokens, logprob = next_tokens(LOGITS.expand(draws, -1).clone(), temperature, 0, 1.0, generator)
    at_temperature = (LOGITS / temperature).softmax(-1)
    assert _chi_square(tokens, at_temperature) < CHI2_999
    assert _chi_square(tokens, LOGITS.softmax(-1)) > 10 * CHI2_999  # not the distribution at temperature 1
    torch.testing.assert_close(logprob, at_temperature.log()[tokens])


def test_draw_is_reproducible_from_a_generator_or_the_global_seed():
    logits = torch.randn(16, 500) * 2
    a = next_tokens(logits.clone(), 1.0, 0, 1.0, torch.Generator().manual_seed(5))[0]
    b = next_tokens(logits.clone(), 1.0, 0, 1.0, torch.Generator().manual_seed(5))[0]
    c = next_tokens(logits.clone(), 1.0, 0, 1.0, torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = next_tokens(logits.clone(), 1.0, 0, 1.0)[0]
    torch.manual_seed(5)
    assert torch.equal(d, next_tokens(logits.clone(), 1.0, 0, 1.0)[0])


def test_one_token_of_all_the_probability_is_always_drawn():
    logits = torch.full((3, 100), float("-inf"))
    logits[torch.arange(3), torch.tensor([0, 57, 99])] = 0.0  # the first, a middle and the last id
    for seed in range(20):
        drawn = _draw_full(logits, torch.Generator().manual_seed(seed))
        assert drawn.tolist() == [0, 57, 99]
