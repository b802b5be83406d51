"""The one-call decoder layer, the fused SiLU-times-up and the compiled draw against what they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from prefalign.rollout import compiled, cpu_kernels, sampling
from prefalign.rollout.prefill import StaticCache
from prefalign.rollout.sampling import _draw_full, next_tokens

needs_kernel = pytest.mark.skipif(cpu_kernels._why_not() is not None, reason=str(cpu_kernels._why_not()))


@pytest.fixture
def kernel():
    """The kernels, built (a build failure fails the test on an AVX2 machine instead of skipping it)."""
    cpu_kernels.build()
    cpu_kernels._state["ok"] = True


@needs_kernel
@pytest.mark.parametrize("shape", [(8, 1536), (3, 13), (1, 7), (1218, 40)])
def test_silu_mul_equals_torch(kernel, shape):
    torch.manual_seed(shape[1])
    gate, up = torch.randn(*shape) * 6, torch.randn(*shape)
    gate.view(-1)[:4] = torch.tensor([-120.0, 95.0, 0.0, -87.5])  # past e^x's float range on both sides
    out = cpu_kernels.silu_mul(gate, up)
    torch.testing.assert_close(out, F.silu(gate) * up, atol=1e-6, rtol=1e-6)
    assert torch.isfinite(out).all()
    with pytest.raises(RuntimeError, match="differ in shape"):
        cpu_kernels.silu_mul(gate, up[..., :1])


def _layer(heads: int, kv_heads: int, dim: int, seed: int, **config) -> tuple[LlamaDecoderLayer, LlamaConfig]:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=heads * dim,
        intermediate_size=3 * heads * dim,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=dim,
        **config,
    )
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    with torch.no_grad():
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.uniform_(0.5, 1.5)
    return layer, config


class _LM(torch.nn.Module):
    """Enough of a causal LM for :func:`prefalign.rollout.compiled.fused_weights`: ``lm.model.layers``."""

    def __init__(self, layers):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(layers)


@needs_kernel
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 2, 16), (2, 2, 8)])
def test_one_call_layer_equals_the_op_by_op_layer_to_the_bit(kernel, monkeypatch, heads, kv_heads, dim):
    monkeypatch.setattr(cpu_kernels, "MIN_WEIGHT_ELEMENTS", 0)  # op by op on the same kernel products
    layer, config = _layer(heads, kv_heads, dim, seed=heads + dim)
    rotary = LlamaRotaryEmbedding(config)
    rows, capacity, start, slot = 5, 40, 20, 26
    lengths = torch.tensor([20, 17, 9, 4, 1])
    cache = StaticCache(1, rows, kv_heads, capacity, dim, torch.float32, "cpu")
    torch.manual_seed(0)
    cache.keys[0].normal_()
    cache.values[0].normal_()
    x = torch.randn(rows, heads * dim)
    cos, sin = rotary(x[:, None], (lengths + slot - start)[:, None])
    cos, sin = cos.reshape(rows, -1), sin.reshape(rows, -1)
    fused = compiled.fused_weights(_LM([layer]))
    assert fused is not None and len(fused) == 1
    twin = StaticCache(1, rows, kv_heads, capacity, dim, torch.float32, "cpu")
    twin.keys[0].copy_(cache.keys[0])
    twin.values[0].copy_(cache.values[0])
    first = start - lengths
    with torch.no_grad():
        one_call = compiled.decode_layers(_LM([layer]), x, cos, sin, cache, slot, first, fused)
        op_by_op = compiled.decode_layers(_LM([layer]), x, cos, sin, twin, slot, first, None)
        # and Hugging Face's layer on the same cache contents up to float rounding (each row its own span)
        for r in range(rows):
            past = slice(int(first[r]), slot)
            keys, values = twin.keys[0][r : r + 1, :, past], twin.values[0][r : r + 1, :, past]
            ref = _hf_step(layer, x[r : r + 1], cos[r : r + 1], sin[r : r + 1], keys, values)
            torch.testing.assert_close(one_call[r : r + 1], ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(one_call, op_by_op)
    assert torch.equal(cache.keys[0], twin.keys[0]) and torch.equal(cache.values[0], twin.values[0])


def _hf_step(layer, x, cos, sin, keys, values):
    """Hugging Face's decoder layer for one token after ``keys``/``values`` (1, Hkv, n, D) already in its cache."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(keys.clone(), values.clone(), 0)
    out = layer(x[:, None], position_embeddings=(cos[:, None], sin[:, None]), cache=cache, attention_mask=None)
    return (out[0] if isinstance(out, tuple) else out)[:, 0]


