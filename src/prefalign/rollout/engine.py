"""The built-in generation engine: a decode loop of its own for Llama-architecture causal LMs.

What it does differently from Hugging Face ``generate`` (same model modules, same arithmetic per layer):

* **Prefill once per prompt**: each distinct prompt of a chunk runs through the model once (the
  vocabulary projection on each prompt's last position only) and its keys and values are copied into
  the rows of all of that prompt's samples (:mod:`prefalign.rollout.prefill`). Models of
  :data:`~prefalign.rollout.prefill.PACKED_PREFILL_MIN_PARAMS` and up run the prompts packed into one
  sequence (positions restarting per prompt, causal attention on each prompt's own span; SmolLM2's
  prefill of the benchmark's prompts 15-18% faster than padded groups), a start all the prompts share
  (a chat template's system prompt) run once before them; smaller ones go through Hugging Face's
  forward, distinct prompts of similar length
  sharing a right-padded forward, grouped to weigh padding against the per-forward cost. ``generate``
  re-encodes every sample's copy of the prompt, left-padded to the longest prompt of the batch. (The
  study's tiny world has 128 distinct short prompts per chunk: one forward per prompt made its PPO job's
  prefill 7x slower than grouped forwards.)
* **A static KV cache**: one (B, kv_heads, P + max_new_tokens, head_dim) buffer per layer and for
  keys and values, allocated once per chunk; prompts are right-aligned at slot P (left padding
  masked out), so step t writes every row's new key at slot P + t in one slice assignment. Nothing
  is concatenated or copied as the sequences grow.
* **Attention over each row's own slots**: the cache holds the rows longest prompt first, cut into runs
  of similar prompt length (:func:`attention_buckets`); each run attends from its longest prompt's
  first slot on, so a short prompt's row does not read the masked-out slots before it (on the 8 / 32
  HH-RLHF prompts of the benchmark the mean prompt is 2.4 / 2.7x shorter than the longest; decode 3% /
  11% faster in an A/B in one process). Logits and samples keep the caller's row order.
* **A plain decode loop**: per token, the embedding, rotary embedding, per layer the two norms, the
  q/k/v/o and MLP projections and the vocabulary projection (:mod:`prefalign.rollout.kernels`: a plain
  ``nn.Linear``'s weight as ``W @ x.T`` where that measured faster than ``F.linear`` for a few rows on
  the CPU, else ``F.linear``; any other layer, e.g. a LoRA one, called as the model's own module, so
  adapters apply) and attention as two matrix products on the key/value heads (grouped-query heads
  packed, as Hugging Face does for one query token); no per-step mask building, logits processors or
  cache objects. Where :func:`prefalign.rollout.compiled.compiled_attention` (float32 on an AVX2 CPU,
  weights that stream from memory), the layers run on the compiled kernels of
  :mod:`prefalign.rollout.cpu_kernels` instead (:mod:`prefalign.rollout.compiled`): the projections, the
  RMS norms, the gated SiLU, and the rotary embedding + cache write + attention of each row over its own
  slots, a whole plain layer in one call (SmolLM2 at 8 rows: a decode step 69-80 ms against 170-174 ms
  without the kernels; with a plain layer in one call, 39-49 ms against 51-57 ms op by op).
* **Sampling** (:mod:`prefalign.rollout.sampling`) on the logits the step produced: greedy argmax;
  temperature scaling in place; top-k on the k largest logits only; the log-probability of each
  chosen token under the full softmax at the sampling temperature is recorded (the rollout's
  ``logprobs``), so PPO needs no separate forward pass for them.

Supported: ``model_type`` in :data:`SUPPORTED_MODEL_TYPES` (Llama and the models that share its
layer: SmolLM2, TinyLlama, Llama 2/3), also wrapped by peft (LoRA). Everything else goes to
Hugging Face ``generate`` (:func:`prefalign.rollout.generate.generate` decides).
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from prefalign.rollout import compiled, kernels
from prefalign.rollout.batching import length_groups
from prefalign.rollout.prefill import StaticCache, prefill
from prefalign.rollout.sampling import next_tokens

SUPPORTED_MODEL_TYPES = ("llama",)


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The ``*ForCausalLM`` inside ``model`` (itself, or the base model of a peft wrapper)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model: torch.nn.Module) -> bool:
    """Whether the built-in engine can run ``model`` (else use Hugging Face ``generate``)."""
    lm = causal_lm(model)
    config = getattr(lm, "config", None)
    return (
        config is not None
        and getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES
        and getattr(config, "pretraining_tp", 1) == 1
        and hasattr(lm, "model")
        and hasattr(lm, "lm_head")
    )


#: a decode attention call's fixed cost in cache slots of one row, which :func:`attention_buckets` weighs against
#: the slots a shorter prompt would skip: set by estimate, not tuned (a call's few small torch ops, some tens of us,
#: against ~0.12 us per slot and row: SmolLM2, 8 rows x 400 slots took ~0.4 ms per layer on the CPU)
ATTENTION_CALL_SLOTS = 256


def attention_buckets(lengths: list[int], start: int) -> list[tuple[int, int, int]]:
    """Contiguous runs of rows sorted by decreasing prompt length, as (first row, end row, first cache slot).

    Prompts are right-aligned at ``start``, so a run whose longest prompt has n tokens needs slots
    ``start - n`` onwards only; a short prompt's row in a run of its own skips the slots before its
    prompt instead of reading masked-out keys and values. The runs minimise slots read plus
    :data:`ATTENTION_CALL_SLOTS` per run (:func:`prefalign.rollout.batching.length_groups`).
    """
    groups = length_groups(lengths, max_rows=len(lengths), overhead_tokens=ATTENTION_CALL_SLOTS)
    return [(min(g), max(g) + 1, start - max(lengths[i] for i in g)) for g in groups]


def _attend(attn, h, cos, sin, keys: torch.Tensor, values: torch.Tensor, slot: int, mask, buckets) -> torch.Tensor:
    """Self-attention of one new token per row (h: (B, 1, hidden)) over cache slots 0..slot; writes slot.

    buckets: :func:`attention_buckets` of the rows (sorted by decreasing prompt length): each run of rows
    attends from its own first slot on.
    """
    rows, dim = h.shape[0], attn.head_dim
    q = kernels.project(attn.q_proj, h).view(rows, 1, -1, dim).transpose(1, 2)  # (B, Hq, 1, D)
    k = kernels.project(attn.k_proj, h).view(rows, 1, -1, dim).transpose(1, 2)  # (B, Hkv, 1, D)
    v = kernels.project(attn.v_proj, h).view(rows, 1, -1, dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    keys[:, :, slot] = k[:, :, 0]
    values[:, :, slot] = v[:, :, 0]
    q = q.reshape(rows, k.shape[1], -1, dim)  # (B, Hkv, group, D): the query heads of one KV head side by side
    parts = [
        kernels.attend_one(
            q[a:b], keys[a:b, :, lo : slot + 1], values[a:b, :, lo : slot + 1], mask[a:b, ..., lo:], attn.scaling
        )
        for a, b, lo in buckets
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return kernels.project(attn.o_proj, out.reshape(rows, 1, -1))  # (B, Hkv, group, D) -> (B, 1, hidden)


def decode_step(
    lm,
    cache: StaticCache,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    slot: int,
    mask,
    buckets=None,
    order=None,
    first=None,
    fused=None,
) -> torch.Tensor:
    """(B, V) next-token logits after feeding ``tokens`` (B,) at ``positions`` (B,) into cache ``slot``.

    mask: (B, 1, 1, slot + 1) bool, True on the slots each row attends to (its prompt and its tokens).
    buckets: runs of rows that attend from a later slot on (:func:`attention_buckets`; None: every row
    from slot 0). order: the cache rows are these rows of the output (None: the same order), so the
    logits come out in the caller's row order. first: (B,) long, each cache row's first slot, to run the
    attention through the compiled kernels (:func:`prefalign.rollout.compiled.compiled_attention` says where; None:
    torch's products); fused: :func:`prefalign.rollout.compiled.fused_weights` (one kernel call a layer), else None.
    The layer arithmetic is Hugging Face's ``LlamaDecoderLayer`` (pre-norm, residual first).
    """
    inner = lm.model
    buckets = buckets or [(0, tokens.shape[0], 0)]
    x = inner.embed_tokens(tokens[:, None])  # (B, 1, hidden)
    cos, sin = inner.rotary_emb(x, positions[:, None])
    if first is not None:  # 2-D rows through the compiled kernels
        x, rows = x[:, 0], x.shape[0]
        cos, sin = cos.reshape(rows, -1), sin.reshape(rows, -1)
        x = compiled.norm(inner.norm, compiled.decode_layers(lm, x, cos, sin, cache, slot, first, fused))
        if order is not None:
            x = torch.empty_like(x).index_copy_(0, order, x)
        return kernels.project(lm.lm_head, x).contiguous()
    for i, layer in enumerate(inner.layers):
        h = layer.input_layernorm(x)
        x = x + _attend(layer.self_attn, h, cos, sin, cache.keys[i], cache.values[i], slot, mask, buckets)
        x = x + kernels.mlp(layer.mlp, layer.post_attention_layernorm(x))
    x = inner.norm(x)[:, 0]
    if order is not None:
        x = torch.empty_like(x).index_copy_(0, order, x)  # cache row j is output row order[j]
    return kernels.project(lm.lm_head, x).contiguous()  # (B, V), row-major for the sampler


@torch.no_grad()
def generate_chunk(
    model: torch.nn.Module,
    rows: list[list[int]],
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` tokens for each prompt row; rows with equal prompts share one prefill.

    Returns (new tokens (B, L) long, their log-probabilities (B, L) float32 under the full softmax at
    ``temperature`` (1 for greedy)); after a row's first EOS (``eos_id``; None: never stop) its
    tokens are ``pad_id`` and log-probs 0, and the loop ends when every row has stopped.
    """
    lm = causal_lm(model)
    device = lm.lm_head.weight.device
    # the cache holds the rows longest prompt first (row j of the cache is row order[j] of the batch), so that
    # runs of similar length attend over their own slots only; logits and samples stay in the batch's order
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    distinct: dict[tuple[int, ...], list[int]] = {}
    for j, i in enumerate(order):
        distinct.setdefault(tuple(rows[i]), []).append(j)
    prompts = [list(p) for p in distinct]
    capacity = max(map(len, prompts)) + max_new_tokens
    cache, sorted_logits, start = prefill(lm, prompts, list(distinct.values()), len(rows), capacity, device)
    cache_order = torch.tensor(order, device=device)
    logits = torch.empty_like(sorted_logits).index_copy_(0, cache_order, sorted_logits)
    lengths = torch.tensor([len(rows[i]) for i in order], device=device)  # (B,) cache order
    buckets = attention_buckets(lengths.tolist(), start)
    first = (start - lengths) if compiled.compiled_attention(lm, cache) else None
    fused = compiled.fused_weights(lm) if first is not None else None
    slots = torch.arange(start + max_new_tokens, device=device)
    mask = (slots[None, :] >= (start - lengths)[:, None])[:, None, None, :]  # (B, 1, 1, S): prompt slots and beyond
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        if step > 0:
            fed = tokens[-1].index_select(0, cache_order)  # the batch's last tokens in cache order
            slot = start + step - 1
            logits = decode_step(
                lm, cache, fed, lengths + step - 1, slot, mask[..., : slot + 1], buckets, cache_order, first, fused
            )
        token, logprob = next_tokens(logits, temperature, top_k, top_p)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        logprobs.append(torch.where(done, torch.zeros_like(logprob), logprob))
        if eos_id is not None:
            done |= token == eos_id
            if bool(done.all()):
                break
    return torch.stack(tokens, dim=1).cpu(), torch.stack(logprobs, dim=1).cpu()
