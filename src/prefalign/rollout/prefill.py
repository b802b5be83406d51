"""The built-in engine's prefill: each distinct prompt once, its keys and values into a static cache.

Models of :data:`PACKED_PREFILL_MIN_PARAMS` and up run the prompts packed into one sequence
(:func:`_packed_layers`); smaller ones (the study's tiny worlds) go through Hugging Face's forward in
right-padded groups of similar length. Used by :mod:`prefalign.rollout.engine`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from prefalign.rollout import compiled
from prefalign.rollout.batching import length_groups


class StaticCache:
    """Per layer, keys and values as (B, kv_heads, capacity, head_dim) buffers; prompts right-aligned at ``start``."""

    def __init__(self, num_layers: int, rows: int, kv_heads: int, capacity: int, head_dim: int, dtype, device):
        shape = (rows, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]


#: the fixed cost of one prefill forward, in floating-point operations: about 2 ms of Python and module
#: dispatch at ~150 GFLOP/s. :func:`prefill` weighs it against padded tokens (2 x parameters FLOPs each).
PREFILL_CALL_FLOPS = 3e8


def prefill_overhead_tokens(lm) -> int:
    """One prefill forward's fixed cost in tokens of this model (~350 for the study's tiny model, 1 for SmolLM2)."""
    params = sum(p.numel() for p in lm.parameters())
    return max(1, min(4096, round(PREFILL_CALL_FLOPS / (2 * max(params, 1)))))


#: models of at least this many parameters prefill packed (:func:`_packed_layers`): SmolLM2-135M's prefill of the
#: benchmark's 8 / 32 HH-RLHF prompts took 3.6-3.9 / 13.9 s packed against 4.4-4.9 / 16.0-17.0 s in padded groups
#: (the products on all the prompts' tokens at once run nearer the machine's peak than on one short prompt each).
#: Smaller models (the study's tiny worlds, under a million) keep the padded groups, whose runs stay as they were.
PACKED_PREFILL_MIN_PARAMS = 10_000_000

#: the most prompt tokens in one packed prefill forward (a longer prompt goes alone)
PREFILL_PACK_TOKENS = 4096


def packs_prompts(lm) -> bool:
    """Whether :func:`prefill` packs the prompts into one sequence (:data:`PACKED_PREFILL_MIN_PARAMS`)."""
    return sum(p.numel() for p in lm.parameters()) >= PACKED_PREFILL_MIN_PARAMS


#: a start that all the distinct prompts of a chunk share (a chat template's system prompt: 24 tokens of each of
#: SmolLM2's HH-RLHF prompts, 16-18% of the benchmark's prompt tokens) of at least this many tokens runs once
#: (:func:`shared_prefix`), its keys and values copied to every prompt's slots; shorter ones are not worth a forward
SHARED_PREFIX_MIN_TOKENS = 8


def shared_prefix(prompts: list[list[int]]) -> int:
    """Leading tokens all ``prompts`` share, when at least :data:`SHARED_PREFIX_MIN_TOKENS` (else 0).

    At most the shortest prompt's length less one, so that every prompt keeps a token of its own whose
    logits come out of the packed forward; 0 for fewer than two prompts.
    """
    if len(prompts) < 2:
        return 0
    first, limit = prompts[0], min(map(len, prompts)) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n if n >= SHARED_PREFIX_MIN_TOKENS else 0


def _packed_layers(lm, prompts: list[list[int]], device, prefix=None):
    """The prompts run as one sequence, each attending to itself only; returns (the final-norm hidden state of each
    prompt's last token (P, hidden), per layer (keys, values) of all the tokens (Hkv, T, D), the prompts' starts).

    Hugging Face's ``LlamaDecoderLayer`` arithmetic, the model's own modules (LoRA layers apply); the
    rotary positions restart at 0 for each prompt and attention is ``scaled_dot_product_attention``
    (causal) on each prompt's own span, so each prompt gets what a forward of it alone computes, up to
    float rounding in the larger products. prefix: per layer (keys, values) (Hkv, S, D) of S tokens that
    come before each of ``prompts`` (:func:`shared_prefix`): positions then start at S and each prompt
    attends to the prefix and to itself (the keys and values returned are the prompts' own).
    """
    inner = lm.model
    lengths = [len(p) for p in prompts]
    total = sum(lengths)
    skip = 0 if prefix is None else prefix[0][0].shape[1]
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    ids = torch.tensor([t for p in prompts for t in p], dtype=torch.long, device=device)[None]  # (1, T)
    positions = torch.cat([torch.arange(skip, skip + n, device=device) for n in lengths])[None]
    masks = {n: torch.ones(n, skip + n, dtype=torch.bool, device=device).tril(skip) for n in set(lengths)}
    x = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(x, positions)
    kv = []
    for i, layer in enumerate(inner.layers):
        attn, dim = layer.self_attn, layer.self_attn.head_dim
        h = layer.input_layernorm(x)
        q, k, v = (proj(h).view(1, total, -1, dim).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        kv.append((k[0], v[0]))
        spans = [
            _attend_span(attn, q, k, v, a, n, None if prefix is None else (prefix[i], masks[n]))
            for a, n in zip(starts, lengths)
        ]
        out = torch.cat(spans, dim=2).transpose(1, 2).reshape(1, total, -1)
        x = x + attn.o_proj(out)
        x = x + compiled.mlp(layer.mlp, layer.post_attention_layernorm(x))
    last = torch.tensor([a + n - 1 for a, n in zip(starts, lengths)], device=device)
    return inner.norm(x[0, last]), kv, starts


def _attend_span(attn, q, k, v, a: int, n: int, prefix):
    """Causal attention of the packed tokens a..a+n (one prompt) over themselves, after ``prefix``'s
    ((keys, values) (Hkv, S, D), (n, S + n) mask) when given."""
    q, k, v = q[:, :, a : a + n], k[:, :, a : a + n], v[:, :, a : a + n]
    if prefix is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling, enable_gqa=True)
    (pk, pv), mask = prefix
    k, v = torch.cat([pk[None], k], dim=2), torch.cat([pv[None], v], dim=2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, enable_gqa=True)


def _packed_prefill(lm, prompts: list[list[int]], owners: list[list[int]], rows: int, capacity: int, device):
    """:func:`prefill` with the prompts packed (longest first, up to :data:`PREFILL_PACK_TOKENS` a forward), a
    :func:`shared_prefix` of theirs run once before them."""
    lengths = [len(p) for p in prompts]
    start = max(lengths)
    skip = shared_prefix(prompts)
    prefix = _packed_layers(lm, [prompts[0][:skip]], device)[1] if skip else None
    packs: list[list[int]] = []
    filled = 0  # tokens in the last pack
    for i in sorted(range(len(prompts)), key=lambda i: -lengths[i]):
        if packs and filled + lengths[i] - skip <= PREFILL_PACK_TOKENS:
            packs[-1].append(i)
            filled += lengths[i] - skip
        else:
            packs.append([i])
            filled = lengths[i] - skip
    cache = last = None
    for pack in packs:
        hidden, kv, starts = _packed_layers(lm, [prompts[i][skip:] for i in pack], device, prefix)
        logits = lm.lm_head(hidden).float()
        if cache is None:
            k0 = kv[0][0]  # (Hkv, T, D)
            cache = StaticCache(len(kv), rows, k0.shape[0], capacity, k0.shape[2], k0.dtype, device)
            last = torch.empty(rows, logits.shape[-1], dtype=torch.float32, device=device)
        for j, (i, a) in enumerate(zip(pack, starts)):
            n, targets = lengths[i], torch.tensor(owners[i], device=device)
            for layer, own in enumerate(kv):
                for part, buffers in enumerate((cache.keys, cache.values)):
                    buffer = buffers[layer]
                    if prefix is not None:  # the shared prefix, then the prompt's own tokens
                        buffer[targets, :, start - n : start - n + skip] = prefix[layer][part][None].to(buffer.dtype)
                    own_part = own[part][None, :, a : a + n - skip]
                    buffer[targets, :, start - n + skip : start] = own_part.to(buffer.dtype)
            last[targets] = logits[j]
    return cache, last, start


def prefill(lm, prompts: list[list[int]], owners: list[list[int]], rows: int, capacity: int, device):
    """Run each distinct prompt once; returns (cache, (B, V) logits of each row's last prompt token, start slot).

    Packed (:func:`_packed_prefill`) where :func:`packs_prompts`; else distinct prompts of similar length
    share a forward (:func:`prefalign.rollout.batching.length_groups`, padded work against
    :func:`prefill_overhead_tokens` per forward): right-padded, so under the causal mask no real position
    sees a padding token and no attention mask is needed; each prompt's keys and values are its first
    ``len(prompt)`` positions, its logits those of its last real position (only those rows go through the
    vocabulary projection).
    """
    if packs_prompts(lm):
        return _packed_prefill(lm, prompts, owners, rows, capacity, device)
    lengths = [len(p) for p in prompts]
    start = max(lengths)
    cache = None
    last = None
    for group in length_groups(lengths, max_rows=len(prompts), overhead_tokens=prefill_overhead_tokens(lm)):
        width = lengths[group[0]]  # groups come longest first
        ids = torch.tensor([prompts[i] + [0] * (width - lengths[i]) for i in group], dtype=torch.long, device=device)
        out = lm.model(input_ids=ids, use_cache=True)
        ends = torch.tensor([lengths[i] - 1 for i in group], device=device)
        hidden = out.last_hidden_state[torch.arange(len(group), device=device), ends]  # (g, hidden), final norm applied
        logits = lm.lm_head(hidden).float()
        layers = (out.cache if hasattr(out, "cache") else out.past_key_values).layers
        if cache is None:
            k0 = layers[0].keys
            cache = StaticCache(len(layers), rows, k0.shape[1], capacity, k0.shape[3], k0.dtype, device)
            last = torch.empty(rows, logits.shape[-1], dtype=torch.float32, device=device)
        # every cache row of the group's prompts: its prompt's position j in the group and its length n
        targets = torch.tensor([r for i in group for r in owners[i]], device=device)
        source = torch.tensor([j for j, i in enumerate(group) for _ in owners[i]], device=device)
        n = torch.tensor([lengths[i] for i in group for _ in owners[i]], device=device)
        # slot start - width + t holds position t - (width - n) of the prompt (nothing when that is negative)
        position = torch.arange(width, device=device)[None, :] - (width - n)[:, None]  # (R, width)
        valid = (position >= 0)[:, None, :, None]
        for buffers, name in ((cache.keys, "keys"), (cache.values, "values")):
            for buffer, layer in zip(buffers, layers):
                kv = getattr(layer, name)[source]  # (R, H, width, D)
                index = position.clamp(min=0)[:, None, :, None].expand(-1, kv.shape[1], -1, kv.shape[3])
                buffer[targets, :, start - width : start] = (kv.gather(2, index) * valid).to(buffer.dtype)
        last[targets] = logits[source]
    return cache, last, start