def test_fused_weights_only_for_plain_layers():
    plain, _ = _layer(2, 1, 8, seed=1)
    assert compiled.fused_weights(_LM([plain])) is not None
    biased, _ = _layer(2, 1, 8, seed=1, attention_bias=True)
    assert compiled.fused_weights(_LM([plain, biased])) is None
    gelu, _ = _layer(2, 1, 8, seed=1, hidden_act="gelu")
    assert compiled.fused_weights(_LM([gelu])) is None
    scaled, _ = _layer(2, 1, 8, seed=1)
    scaled.mlp.up_proj = _Scaled(scaled.mlp.up_proj)  # as a LoRA layer: called as its module, op by op
    assert compiled.fused_weights(_LM([scaled])) is None
    double, _ = _layer(2, 1, 8, seed=1)
    assert compiled.fused_weights(_LM([double.double()])) is None


class _Scaled(torch.nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return 2 * self.linear(x)


@needs_kernel
@pytest.mark.parametrize(("rows", "vocab", "temperature"), [(8, 49152, 0.7), (3, 4099, 1.0), (1, 13, 2.0)])
def test_compiled_draw_is_the_inverse_cdf_draw(kernel, rows, vocab, temperature):
    torch.manual_seed(vocab)
    logits = torch.randn(rows, vocab) * 4
    logits[:, 1::7] = float("-inf")  # masked tokens: never drawn
    scaled64 = logits.double() / temperature
    cdf = (scaled64 - scaled64.max(-1, keepdim=True).values).exp().cumsum(-1)  # float64: the exact running sums
    total = cdf[:, -1:]
    for trial in range(20):
        u = torch.rand(rows)
        if trial == 0:
            u[0] = 1.0 - 2**-24  # the largest uniform below 1: the last token that has any probability
        ids, logprobs = cpu_kernels.draw(scaled := logits.clone(), temperature, u)
        torch.testing.assert_close(scaled, logits / temperature)  # divided in place, as the torch draw does
        assert not (ids % 7 == 1).any()
        # the first id whose running sum passes u * total, up to the float32 running sum's rounding (1e-5 of it)
        target = u.double()[:, None] * total
        above = cdf.gather(1, ids[:, None])
        below = torch.where(ids[:, None] > 0, cdf.gather(1, (ids - 1).clamp(min=0)[:, None]), torch.zeros_like(above))
        assert (above >= target - 1e-5 * total).all() and (below <= target + 1e-5 * total).all()
        expected = scaled64.gather(1, ids[:, None])[:, 0] - scaled64.logsumexp(-1)
        torch.testing.assert_close(logprobs.double(), expected, atol=1e-5, rtol=0)


@needs_kernel
def test_next_tokens_draws_big_vocabularies_with_the_kernel(kernel, monkeypatch):
    calls, draw = [], cpu_kernels.draw
    monkeypatch.setattr(cpu_kernels, "draw", lambda *a: calls.append(a[0].shape) or draw(*a))
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = torch.full((20_000, sampling.COMPILED_DRAW_MIN_VOCAB), float("-inf"))
    logits[:, [3, 1000, 2000, 4095]] = probs.log()
    tokens, logprobs = next_tokens(logits.clone(), 0.5, 0, 1.0, torch.Generator().manual_seed(0))
    assert calls == [logits.shape]
    at_half = (probs.log() / 0.5).softmax(-1)
    counts = torch.stack([(tokens == t).sum() for t in (3, 1000, 2000, 4095)]).double() / tokens.numel()
    torch.testing.assert_close(counts, at_half.double(), atol=0.015, rtol=0)
    assert set(tokens.tolist()) <= {3, 1000, 2000, 4095}
    torch.testing.assert_close(logprobs, at_half.log()[torch.searchsorted(torch.tensor([3, 1000, 2000]), tokens)])
    # same seed, same tokens; top-k, top-p, greedy and small vocabularies keep the torch path
    assert torch.equal(tokens, next_tokens(logits.clone(), 0.5, 0, 1.0, torch.Generator().manual_seed(0))[0])
    next_tokens(logits[:4].clone(), 0.5, 2, 1.0)
    next_tokens(logits[:4].clone(), 0.5, 0, 0.9)
    next_tokens(logits[:4].clone(), 0.0, 0, 1.0)
    small = torch.randn(4, sampling.COMPILED_DRAW_MIN_VOCAB - 1)
    torch.manual_seed(3)
    ours = next_tokens(small.clone(), 0.8, 0, 1.0)[0]
    torch.manual_seed(3)
    assert torch.equal(ours, _draw_full(small / 0.8))
    assert len(calls) == 2
