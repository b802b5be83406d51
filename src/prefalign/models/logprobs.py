"""Per-token log-probabilities of a causal LM, aligned with the input tokens.

Convention used everywhere in prefalign: for ``input_ids`` of shape (B, T), ``token_logprobs[:, t]``
is ``log pi(input_ids[:, t] | input_ids[:, :t])``; position 0 has no prediction and is 0. A
``response_mask`` of shape (B, T) (1 on response tokens) selects the terms that count, so masks,
log-probs, values and rewards all index the same positions.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from prefalign.models.heads import _position_ids


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """log softmax(logits)[targets] without materialising the full (N, V) log-softmax at once.

    logits (..., V), targets (...) -> (...). Rows are processed in chunks of ``chunk_size``. Each chunk goes
    through ``log_softmax`` and a gather: its backward is one pass (softmax minus the one-hot), where
    ``gather - logsumexp`` recomputed the exponentials (forward + backward of 600 x 49,152 logits, one
    thread: 315 against 520 ms); autograd keeps one (chunk, V) tensor either way.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)
    out = torch.empty(flat_targets.shape, dtype=torch.float32, device=logits.device)
    for start in range(0, flat_logits.shape[0], chunk_size):
        block = torch.log_softmax(flat_logits[start : start + chunk_size].float(), dim=-1)
        out[start : start + chunk_size] = block.gather(1, flat_targets[start : start + chunk_size, None]).squeeze(1)
    return out.view(targets.shape)


def forward_logits(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int = 0
) -> torch.Tensor:
    """(B, T - first, V) logits for positions ``first..T-1`` (earlier positions are not projected)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
        logits_to_keep=input_ids.shape[1] - first if first > 0 else 0,
    )
    return out.logits


def _output_embeddings(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DDP / accelerate wrapper
    return inner.get_output_embeddings()


def response_logits(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, predicts: torch.Tensor
) -> torch.Tensor:
    """(n, V) logits at the n positions where ``predicts`` (B, T) bool is True, in row-major order.

    The model runs through its own ``forward`` (so DDP synchronises gradients); a pre-hook on its output
    embedding hands the vocabulary projection only those positions' hidden states, so no other position
    is projected (the projection is ~20% of a SmolLM2 forward per position, and the (B, T, V) logits
    and their log-softmax are the largest tensors of a pass).
    """
    head = _output_embeddings(model)

    def keep_positions(_module, args):
        return (args[0][predicts], *args[1:])

    handle = head.register_forward_pre_hook(keep_positions)
    try:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=_position_ids(attention_mask),
            use_cache=False,
            logits_to_keep=0,
        )
    finally:
        handle.remove()
    return out.logits


def _response_only(model, input_ids, attention_mask, response_mask, temperature, return_entropy, support, top_k):
    """:func:`token_logprobs` with the vocabulary projection on the response tokens' positions only."""
    batch, length = input_ids.shape
    predicts = torch.zeros(batch, length, dtype=torch.bool, device=input_ids.device)
    predicts[:, :-1] = response_mask[:, 1:].bool()  # position t predicts response token t + 1
    logits = response_logits(model, input_ids, attention_mask, predicts)  # (n, V)
    if temperature != 1.0:
        logits = logits / temperature
    tokens = torch.zeros(batch, length, dtype=torch.bool, device=input_ids.device)
    tokens[:, 1:] = predicts[:, :-1]  # the response tokens, same order as the logits' rows
    targets = input_ids[tokens]  # (n,)
    own_support = None
    if top_k > 0 and support is None:
        k = min(top_k, logits.shape[-1])
        with torch.no_grad():
            picked_support = top_k_support(logits, k)  # (n, k)
        own_support = torch.zeros(batch, length, k, dtype=torch.long, device=logits.device)
        own_support[tokens] = picked_support
        support = own_support
    if support is not None:
        active = torch.ones(targets.shape, dtype=torch.bool, device=logits.device)
        logits = _restrict(logits, support.to(logits.device)[tokens], targets, active)
    out = torch.zeros(batch, length, dtype=torch.float32, device=input_ids.device)
    out[tokens] = gather_logprobs(logits, targets)
    result: tuple = (out,)
    if return_entropy:
        entropy = torch.zeros_like(out)
        with torch.no_grad():
            logp = torch.log_softmax(logits.float(), dim=-1)
            plogp = logp.exp() * logp if support is None else torch.special.xlogy(logp.exp(), logp.exp())
            entropy[tokens] = -plogp.sum(-1)
        result += (entropy,)
    if own_support is not None:
        result += (own_support,)
    return result if len(result) > 1 else result[0]


