"""Stage 5 of the PPO loop: clipped policy and value updates over minibatches of one rollout batch.

For each of ``ppo_epochs`` passes, this process's rollout rows are shuffled (a generator seeded by
run seed, step and epoch, so a resumed run shuffles identically) and cut into ``num_minibatches``
minibatches; the global minibatch is the union of every process's share. Each minibatch gives one
optimizer step of the actor and one of the critic. Within a minibatch, rows are processed in groups
of at most ``micro_batch_size`` rows of similar length (:func:`prefalign.rollout.batching.length_groups`:
little padding) and gradients accumulate
(:func:`prefalign.trainers.common.accumulate_and_step`); every micro-batch loss is divided by the
*global* normaliser of the minibatch (its response tokens for "token-mean", its sequences for the
"seq-mean" modes), so the update does not depend on the micro-batch size or the process count.

Policy loss: Schulman et al. (2017) Eq. 7 (:func:`prefalign.algorithms.ppo.ppo_policy_loss`),
value loss: the clipped form (:func:`prefalign.algorithms.ppo.ppo_value_loss`), each on its own
model and optimizer (no shared backbone, so no joint loss is needed). The value-loss coefficient
acts through the critic's learning rate (:func:`prefalign.trainers.ppo.setup.critic_optim_config`):
AdamW would undo a constant scale of the critic's loss. The optional auxiliary SFT
loss (InstructGPT's PPO-ptx) adds ``sft_coef`` times the token-mean negative log-likelihood of a
batch of SFT examples to every actor step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from prefalign.algorithms.masked import masked_sum
from prefalign.algorithms.ppo import ppo_policy_loss, ppo_value_loss
from prefalign.models.logprobs import token_logprobs
from prefalign.rollout.batching import length_groups, row_lengths
from prefalign.rollout.experience import Experience, aligned_values, rollout_logprobs, rollout_values
from prefalign.trainers.common import accumulate_and_step, check_finite, global_sum


@dataclass
class UpdateParts:
    """What stage 5 trains: the two models (as prepared by accelerate), their optimizers and schedulers. The critic and
    its optimizer are None for a critic-free advantage estimator: then only the actor is updated."""

    policy: torch.nn.Module
    critic: torch.nn.Module | None
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer | None
    actor_scheduler: object
    critic_scheduler: object
    critic_accelerator: Accelerator | None = None  # under DeepSpeed the critic's engine has its own Accelerator


@dataclass
class UpdateSettings:
    """The PPOConfig fields stage 5 reads, flattened (so this module needs no config tree)."""

    clip_range: float
    clip_range_value: float | None
    aggregation: str
    ppo_epochs: int
    num_minibatches: int
    micro_batch_size: int
    temperature: float
    recompute_old: bool
    actor_max_grad_norm: float | None
    critic_max_grad_norm: float | None
    sft_coef: float = 0.0
    seed: int = 0


@dataclass
class _Sums:
    """Statistics of the update, reduced over processes at the end.

    ``add``: a weighted mean (e.g. clip fraction weighted by response tokens).
    ``add_total``: a loss share; the shares of one minibatch (all micro-batches, all processes) sum
    to its loss, and the result is the mean over the minibatches.
    """

    sums: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    minibatches: int = 0

    def add(self, name: str, value: torch.Tensor | float, weight: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value) * weight
        self.weights[name] = self.weights.get(name, 0.0) + weight

    def add_total(self, name: str, value: torch.Tensor | float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + float(value)

    def means(self, accelerator: Accelerator) -> dict[str, float]:
        out = {
            k: global_sum(self.sums[k], accelerator) / max(global_sum(self.weights[k], accelerator), 1e-12)
            for k in self.sums
        }
        out.update({k: global_sum(v, accelerator) / max(self.minibatches, 1) for k, v in self.totals.items()})
        return dict(sorted(out.items()))


def minibatch_rows(num_rows: int, num_minibatches: int, seed: int, step: int, epoch: int) -> list[torch.Tensor]:
    """This process's rows split into ``num_minibatches`` shuffled minibatches (deterministic)."""
    if num_rows % num_minibatches:
        raise ValueError(f"{num_rows} rollout rows per process do not split into {num_minibatches} minibatches")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + epoch)
    order = torch.randperm(num_rows, generator=generator)
    return list(order.chunk(num_minibatches))


def _normalizer(mb: Experience, aggregation: str, accelerator: Accelerator) -> float:
    local = mb.response_mask.sum() if aggregation == "token-mean" else torch.tensor(len(mb))
    return global_sum(local, accelerator)


def recompute_old(
    mb: Experience, policy: torch.nn.Module, critic: torch.nn.Module, micro_batch_size: int, temperature: float
) -> Experience:
    """Old log-probs (under the minibatch's top-k support, if any) and values of a minibatch from the current
    models. Advantages and targets are refreshed from them by :func:`prefalign.trainers.ppo.targets.refresh_minibatch`.
    """
    logprobs = rollout_logprobs(policy, mb, micro_batch_size, temperature, support=mb.support)
    values = rollout_values(critic, mb, micro_batch_size)
    return dataclasses.replace(mb, old_logprobs=logprobs, old_values=values)


