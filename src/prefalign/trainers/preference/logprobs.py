"""Sequence log-probabilities of encoded rankings under a model: the two layouts (each response after its own copy
of the prompt, or the shared-prompt single forward pass), response-only logits, and the cached tables of a
reference (:func:`logps_table`, :func:`distributed_logps_table`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefalign.models.heads import _position_ids
from prefalign.models.logprobs import gather_logprobs, sequence_logprobs
from prefalign.trainers.logging import phase_progress
from prefalign.trainers.preference.batches import (
    PACKED,
    ROW_PER_RESPONSE,
    SHARED_PROMPT,
    EncodedRanking,
    collate_group,
    length_sorted_groups,
)


def _transforms_logits(model: torch.nn.Module) -> bool:
    config = getattr(model, "config", None)
    return any(getattr(config, key, None) not in (None, 1.0) for key in ("final_logit_softcapping", "logit_scale"))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper or a DeepSpeed engine (FSDP2 shards the model in place: nothing to unwrap)."""
    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel) or type(model).__name__ == "DeepSpeedEngine"
    return model.module if wrapped else model


def response_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) sum over each row's response tokens of log pi(y_t | x, y_<t), from one forward pass.

    Only hidden states that predict a response token are projected onto the vocabulary. The call
    goes through ``model`` itself (a DDP wrapper included), so gradient synchronisation works.
    """
    input_ids, attention_mask, response_mask = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    inner = _unwrap(model)
    if _transforms_logits(inner):
        return sequence_logprobs(model, input_ids, attention_mask, response_mask)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
        output_hidden_states=-1,
        logits_to_keep=1,
    )
    hidden = out.hidden_states[-1]  # (N, T, H), after the final norm
    predicts = response_mask[:, 1:].bool()  # (N, T-1): position t predicts response token t+1
    states = hidden[:, :-1][predicts]  # (M, H), M = response tokens in the batch
    targets = input_ids[:, 1:][predicts]  # (M,)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(predicts)[predicts]  # (M,)
    logits = inner.get_output_embeddings()(states)  # (M, V)
    token_logps = gather_logprobs(logits, targets)  # (M,) float32
    return torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps
    )


def choose_layout(model: torch.nn.Module, share_prompt: bool, pack: bool = True) -> str:
    """The shared-prompt layout (``pack``: several examples to a row) where the model takes a custom 4D mask (sdpa
    or eager attention), else a row per response."""
    inner = _unwrap(model)
    implementation = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    ok = share_prompt and implementation in ("sdpa", "eager") and not _transforms_logits(inner)
    return (PACKED if pack else SHARED_PROMPT) if ok else ROW_PER_RESPONSE


def shared_prompt_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, K) summed response log-probs of a :func:`collate_shared_prompt` batch (packed or not), from one forward
    pass."""
    inner = _unwrap(model)
    mask = batch["attention_mask"]  # (B, 1, T, T) bool
    if inner.config._attn_implementation == "eager":  # eager attention adds the mask to the scores
        dtype = inner.get_output_embeddings().weight.dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=batch["position_ids"],
        use_cache=False,
        output_hidden_states=-1,
        logits_to_keep=1,
    )
    hidden = out.hidden_states[-1]  # (B, T, H), after the final norm
    states = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["predictors"])  # (M, H)
    token_logps = gather_logprobs(inner.get_output_embeddings()(states), batch["targets"])  # (M,) float32
    batch_size, k = batch["scores"].shape
    sums = torch.zeros(batch_size * k, dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, batch["owners"], token_logps).view(batch_size, k)


def ranking_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, K) sequence log-probs of a batch of either layout."""
    if "predictors" in batch:
        return shared_prompt_logps(model, batch)
    batch_size, k = batch["scores"].shape
    return response_logps(model, batch).view(k, batch_size).transpose(0, 1)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def logps_table(
    model: torch.nn.Module,
    examples: Sequence[EncodedRanking],
    indices: Sequence[int],
    pad_token_id: int,
    max_examples: int,
    max_tokens: int | None,
    device: torch.device,
    autocast=None,
    layout: str = ROW_PER_RESPONSE,
    progress: str | None = None,
) -> torch.Tensor:
    """(len(indices), K) sequence log-probs of the given examples, in the order of ``indices``; ``progress``
    names the phase to show progress for (a bar on a terminal, lines in a log file)."""
    out = torch.zeros(len(indices), len(examples[0].sequences), dtype=torch.float32)
    where = {index: row for row, index in enumerate(indices)}
    was_training = model.training
    model.eval()
    try:
        groups = list(length_sorted_groups(examples, indices, max_examples, max_tokens, layout))
        for group in phase_progress(groups, len(groups), progress or "", enabled=progress is not None):
            batch = to_device(collate_group(layout, examples, group, pad_token_id), device)
            with autocast() if autocast is not None else torch.autocast("cpu", enabled=False):
                values = ranking_logps(model, batch).float().cpu()
            out[[where[i] for i in group]] = values
    finally:
        model.train(was_training)
    return out


def distributed_logps_table(
    accelerator,
    model: torch.nn.Module,
    examples: Sequence[EncodedRanking],
    pad_token_id: int,
    max_examples: int,
    max_tokens: int | None,
    layout: str = ROW_PER_RESPONSE,
    progress: str | None = None,
) -> torch.Tensor:
    """(N, K) log-probs of all examples; each process computes every ``world``-th one, then a sum-reduce joins them."""
    if not examples:
        return torch.zeros(0, 2)
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(examples), world))
    table = torch.zeros(len(examples), len(examples[0].sequences), dtype=torch.float32)
    if mine:
        table[mine] = logps_table(
            model,
            examples,
            mine,
            pad_token_id,
            max_examples,
            max_tokens,
            accelerator.device,
            accelerator.autocast,
            layout,
            progress,
        )
    if world > 1:
        table = accelerator.reduce(table.to(accelerator.device), reduction="sum").cpu()
    return table
