"""The decode step's layers on the compiled CPU kernels (:mod:`prefalign.rollout.cpu_kernels`).

Where :func:`compiled_attention` (float32 on an AVX2 CPU where the kernels build, weights that stream from
memory: not the study's tiny models, whose runs stay as they were), a decode step runs each decoder layer
either

* in **one call** (:func:`fused_weights` / ``decode_layer``): both RMS norms, the q/k/v/o projections, the
  rotary embedding, cache write and attention of each row over its own slots, the residual adds (folded
  into the o and down products) and the gated SiLU MLP, all in C++. Used where every layer is plain: bias-free
  ``nn.Linear`` projections, ``LlamaRMSNorm`` norms, a SiLU activation. It saves the ~15 Python-level calls a
  layer costs otherwise (SmolLM2, 8 rows, sampled, in one process: a decode step 39-49 ms against 51-57 ms op by op
  with torch's SiLU and draw; whole generation 5.3 s against 6.0 s);
* or **op by op** (:func:`layer`): the same kernels called from Python, with any layer that is not a plain
  ``nn.Linear`` (a LoRA layer) called as its module, so adapters apply.

Both compute Hugging Face's ``LlamaDecoderLayer`` arithmetic; they equal each other to the bit (the same
kernels in the same order) and the torch path up to float rounding (the tests compare them).
"""

from __future__ import annotations

import torch
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from prefalign.rollout import cpu_kernels, kernels

#: activations computed as ``silu`` (``F.silu``): the ones the fused SiLU-times-up kernel may replace
SILU_TYPES = (SiLUActivation, torch.nn.SiLU)


def compiled_attention(lm, cache) -> bool:
    """Whether the decode step's layers go to the compiled kernels: where its projections go to the compiled
    product (float32 on an AVX2 CPU, weights that stream from memory) and the head size is a multiple of 8."""
    attn = lm.model.layers[0].self_attn
    keys = cache.keys[0]
    return (
        keys.dtype == torch.float32
        and keys.shape[-1] % 8 == 0
        and type(attn.q_proj) is torch.nn.Linear
        and cpu_kernels.usable(attn.q_proj.weight, keys[:1, 0, 0])
    )


def norm(module, x: torch.Tensor) -> torch.Tensor:
    """A norm through the compiled kernel where it is Hugging Face's ``LlamaRMSNorm``, else as its module."""
    if isinstance(module, LlamaRMSNorm):
        return cpu_kernels.rms_norm(x, module.weight, module.variance_epsilon)
    return module(x)


def silu_gated(module: torch.nn.Module) -> bool:
    """Whether a Llama MLP's activation is SiLU and the fused ``silu(gate) * up`` kernel can run."""
    return type(module.act_fn) in SILU_TYPES and cpu_kernels.available()


def mlp(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Llama gated MLP with :func:`prefalign.rollout.kernels.project` (modules that are not plain linears are
    called as such) and ``silu(gate) * up`` in one pass where :func:`silu_gated` and x is float32 on the CPU."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or not silu_gated(module):
        return kernels.mlp(module, x)
    gate, up = kernels.project(module.gate_proj, x), kernels.project(module.up_proj, x)
    return kernels.project(module.down_proj, cpu_kernels.silu_mul(gate, up))


def layer(layer, x: torch.Tensor, cos, sin, keys, values, slot: int, first) -> torch.Tensor:
    """One decoder layer for x (B, hidden) through the compiled kernels, op by op (norms, projections, attention)."""
    attn = layer.self_attn
    h = norm(layer.input_layernorm, x)
    q, k, v = (kernels.project(p, h) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    out = cpu_kernels.decode_attention(q, k, v, cos, sin, keys, values, first, slot, attn.scaling)
    x = x + kernels.project(attn.o_proj, out)
    return x + mlp(layer.mlp, norm(layer.post_attention_layernorm, x))


def _plain(linear) -> bool:
    weight = getattr(linear, "weight", None)
    return (
        type(linear) is torch.nn.Linear
        and linear.bias is None
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and weight.is_contiguous()
        and weight.shape[1] % 8 == 0
    )


def fused_weights(lm) -> list[tuple[tuple, float]] | None:
    """Per decoder layer (the tensors and epsilons ``decode_layer`` takes: norm, eps, q, k, v, o, norm, eps, gate, up,
    down; the attention scale), where every layer is plain (see the module docstring); else None (op by op)."""
    out = []
    for block in lm.model.layers:
        attn, mlp_ = block.self_attn, block.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp_.gate_proj, mlp_.up_proj, mlp_.down_proj)
        norms = (block.input_layernorm, block.post_attention_layernorm)
        if not (
            all(_plain(p) for p in linears)
            and all(type(n) is LlamaRMSNorm and n.weight.dtype == torch.float32 for n in norms)
            and type(mlp_.act_fn) in SILU_TYPES
        ):
            return None
        first_norm, second_norm = norms
        params = (
            (first_norm.weight, first_norm.variance_epsilon)
            + tuple(p.weight for p in linears[:4])
            + (second_norm.weight, second_norm.variance_epsilon)
            + tuple(p.weight for p in linears[4:])
        )
        out.append((params, attn.scaling))
    return out


def decode_layers(lm, x: torch.Tensor, cos, sin, cache, slot: int, first, fused) -> torch.Tensor:
    """Every decoder layer for x (B, hidden): one ``decode_layer`` call each where ``fused`` (from
    :func:`fused_weights`) is given, else :func:`layer` op by op."""
    if fused is None:
        for i, block in enumerate(lm.model.layers):
            x = layer(block, x, cos, sin, cache.keys[i], cache.values[i], slot, first)
        return x
    for i, (params, scale) in enumerate(fused):
        x = torch.ops.prefalign_cpu.decode_layer(
            x, *params, cos, sin, cache.keys[i], cache.values[i], first, slot, scale
        )
    return x
