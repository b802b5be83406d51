"""The generation engine's compiled CPU kernels (``csrc/decode_kernels.cpp``), for a decode step's few rows.

* :func:`small_linear`, ``x @ W.T``: the CPU BLAS that torch calls runs it for 8 rows of x at ~5-6 GB/s of
  weights on this project's machine (SmolLM2-135M, 2 threads), where the machine streams 15-20 GB/s: the
  products of one decode step took 107-116 ms, this kernel 48-51 ms (32 rows: 133-140 against 100-106 ms).
* :func:`decode_attention`: the rotary embedding, the cache write and each row's attention over its own
  cache slots in one call (about 40 small torch ops a layer before).
* :func:`rms_norm`: Hugging Face's ``LlamaRMSNorm`` in one call (about 9 torch ops).
* :func:`silu_mul`: a gated MLP's ``silu(gate) * up`` in one pass (two torch ops, three passes).
* ``decode_layer`` (called by :mod:`prefalign.rollout.compiled`): a whole plain Llama decoder layer for a decode
  step's rows in one call: the norms, products, attention and residual adds above, from C++.
* :func:`draw`: the sampler's full-vocabulary inverse-CDF draw and log-probability in one call per step.

C++ with AVX2 and FMA intrinsics, compiled on first use with ``torch.utils.cpp_extension`` (a C++ compiler
and ``ninja``, which the ``ninja`` package on PyPI provides; a few tens of seconds, once: the build is kept
under ``$PREFALIGN_CACHE_DIR/torch_extensions`` and reused while the source and torch version stay the same).
``scripts/setup.sh`` builds it ahead.

Where it cannot be used the engine keeps torch's own products, with one warning saying why: a CPU
without AVX2 (:func:`torch.backends.cpu.get_cpu_capability`), no compiler or ``ninja``, a failed build,
or ``PREFALIGN_CPU_KERNELS=0`` in the environment (switched off on purpose; no warning). The kernel sums
each output over k in order and then across its 8 lanes: the same products as the BLAS up to float
rounding (the tests compare them).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch

from prefalign.paths import cache_dir

SOURCE = Path(__file__).with_name("csrc") / "decode_kernels.cpp"

#: the smallest weight (elements) sent to the kernel: 384 KB of float32, more than a core's share of the cache, so
#: the weight streams from memory, which is what the kernel does better. Smaller weights stay on the BLAS, which
#: computes faster from the cache at 32-64 rows (the study's tiny world, 128 x 384: 1 thread, 64 rows, 148-187 us
#: against 117-144; at 8 rows the two were level). SmolLM2-135M's smallest projection has 110,592 elements.
MIN_WEIGHT_ELEMENTS = 98_304
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off"]

_lock = threading.Lock()
_state: dict[str, object] = {}


def _why_not() -> str | None:
    """Why the kernel cannot run here (None: it may: build it)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return f"the CPU has no AVX2 (torch reports {capability!r})"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler (c++ or $CXX) on the PATH"
    return None


def _ninja_on_path() -> None:
    """Make ``ninja`` from this interpreter's environment findable (torch runs ``ninja`` from the PATH)."""
    if shutil.which("ninja") is not None:
        return
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        if (folder / "ninja").exists():
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def build(verbose: bool = False) -> None:
    """Compile (or find already compiled) and load the kernel; raises with the compiler's reason on failure."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    folder = cache_dir() / "torch_extensions" / f"decode_kernels-torch{torch.__version__.split('+')[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name="prefalign_decode_kernels",
        sources=[str(SOURCE)],
        extra_cflags=_FLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=verbose,
    )


def available() -> bool:
    """Whether :func:`small_linear` can run (built and loaded on the first call; False, with a warning, if not)."""
    if "ok" in _state:
        return bool(_state["ok"])
    with _lock:
        if "ok" not in _state:
            if os.environ.get("PREFALIGN_CPU_KERNELS", "1") == "0":
                _state["ok"] = False
                return False
            reason = _why_not()
            if reason is None:
                try:
                    build()
                except Exception as exc:  # a missing ninja, a compiler error: torch's own products still work
                    reason = f"its build failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]})"
            if reason is not None:
                warnings.warn(
                    f"prefalign: the generation engine's CPU kernel is not used: {reason}; decoding falls back to "
                    "torch's matrix products (about 2x slower for a few rows). Set PREFALIGN_CPU_KERNELS=0 to "
                    "silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            _state["ok"] = reason is None
    return bool(_state["ok"])


def usable(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` may go to :func:`small_linear`: float32 CPU tensors, K a multiple of 8, a weight of
    at least :data:`MIN_WEIGHT_ELEMENTS`, no grad."""
    return (
        weight.numel() >= MIN_WEIGHT_ELEMENTS
        and weight.dtype == torch.float32
        and x.dtype == torch.float32
        and weight.device.type == "cpu"
        and x.device.type == "cpu"
        and weight.dim() == 2
        and weight.shape[1] % 8 == 0
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
        and available()
    )


def small_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for x (B, K), weight (N, K), float32 on the CPU: (B, N), row-major. No autograd."""
    return torch.ops.prefalign_cpu.small_linear(x, weight)


def decode_attention(q, k, v, cos, sin, keys, values, first, slot: int, scale: float) -> torch.Tensor:
    """One decode step's attention, each row over its own cache slots, after writing its new key and value.

    q: (B, Hq * D) and k, v: (B, Hkv * D) the projections before the rotary embedding; cos, sin: (B, D);
    keys, values: (B, Hkv, S, D) contiguous float32 cache buffers (slot ``slot`` is written: the rotated k
    and v); first: (B,) each row's first slot (its prompt right-aligned before the new tokens). Returns
    (B, Hq * D): per query head, softmax(q . K * scale) . V over slots first[b] .. slot, query head j on
    key/value head j // (Hq / Hkv). The rotary embedding is Hugging Face's to the bit; the rest equals
    its attention up to float rounding (the tests compare them).
    """
    return torch.ops.prefalign_cpu.decode_attention(q, k, v, cos, sin, keys, values, first, slot, scale)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` for float32 CPU tensors of one shape, in one pass (torch's formula for the SiLU,
    ``g / (1 + exp(-g))``, with an exponential within a few ulp of torch's)."""
    return torch.ops.prefalign_cpu.silu_mul(gate, up)


def draw(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of float32 logits (B, V) (divided by ``temperature`` in place) by inverse CDF with the
    uniforms u (B,) in [0, 1): the first id whose running sum of ``exp(logit - max)`` exceeds ``u * total``, as
    :func:`prefalign.rollout.sampling._draw_full`; returns (ids (B,) long, log-probs (B,) float32)."""
    return torch.ops.prefalign_cpu.draw(logits, temperature, u)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face's ``LlamaRMSNorm`` on float32 x (..., H): ``weight * (x * rsqrt(mean(x^2) + eps))``, one call."""
    return torch.ops.prefalign_cpu.rms_norm(x, weight, eps)