def _actor_loss_fn(parts: UpdateParts, s: UpdateSettings, norm: float, sft_norm: float, sums: _Sums, step: int, device):
    def loss_fn(micro) -> torch.Tensor:
        if isinstance(micro, dict):  # auxiliary SFT batch
            ids, mask, resp = (micro[k].to(device) for k in ("input_ids", "attention_mask", "response_mask"))
            logprobs = token_logprobs(parts.policy, ids, mask, resp)
            loss = -s.sft_coef * masked_sum(logprobs, resp) / sft_norm
            check_finite("SFT loss", loss, step)
            sums.add_total("sft_loss", loss.detach() / s.sft_coef)
            return loss
        ids, mask, resp = micro.sequences.to(device), micro.attention_mask.to(device), micro.response_mask.to(device)
        support = None if micro.support is None else micro.support.to(device)
        logprobs, entropy = token_logprobs(
            parts.policy,
            ids,
            mask,
            resp,
            temperature=s.temperature,
            return_entropy=True,
            support=support,
            response_only=True,
        )
        loss, stats = ppo_policy_loss(
            logprobs,
            micro.old_logprobs.to(device),
            micro.advantages.to(device),
            resp,
            clip_range=s.clip_range,
            aggregation=s.aggregation,
            normalizer=norm,
        )
        check_finite("policy loss", loss, step)
        tokens = float(resp.sum())
        sums.add_total("policy_loss", loss.detach())
        for key in ("clipfrac", "approx_kl"):
            sums.add(key, stats[key], tokens)
        sums.add("entropy", masked_sum(entropy, resp) / max(tokens, 1.0), tokens)
        return loss

    return loss_fn


def _critic_loss_fn(parts: UpdateParts, s: UpdateSettings, norm: float, sums: _Sums, step: int, device):
    def loss_fn(micro: Experience) -> torch.Tensor:
        ids, mask, resp = micro.sequences.to(device), micro.attention_mask.to(device), micro.response_mask.to(device)
        values = aligned_values(parts.critic, ids, mask)
        loss, stats = ppo_value_loss(
            values,
            micro.old_values.to(device),
            micro.returns.to(device),
            resp,
            clip_range_value=s.clip_range_value,
            aggregation=s.aggregation,
            normalizer=norm,
        )
        check_finite("value loss", loss, step)
        tokens = float(resp.sum())
        sums.add_total("value_loss", loss.detach())
        sums.add("vf_clipfrac", stats["vf_clipfrac"], tokens)
        return loss

    return loss_fn


def update_minibatch(
    accelerator: Accelerator,
    parts: UpdateParts,
    s: UpdateSettings,
    mb: Experience,
    sft_batch: dict | None,
    sums: _Sums,
    step: int,
) -> None:
    """One actor and one critic optimizer step on minibatch ``mb`` (this process's rows)."""
    device = accelerator.device
    norm = _normalizer(mb, s.aggregation, accelerator)
    micro = [mb.select(rows) for rows in length_groups(row_lengths(mb.attention_mask), s.micro_batch_size)]
    actor_batches: list = list(micro)
    sft_norm = 1.0
    if sft_batch is not None:
        sft_norm = global_sum(sft_batch["response_mask"].sum(), accelerator)
        actor_batches += list(_sft_micro_batches(sft_batch, s.micro_batch_size))
    actor_fn = _actor_loss_fn(parts, s, norm, sft_norm, sums, step, device)
    grad = accumulate_and_step(
        accelerator,
        parts.policy,
        parts.actor_optimizer,
        parts.actor_scheduler,
        actor_batches,
        actor_fn,
        s.actor_max_grad_norm,
    )
    if grad is not None:
        sums.add("grad_norm/actor", grad, 1.0)
    if parts.critic is None:  # critic-free advantage estimator
        return
    critic_fn = _critic_loss_fn(parts, s, norm, sums, step, device)
    grad = accumulate_and_step(
        parts.critic_accelerator or accelerator,
        parts.critic,
        parts.critic_optimizer,
        parts.critic_scheduler,
        micro,
        critic_fn,
        s.critic_max_grad_norm,
    )
    if grad is not None:
        sums.add("grad_norm/critic", grad, 1.0)


def _sft_micro_batches(batch: dict, size: int):
    rows = batch["input_ids"].shape[0]
    for start in range(0, rows, size):
        chunk = {k: v[start : start + size] for k, v in batch.items()}
        width = int(chunk["attention_mask"].sum(dim=1).max().item())
        yield {k: v[:, :width] for k, v in chunk.items()}


def ppo_update(
    accelerator: Accelerator,
    parts: UpdateParts,
    s: UpdateSettings,
    experience: Experience,
    step: int,
    sft_batches: list[dict] | None = None,
    refresh: Callable[[Experience], Experience] | None = None,
) -> dict[str, float]:
    """Stage 5: ``ppo_epochs`` x ``num_minibatches`` actor and critic steps; returns averaged statistics.

    sft_batches: one collated SFT batch per minibatch step (``ppo_epochs * num_minibatches`` of them)
    when the auxiliary SFT loss is on, else None. refresh: with ``s.recompute_old``, the function that
    recomputes a minibatch from the current models before its update
    (:func:`prefalign.trainers.ppo.targets.refresh_minibatch`, which needs the trainer's context).
    """
    if s.recompute_old and refresh is None:
        raise ValueError("recompute_old needs the refresh function (prefalign.trainers.ppo.targets.refresh_minibatch)")
    sums = _Sums()
    index = 0
    for epoch in range(s.ppo_epochs):
        for rows in minibatch_rows(len(experience), s.num_minibatches, s.seed, step, epoch):
            mb = experience.select(rows)
            if s.recompute_old:
                mb = refresh(mb)
            sft = sft_batches[index] if sft_batches else None
            update_minibatch(accelerator, parts, s, mb, sft, sums, step)
            sums.minibatches += 1
            index += 1
    return sums.means(accelerator)
