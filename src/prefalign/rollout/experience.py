"""From a :class:`~prefalign.rollout.generate.Rollout` to PPO's training record, :class:`Experience`.

Stage 2 of the PPO loop ("score") runs here: one forward pass each of the policy (old
log-probabilities; skipped when the rollout carries the sampler's own, see
:func:`prefalign.trainers.ppo.trainer.stage_score`), the reference (reference log-probabilities), the
critic (values) and the reward source, without gradients, in groups of at most a micro-batch of rows
of similar length (:mod:`prefalign.rollout.batching`); log-probabilities project only the response
positions onto the vocabulary. Nothing is computed twice.

Alignment (shared with :mod:`prefalign.models.logprobs`): for (N, T) ``sequences``,

- ``logprobs[:, t] = log pi(sequences[:, t] | sequences[:, :t])``;
- ``values[:, t] = V(s_t)``, the critic's estimate *before* token t is emitted, i.e. its head at
  position t - 1 (:func:`aligned_values`). The state after the last response token is terminal;
- the sequence score goes to the last response token (EOS when generated), by
  :func:`prefalign.algorithms.kl.kl_penalized_rewards`.

Score shaping, in this order: the EOS trick (:func:`apply_truncated_reward`, a fixed reward for a
response cut off without EOS), then optional normalisation by running statistics and clipping
(:func:`normalize_and_clip`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedModel

from prefalign.algorithms.normalize import RunningMeanStd
from prefalign.data.schema import Prompt
from prefalign.models.heads import _position_ids
from prefalign.models.logprobs import token_logprobs
from prefalign.rewards.base import RewardFunction
from prefalign.rewards.ensemble import EnsembleReward
from prefalign.rewards.learned import LearnedReward
from prefalign.rollout.batching import length_groups, row_lengths
from prefalign.rollout.generate import Rollout


@dataclass
class Experience:
    """A scored rollout batch; N rows, T positions (prompt + response, right-padded)."""

    sequences: torch.Tensor  # (N, T) long: prompt + response ids
    attention_mask: torch.Tensor  # (N, T) long: 1 on real tokens
    response_mask: torch.Tensor  # (N, T) long: 1 on response tokens (EOS included when generated)
    old_logprobs: torch.Tensor  # (N, T) log pi_old(y_t): the sampling policy, at the sampling temperature
    ref_logprobs: torch.Tensor  # (N, T) log pi_ref(y_t), same temperature
    old_values: torch.Tensor  # (N, T) critic output V(s_t) at rollout time (normalised space if value normalisation)
    raw_scores: torch.Tensor  # (N,) reward source output r(x, y)
    scores: torch.Tensor  # (N,) after EOS trick, normalisation and clipping: what the policy optimises
    ended_with_eos: torch.Tensor  # (N,) bool
    kl: torch.Tensor  # (N, T) per-token KL estimate vs the reference (0 off the response)
    token_rewards: torch.Tensor  # (N, T) -beta * KL_t, plus the score at the last response token
    advantages: torch.Tensor  # (N, T) GAE advantages (whitened when advantage normalisation is on)
    returns: torch.Tensor  # (N, T) value targets (normalised space if value normalisation)
    support: torch.Tensor | None = None  # (N, T, k) int32: the sampler's top-k ids per response token, or None

    def __len__(self) -> int:
        return int(self.sequences.shape[0])

    def select(self, rows: Sequence[int] | torch.Tensor) -> Experience:
        """The given rows, trimmed to their longest sequence (micro-batches carry no extra padding)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.sequences.device)
        width = int(self.attention_mask[index].sum(dim=1).max().item())
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                picked[f.name] = None
                continue
            value = value[index]
            picked[f.name] = value[:, :width] if value.dim() >= 2 else value
        return Experience(**picked)

    def to(self, device: torch.device | str) -> Experience:
        return Experience(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                for f in fields(self)
            }
        )