def top_k_support(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(..., k) ids of the k largest logits: the tokens a top-k sampler may draw (Hugging Face's
    ``TopKLogitsWarper`` keeps the same set, up to ties at the k-th logit)."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1).indices


def _restrict(logits: torch.Tensor, support: torch.Tensor, targets: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Logits with every token outside ``support`` set to -inf, where ``active`` (positions elsewhere keep the full
    vocabulary). The target token is always kept: a sampled token at the k-th boundary can fall out of the set by
    rounding between the sampler's forward pass and this one, and must not get probability 0."""
    keep = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    keep.scatter_(-1, support.long(), True)
    keep.scatter_(-1, targets[..., None], True)
    keep |= ~active.bool()[..., None]
    return logits.masked_fill(~keep, float("-inf"))


def token_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    support: torch.Tensor | None = None,
    top_k: int = 0,
    response_only: bool = False,
):
    """(B, T) log-probabilities (and optionally (B, T) entropies) aligned with ``input_ids``.

    ``response_only`` (needs ``response_mask``): project onto the vocabulary only the positions that
    predict a response token (:func:`response_logits`) instead of every position from the first
    response onwards; the same values up to float rounding (tested), less work and memory.

    When ``response_mask`` is given, only logits from the first response position onwards are
    computed (the prompt part of the vocabulary projection is skipped), and positions outside the
    mask are set to 0. ``temperature`` divides the logits, matching a sampler that used it.

    Top-k (the distribution of a top-k sampler, as ReaLHF's logits mask): ``support`` (B, T, k) long
    gives, for each response token t, the ids it was drawn among; every other token gets probability
    0 and the softmax is over the support. ``top_k > 0`` (without ``support``) takes the support from
    this model's own k largest logits and returns ``(logprobs, support)`` (or ``(logprobs, entropy,
    support)``): called on the sampling policy, this is the sampler's distribution. Both need
    ``response_mask``; prompt positions of the support are 0 and unused.
    """
    if response_only and response_mask is not None:
        return _response_only(
            model, input_ids, attention_mask, response_mask, temperature, return_entropy, support, top_k
        )
    batch, length = input_ids.shape
    first = 0
    if response_mask is not None and bool(response_mask.any()):
        first_response = int(response_mask.float().argmax(dim=1).min().item())
        first = max(first_response - 1, 0)
    logits = forward_logits(model, input_ids, attention_mask, first)  # (B, T-first, V)
    logits = logits[:, :-1]  # position t predicts token t+1
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, first + 1 :]
    own_support = None
    if (support is not None or top_k > 0) and response_mask is None:
        raise ValueError("top-k log-probs need a response_mask")
    if top_k > 0 and support is None:
        own_support = torch.zeros(batch, length, min(top_k, logits.shape[-1]), dtype=torch.long, device=logits.device)
        with torch.no_grad():
            own_support[:, first + 1 :] = top_k_support(logits, top_k)
        support = own_support
    if support is not None:
        logits = _restrict(logits, support[:, first + 1 :].to(logits.device), targets, response_mask[:, first + 1 :])
    picked = gather_logprobs(logits, targets)  # (B, T-first-1)
    out = torch.zeros(batch, length, dtype=torch.float32, device=input_ids.device)
    out[:, first + 1 :] = picked
    entropy = None
    if return_entropy:
        entropy = torch.zeros_like(out)
        with torch.no_grad():
            logp = torch.log_softmax(logits.float(), dim=-1)
            plogp = logp.exp() * logp if support is None else torch.special.xlogy(logp.exp(), logp.exp())
            entropy[:, first + 1 :] = -plogp.sum(-1)
    if response_mask is not None:
        out = out * response_mask
        if entropy is not None:
            entropy = entropy * response_mask
    result = (out, entropy) if return_entropy else (out,)
    if own_support is not None:
        result += (own_support,)
    return result if len(result) > 1 else result[0]


def sequence_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """(B,) sum of the response tokens' log-probabilities."""
    return token_logprobs(model, input_ids, attention_mask, response_mask).sum(dim=1)
