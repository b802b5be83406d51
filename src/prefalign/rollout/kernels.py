"""The built-in engine's one-token decode arithmetic, in forms that are faster on the CPU for small batches.

Every function computes what the model's own module computes (same weights, same operations up to float
rounding; the tests compare them):

* :func:`project`: a plain ``nn.Linear`` as ``(W @ x.T).T`` instead of ``F.linear`` (``x @ W.T``). For a
  decode step's few rows the BLAS kernel for a tall weight times a thin ``x.T`` is the faster one on the
  CPUs measured (``benchmarks/generate.py``; the vocabulary projection of SmolLM2, 49152 x 576, took
  about 18 ms instead of 25 ms at 8 rows on one thread). Anything else (a LoRA layer, a quantised
  linear, a subclass) is called as a module, so adapters keep applying.
* :func:`mlp`: the Llama gated MLP, ``down(act(gate(x)) * up(x))``, with :func:`project`.
* :func:`attend_one`: attention of one query token per row over the cached keys and values, as two
  matrix products and a softmax; grouped-query heads are reshaped into (kv_heads, group) so the keys and
  values are read once per key/value head instead of being repeated for every query head.
"""

from __future__ import annotations

import torch


def project(linear: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` for x (..., in) -> (..., out); a plain ``nn.Linear`` as (W @ x.T).T, anything else as a module."""
    if type(linear) is not torch.nn.Linear:
        return linear(x)
    flat = x.reshape(-1, x.shape[-1])  # (N, in)
    out = (linear.weight @ flat.T).T  # (N, out), column-major
    if linear.bias is not None:
        out = out + linear.bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def mlp(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Llama-style gated MLP (``gate_proj``, ``up_proj``, ``down_proj``, ``act_fn``) applied to x (..., hidden)."""
    return project(module.down_proj, module.act_fn(project(module.gate_proj, x)) * project(module.up_proj, x))


def attend_one(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Attention of one query token per row with grouped-query heads.

    q: (B, Hkv, group, D) the query heads of each key/value head side by side; keys, values:
    (B, Hkv, S, D); mask: None or (B, 1, 1, S) bool, True where a row may attend (at least one per row).
    Returns (B, Hkv, group, D), what ``scaled_dot_product_attention`` returns for the same arguments.
    """
    scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(scale)  # (B, Hkv, group, S)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), values)