def aligned_values(critic: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) V(s_t) aligned with the tokens: the critic's head at position t - 1 (0 at t = 0).

    ``critic`` is a per-token value model (``*ForTokenClassification``, num_labels=1), possibly wrapped
    by DDP: it is called through its own ``forward`` (so gradients synchronise), which applies the head
    at every position, as :func:`prefalign.models.heads.token_values` does; positions count real tokens.
    """
    out = critic(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=_position_ids(attention_mask), use_cache=False
    )
    per_position = out.logits.squeeze(-1).float()  # (B, T): value of the prefix ending at token t
    return torch.nn.functional.pad(per_position[:, :-1], (1, 0))


def map_micro_batches(
    fn: Callable[..., torch.Tensor],
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    micro_batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Apply ``fn(ids, attention_mask, response_mask, rows) -> (n, w)`` to groups of at most
    ``micro_batch_size`` right-padded rows of similar length (``rows``: their (n,) indices; groups from
    :func:`prefalign.rollout.batching.length_groups`), each trimmed to its own width; returns the (N, T)
    float32 result on the CPU, 0 outside the computed columns."""
    out = torch.zeros(sequences.shape, dtype=torch.float32)
    for group in length_groups(row_lengths(attention_mask), micro_batch_size):
        rows = torch.tensor(group, dtype=torch.long)
        width = int(attention_mask[rows].sum(dim=1).max().item())
        chunk = [t[rows, :width].to(device) for t in (sequences, attention_mask, response_mask)]
        out[rows, :width] = fn(*chunk, rows).float().cpu()
    return out


