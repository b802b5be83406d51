"""The compiled small-batch weight product against torch's, its routing in the decode step, and its fallbacks."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from prefalign.models.logprobs import token_logprobs
from prefalign.models.tiny import tiny_model_and_tokenizer
from prefalign.rollout import compiled, cpu_kernels, kernels
from prefalign.rollout.generate import SamplingConfig, generate

# an AVX2 CPU and a C++ compiler; with both, a failed build fails the tests instead of skipping them
needs_kernel = pytest.mark.skipif(cpu_kernels._why_not() is not None, reason=str(cpu_kernels._why_not()))
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 40, 41, 42], [14], [15, 16, 17, 18], [60, 61]]


@pytest.fixture
def kernel():
    """The kernel, built (a build failure fails the test on an AVX2 machine instead of skipping it)."""
    cpu_kernels.build()
    cpu_kernels._state["ok"] = True
    return cpu_kernels.small_linear


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 9, 15, 16, 17, 33, 64])
@pytest.mark.parametrize(("n", "k"), [(1, 8), (2, 16), (3, 24), (7, 576), (192, 576), (50, 1536)])
def test_small_linear_equals_torchs_product(kernel, rows, n, k):
    torch.manual_seed(rows * 1000 + n)
    x, w = torch.randn(rows, k), torch.randn(n, k)
    out = kernel(x, w)
    assert out.shape == (rows, n) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, w), atol=1e-4, rtol=1e-5)


@needs_kernel
def test_small_linear_takes_strided_inputs_and_names_bad_ones(kernel):
    torch.manual_seed(0)
    x, w = torch.randn(16, 6)[:, :4].repeat(1, 2).T.contiguous().T, torch.randn(32, 24)[:, :8]  # neither contiguous
    assert not x.is_contiguous() and not w.is_contiguous()
    torch.testing.assert_close(kernel(x, w), x @ w.T, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="multiple of 8"):
        kernel(torch.randn(2, 12), torch.randn(3, 12))
    with pytest.raises(RuntimeError, match="float32"):
        kernel(torch.randn(2, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64))


def test_usable_only_for_big_float32_weights_without_grad(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "available", lambda: True)
    big, x = torch.empty(cpu_kernels.MIN_WEIGHT_ELEMENTS // 8, 8), torch.empty(4, 8)
    assert cpu_kernels.usable(big, x)
    assert not cpu_kernels.usable(torch.empty(16, 8), x)  # in the cache: the BLAS
    assert not cpu_kernels.usable(big.double(), x.double())
    assert not cpu_kernels.usable(torch.empty(cpu_kernels.MIN_WEIGHT_ELEMENTS // 12, 12), torch.empty(4, 12))
    assert not cpu_kernels.usable(big.requires_grad_(), x)
    with torch.no_grad():
        assert cpu_kernels.usable(big, x)


@needs_kernel
def test_project_routes_big_weights_to_the_kernel(monkeypatch, kernel):
    calls = []
    monkeypatch.setattr(cpu_kernels, "small_linear", lambda x, w: calls.append(x.shape) or kernel(x, w))
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 40)
    x = torch.randn(5, 1, 64)
    with torch.no_grad():
        torch.testing.assert_close(kernels.project(linear, x), linear(x), atol=1e-5, rtol=1e-5)
        assert calls == []  # 2,560 elements: below the threshold
        monkeypatch.setattr(cpu_kernels, "MIN_WEIGHT_ELEMENTS", 0)
        torch.testing.assert_close(kernels.project(linear, x), linear(x), atol=1e-5, rtol=1e-5)  # with its bias
        assert calls == [(5, 64)]
        kernels.project(linear, torch.randn(kernels.WEIGHT_FIRST_MAX_ROWS + 1, 64))
        assert calls == [(5, 64)]  # more rows than a decode step's: the BLAS


@needs_kernel
@pytest.mark.parametrize("fused", [True, False])
def test_engine_through_the_kernel_still_equals_hugging_face(monkeypatch, kernel, fused):
    calls, attention, layers = [], cpu_kernels.decode_attention, compiled.decode_layers
    monkeypatch.setattr(cpu_kernels, "MIN_WEIGHT_ELEMENTS", 0)
    monkeypatch.setattr(cpu_kernels, "small_linear", lambda x, w: calls.append("linear") or kernel(x, w))
    monkeypatch.setattr(cpu_kernels, "decode_attention", lambda *a: calls.append("attention") or attention(*a))
    monkeypatch.setattr(compiled, "decode_layers", lambda *a: calls.append(("layers", a[-1] is not None)) or layers(*a))
    if not fused:  # as for a LoRA model: op by op
        monkeypatch.setattr(compiled, "fused_weights", lambda lm: None)
    model, tok = tiny_model_and_tokenizer(seed=3)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=24, num_samples=2)
    ours = generate(model, tok, PROMPTS, greedy, 4, engine="builtin")
    if fused:
        assert ("layers", True) in calls and "attention" not in calls, "one decode_layer call a layer"
    else:
        assert ("layers", False) in calls and {"linear", "attention"} <= set(calls), "both kernels, op by op"
    assert torch.equal(ours.sequences, generate(model, tok, PROMPTS, greedy, 4, engine="hf").sequences)
    sampled = generate(model, tok, PROMPTS, SamplingConfig(temperature=0.7, max_new_tokens=16), 5, generator_seed=0)
    full = token_logprobs(model, sampled.sequences, sampled.attention_mask, sampled.response_mask, temperature=0.7)
    torch.testing.assert_close(sampled.logprobs, full, atol=1e-5, rtol=0)


def test_switched_off_or_failing_build_falls_back(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setenv("PREFALIGN_CPU_KERNELS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # switched off on purpose: no warning
        assert not cpu_kernels.available()
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.delenv("PREFALIGN_CPU_KERNELS")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: "/usr/bin/c++")

    def broken(verbose=False):
        raise RuntimeError("Error building extension 'prefalign_decode_kernels'\nc++: fatal error: no input files")

    monkeypatch.setattr(cpu_kernels, "build", broken)
    with pytest.warns(RuntimeWarning, match="its build failed .*no input files"):
        assert not cpu_kernels.available()
    assert not cpu_kernels.available()  # decided once
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    with pytest.warns(RuntimeWarning, match="no AVX2"):
        assert not cpu_kernels.available()
    # the decode step still works without it
    monkeypatch.setattr(cpu_kernels, "MIN_WEIGHT_ELEMENTS", 0)
    linear, x = torch.nn.Linear(16, 8), torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(kernels.project(linear, x), linear(x), atol=1e-5, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 16), (3, 3, 8), (9, 3, 64), (10, 1, 8)])
def test_decode_attention_equals_the_engines_torch_attention(kernel, heads, kv_heads, head_dim):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding, apply_rotary_pos_emb

    from prefalign.rollout import engine

    torch.manual_seed(heads * 10 + head_dim)
    config = LlamaConfig(
        hidden_size=heads * head_dim, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim
    )
    attn, rotary = LlamaAttention(config, layer_idx=0).eval(), LlamaRotaryEmbedding(config)
    rows, capacity, start, slot = 5, 40, 20, 27
    lengths = torch.tensor([20, 17, 9, 4, 1])  # prompts right-aligned at slot 20, 7 tokens generated since
    keys, values = torch.randn(rows, kv_heads, capacity, head_dim), torch.randn(rows, kv_heads, capacity, head_dim)
    h = torch.randn(rows, 1, heads * head_dim)
    positions = (lengths + slot - start)[:, None]
    cos, sin = rotary(h, positions)
    slots = torch.arange(capacity)
    mask = ((slots >= start - lengths[:, None]) & (slots <= slot))[:, None, None, : slot + 1]
    with torch.no_grad():
        ref_keys, ref_values = keys.clone(), values.clone()
        expected = engine._attend(attn, h, cos, sin, ref_keys, ref_values, slot, mask, [(0, rows, 0)])
        q, k, v = (kernels.project(p, h[:, 0]) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        got = cpu_kernels.decode_attention(
            q, k, v, cos[:, 0], sin[:, 0], keys, values, start - lengths, slot, attn.scaling
        ).reshape(rows, 1, -1)
        got = kernels.project(attn.o_proj, got)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(keys, ref_keys) and torch.equal(values, ref_values)  # the rotated key to the bit
        q = kernels.project(attn.q_proj, h).view(rows, 1, heads, head_dim).transpose(1, 2)
        k = kernels.project(attn.k_proj, h).view(rows, 1, kv_heads, head_dim).transpose(1, 2)
        assert torch.equal(keys[:, :, slot], apply_rotary_pos_emb(q, k, cos, sin)[1][:, :, 0])
    with pytest.raises(RuntimeError, match="starts at slot"):
        kv = torch.randn(rows, kv_heads * head_dim)
        cpu_kernels.decode_attention(h[:, 0], kv, kv, cos[:, 0], sin[:, 0], keys, values, lengths + 30, slot, 1.0)


@needs_kernel
@pytest.mark.parametrize("shape", [(5, 64), (3, 1, 24), (2, 13)])
def test_rms_norm_equals_the_llama_module(kernel, shape):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(shape[-1])
    norm = LlamaRMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        x = torch.randn(*shape) * 3
        torch.testing.assert_close(cpu_kernels.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))
        torch.testing.assert_close(compiled.norm(norm, x), norm(x))
        other = torch.nn.LayerNorm(shape[-1])  # not an RMS norm: called as its module
        assert torch.equal(compiled.norm(other, x), other(x))
