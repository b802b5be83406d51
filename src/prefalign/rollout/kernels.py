"""The built-in engine's one-token decode arithmetic, in forms that are faster on the CPU for small batches.

Every function computes what the model's own module computes (same weights, same operations up to float
rounding; the tests compare them):

* :func:`project`: a plain ``nn.Linear`` through the compiled :func:`prefalign.rollout.cpu_kernels.small_linear`
  for a decode step's few float32 rows and a weight over 384 KB on a CPU where it builds (about 2x the BLAS
  at 8 rows; see that module), else as ``(W @ x.T).T`` instead of ``F.linear`` (``x @ W.T``) where that
  BLAS form measured faster for a decode step's few rows (SmolLM2-135M, fp32, this project's CPU machine,
  an A/B of the decode step in one process): always for a tall weight such as the vocabulary projection
  (49152 x 576: ~18 ms instead of ~25 ms at 8 rows, one thread), and for every projection when torch runs
  on several threads (8 rows, 2 threads on 2 cores busy with other work: best 360 ms per step against
  475 ms for ``F.linear``); on one thread the small q/k/v/o and MLP projections stay on ``F.linear``
  (104 ms per step against 129 ms). Anything but a plain ``nn.Linear`` (a LoRA layer, a quantised linear,
  a subclass) is called as its module, so adapters keep applying.
* :func:`mlp`: the Llama gated MLP, ``down(act(gate(x)) * up(x))``, with :func:`project`.
* :func:`attend_one`: attention of one query token per row over the cached keys and values, as two
  matrix products and a softmax; grouped-query heads are reshaped into (kv_heads, group) so the keys and
  values are read once per key/value head instead of being repeated for every query head.
"""

from __future__ import annotations

import torch

from prefalign.rollout import cpu_kernels

#: up to this many rows :func:`project` may use the weight-first product (a decode step's batch)
WEIGHT_FIRST_MAX_ROWS = 64


def weight_first(weight: torch.Tensor, rows: int) -> bool:
    """Whether ``(W @ x.T).T`` is the faster form for ``rows`` rows (see the module docstring's measurements)."""
    return rows <= WEIGHT_FIRST_MAX_ROWS and (torch.get_num_threads() > 1 or weight.shape[0] >= 8 * weight.shape[1])


def project(linear: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` for x (..., in) -> (..., out); a plain ``nn.Linear`` through the compiled kernel or as
    (W @ x.T).T where that is faster (:func:`weight_first`), anything else as a module."""
    if type(linear) is not torch.nn.Linear:
        return linear(x)
    flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # (N, in)
    if flat.shape[0] <= WEIGHT_FIRST_MAX_ROWS and cpu_kernels.usable(linear.weight, flat):
        out = cpu_kernels.small_linear(flat, linear.weight)
        if linear.bias is not None:
            out = out + linear.bias
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], out.shape[-1])
    if not weight_first(linear.weight, flat.shape[0]):
        return linear(x)
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