@torch.no_grad()
def rollout_logprobs(
    model: PreTrainedModel,
    rollout: Rollout,
    micro_batch_size: int,
    temperature: float,
    *,
    support: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, T) log-probabilities of the rollout's tokens under ``model`` (0 off the response); with
    ``support`` (N, T, k), under the top-k mask of :func:`prefalign.models.logprobs.token_logprobs`.
    Only response positions are projected onto the vocabulary; rows run in length groups."""
    device = next(model.parameters()).device

    def fn(ids, mask, response, rows):
        part = None if support is None else support[rows, : ids.shape[1]].to(device)
        return token_logprobs(model, ids, mask, response, temperature=temperature, support=part, response_only=True)

    return map_micro_batches(
        fn, rollout.sequences, rollout.attention_mask, rollout.response_mask, micro_batch_size, device
    )


@torch.no_grad()
def rollout_kl(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    rollout: Rollout,
    micro_batch_size: int,
    temperature: float = 1.0,
    *,
    sampler_logprobs: bool = True,
) -> torch.Tensor:
    """(N,) summed log pi - log pi_ref of each response's tokens, both at ``temperature``.

    log pi comes from the sampler where it recorded it and ``sampler_logprobs`` says the rollout was sampled at
    ``temperature`` (the built-in engine's log-probs equal a forward pass to 1e-5, tested), else from a forward pass
    of ``policy``; log pi_ref always from a forward pass of ``reference``."""
    if sampler_logprobs and rollout.logprobs is not None:
        own = (rollout.logprobs * rollout.response_mask).float().cpu()
    else:
        own = rollout_logprobs(policy, rollout, micro_batch_size, temperature)
    ref = rollout_logprobs(reference, rollout, micro_batch_size, temperature)
    return ((own - ref) * rollout.response_mask.float().cpu()).sum(dim=1)


@torch.no_grad()
def rollout_logprobs_top_k(
    model: PreTrainedModel, rollout: Rollout, micro_batch_size: int, temperature: float, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling policy's (N, T) log-probabilities under its own top-k mask, and that mask as (N, T, k) ids
    (the sampler's distribution: softmax over the k largest logits / temperature, as Hugging Face samples)."""
    device = next(model.parameters()).device
    support = torch.zeros(*rollout.sequences.shape, top_k, dtype=torch.int32)  # a k over the vocabulary keeps all

    def fn(ids, mask, response, rows):
        logprobs, ids_k = token_logprobs(
            model, ids, mask, response, temperature=temperature, top_k=top_k, response_only=True
        )
        support[rows, : ids.shape[1], : ids_k.shape[-1]] = ids_k.to(torch.int32).cpu()
        return logprobs

    out = map_micro_batches(
        fn, rollout.sequences, rollout.attention_mask, rollout.response_mask, micro_batch_size, device
    )
    return out, support


@torch.no_grad()
def rollout_values(critic: PreTrainedModel, rollout: Rollout, micro_batch_size: int) -> torch.Tensor:
    """(N, T) critic values V(s_t) on the response positions (0 elsewhere)."""
    device = next(critic.parameters()).device

    def fn(ids, mask, response, rows):
        return aligned_values(critic, ids, mask) * response

    return map_micro_batches(
        fn, rollout.sequences, rollout.attention_mask, rollout.response_mask, micro_batch_size, device
    )


class RolloutScorer:
    """Sequence rewards for a rollout: a weighted sum of reward functions.

    A :class:`LearnedReward` (or an :class:`EnsembleReward` of them) whose tokenizer is the policy's
    (``token_path=True``) scores the rollout's token ids directly; every other reward function gets the
    prompts and the decoded responses.
    """

    def __init__(self, parts: Sequence[tuple[float, RewardFunction, bool]]):
        if not parts:
            raise ValueError("RolloutScorer needs at least one reward function")
        self.parts = list(parts)
        self.name = "+".join(fn.name for _, fn, _ in self.parts)

    def __call__(self, rollout: Rollout, prompts: Sequence[Prompt]) -> torch.Tensor:
        """(N,) float32 scores; ``prompts[rollout.prompt_index[i]]`` is row i's prompt."""
        row_prompts = [prompts[i] for i in rollout.prompt_index.tolist()]
        total = torch.zeros(len(rollout), dtype=torch.float32)
        for weight, fn, token_path in self.parts:
            if token_path and isinstance(fn, (LearnedReward, EnsembleReward)):
                part = _score_in_length_groups(fn, rollout)
            else:
                part = fn(row_prompts, rollout.response_texts)
            part = torch.as_tensor(part, dtype=torch.float32).cpu()
            if part.shape != (len(rollout),):
                raise ValueError(f"reward {fn.name!r} returned shape {tuple(part.shape)}, expected ({len(rollout)},)")
            total += weight * part
        return total


def _score_in_length_groups(fn: LearnedReward | EnsembleReward, rollout: Rollout) -> torch.Tensor:
    """(N,) the learned reward of the rollout's token rows, run in groups of similar length (less padding)."""
    scores = torch.zeros(len(rollout), dtype=torch.float32)
    for group in length_groups(row_lengths(rollout.attention_mask), fn.micro_batch_size):
        rows = torch.tensor(group, dtype=torch.long)
        width = int(rollout.attention_mask[rows].sum(dim=1).max().item())
        scores[rows] = fn.score_tokens(rollout.sequences[rows, :width], rollout.attention_mask[rows, :width])
    return scores


def apply_truncated_reward(
    raw_scores: torch.Tensor, ended_with_eos: torch.Tensor, truncated_reward: float | None
) -> torch.Tensor:
    """The EOS trick: rows cut off without EOS get ``truncated_reward`` (None: scores unchanged). (N,) -> (N,)."""
    scores = raw_scores.float()
    if truncated_reward is None:
        return scores
    return torch.where(ended_with_eos.bool(), scores, torch.full_like(scores, float(truncated_reward)))


def normalize_and_clip(scores: torch.Tensor, normalizer: RunningMeanStd | None, clip: float | None) -> torch.Tensor:
    """(N,) scores normalised by ``normalizer`` (already updated with this batch by the caller; None:
    no normalisation), then clamped to [-clip, clip] (None: no clipping)."""
    if normalizer is not None:
        scores = normalizer.normalize(scores)
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores
