"""Training on the synthetic bandit: the reward model (Bradley-Terry), DPO, and PPO.

Every loss comes from ``prefalign.algorithms``; a bandit episode is a one-token response, so
the (B, T) tensors of those functions have T = 1 and ``response_mask`` is all ones.

* Reward model (Xu et al. 2024, Eq. 4): ``bradley_terry_loss`` on the scores of the chosen and
  rejected cells, full batch (all N pairs every step), Adam.
* DPO (Xu et al. 2024, Eq. 7): the policy starts as a copy of the reference; ``dpo_loss`` on the
  sequence log-probs (here a single token's) of chosen and rejected, full batch, Adam.
* PPO (Xu et al. 2024, Eq. 5 and section 5): the policy starts as a copy of the reference and a
  separate critic MLP V(x) starts from its own initialisation. Each iteration:
    1. rollout   every prompt ``episodes_per_prompt`` times, y ~ pi_old(. | x);
    2. score     r(x, y) from the frozen reward model;
    3. KL-penalised reward  ``kl_penalized_rewards``: r - kl_coef * (log pi_old - log pi_ref);
    4. advantages           ``compute_gae`` (with T = 1: A = reward - V(x), whatever gamma, lam),
                            then ``masked_whiten`` over the batch;
    5. update    ``epochs`` passes over ``minibatches`` shuffled minibatches of
                 ``ppo_policy_loss`` (clipped surrogate) + ``value_coef`` * ``ppo_value_loss``.
  The KL-regularised objective E[r] - kl_coef * KL(pi || pi_ref) that these stages ascend is
  maximised by pi* ∝ pi_ref exp(r / kl_coef) (Eq. 8), the target PPO should reach; the study
  reports how close it gets.

Departures: PPO's reference is never updated (no EMA), the KL coefficient is fixed, and there
is no entropy bonus, to keep PPO's fixed point exactly Eq. 8. The critic is unclipped by
default (``value_clip_range=None``, the plain squared error of the paper's Eq. 9).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from prefalign.algorithms.advantages import compute_gae
from prefalign.algorithms.kl import kl_penalized_rewards
from prefalign.algorithms.masked import masked_mean, masked_whiten
from prefalign.algorithms.ppo import ppo_policy_loss, ppo_value_loss
from prefalign.algorithms.preference import bradley_terry_loss, dpo_loss
from prefalign.studies.synthetic.scenario import (
    STREAM_PPO,
    STREAM_REWARD,
    STREAM_VALUE,
    PromptMLP,
    SyntheticScenario,
    make_mlp,
    single_threaded,
    sub_seed,
    table_logprobs,
)


@dataclass
class TrainResult:
    """A trained model and its full-batch loss at every step (before that step's update)."""

    model: PromptMLP
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class PPOResult:
    """The PPO policy, its critic, and one dict of statistics per iteration."""

    policy: PromptMLP
    value_model: PromptMLP
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def unseen_mass(model: PromptMLP, scenario: SyntheticScenario) -> float:
    """Mean over prompts of the policy's mass on the responses no preference pair covers."""
    probs = table_logprobs(model, scenario.num_prompts).exp()
    return float(torch.where(scenario.unseen, probs, torch.zeros_like(probs)).sum(dim=-1).mean())


def pair_values(table: torch.Tensor, scenario: SyntheticScenario) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, R) table of log-probs or scores -> ((N,) chosen, (N,) rejected) entries of the pairs."""
    return table[scenario.prompt_ids, scenario.chosen_ids], table[scenario.prompt_ids, scenario.rejected_ids]


def reward_table(reward_model: PromptMLP, num_prompts: int) -> torch.Tensor:
    """(P, R) detached scores r(x, y) of a reward model for every cell."""
    with torch.no_grad():
        return reward_model(torch.arange(num_prompts))


@single_threaded
def train_reward_model(
    scenario: SyntheticScenario,
    hidden_size: int = 32,
    steps: int = 300,
    lr: float = 1e-2,
    activation: str = "tanh",
) -> TrainResult:
    """Bradley-Terry reward model on the scenario's pairs (Xu et al. 2024, Eq. 4).

    The reward model has its own initialisation (not a copy of the reference).
    """
    model = make_mlp(
        scenario.num_prompts, scenario.num_responses, hidden_size, sub_seed(scenario.seed, STREAM_REWARD), activation
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    result = TrainResult(model=model)
    for _ in range(steps):
        chosen, rejected = pair_values(model(torch.arange(scenario.num_prompts)), scenario)  # (N,), (N,)
        loss = bradley_terry_loss(chosen, rejected).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result.losses.append(float(loss.detach()))
    model.requires_grad_(False)
    model.eval()
    return result


@single_threaded
def train_dpo(
    scenario: SyntheticScenario,
    reference: PromptMLP,
    beta: float = 0.1,
    steps: int = 300,
    lr: float = 1e-2,
    label_smoothing: float = 0.0,
    track_every: int = 0,
) -> TrainResult:
    """DPO (Xu et al. 2024, Eq. 7) from a copy of the reference, full batch; every ``track_every`` steps (0: never)
    the mass on uncovered responses goes into ``history`` (``{"step", "unseen_mass"}``, step 0 the start)."""
    policy = copy.deepcopy(reference).requires_grad_(True).train()
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_values(table_logprobs(reference, scenario.num_prompts), scenario)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr, foreach=True)
    result = TrainResult(model=policy)
    for step in range(steps):
        if track_every and step % track_every == 0:
            result.history.append({"step": step, "unseen_mass": unseen_mass(policy, scenario)})
        chosen, rejected = pair_values(table_logprobs(policy, scenario.num_prompts), scenario)  # (N,), (N,)
        losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, label_smoothing)
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result.losses.append(float(loss.detach()))
    if track_every:
        result.history.append({"step": steps, "unseen_mass": unseen_mass(policy, scenario)})
    policy.requires_grad_(False)
    policy.eval()
    return result


@torch.no_grad()
def ppo_rollout(
    policy: PromptMLP,
    value_model: PromptMLP,
    reference: PromptMLP,
    reward_model: PromptMLP,
    prompts: torch.Tensor,
    generator: torch.Generator,
    kl_coef: float,
    gamma: float = 1.0,
    lam: float = 1.0,
    kl_estimator: str = "k1",
    whiten_advantages: bool = True,
) -> dict[str, torch.Tensor]:
    """Stages 1-4 of a PPO iteration for the bandit; every (B, 1) tensor has T = 1.

    prompts: (B,) long. Returns responses (B, 1), old_logprobs (B, 1) log pi_old(y|x),
    ref_logprobs (B, 1), old_values (B, 1) V(x), scores (B,) r(x, y), token_rewards (B, 1),
    kl (B, 1), advantages (B, 1) (whitened when asked), returns (B, 1), response_mask (B, 1).
    """
    policy_logp = torch.log_softmax(policy(prompts), dim=-1)  # (B, R)
    responses = torch.multinomial(policy_logp.exp(), 1, generator=generator)  # (B, 1)    1. rollout
    old_logprobs = policy_logp.gather(-1, responses)  # (B, 1)
    ref_logprobs = torch.log_softmax(reference(prompts), dim=-1).gather(-1, responses)  # (B, 1)
    scores = reward_model(prompts).gather(-1, responses).squeeze(-1)  # (B,)           2. score
    mask = torch.ones_like(old_logprobs)  # (B, 1)
    token_rewards, kl = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, kl_coef, kl_estimator)  # 3.
    old_values = value_model(prompts)  # (B, 1)
    advantages, returns = compute_gae(token_rewards, old_values, mask, gamma, lam)  # 4. advantages
    if whiten_advantages:
        advantages = masked_whiten(advantages, mask, shift_mean=True)
    return {
        "prompts": prompts,
        "responses": responses,
        "old_logprobs": old_logprobs,
        "ref_logprobs": ref_logprobs,
        "old_values": old_values,
        "scores": scores,
        "token_rewards": token_rewards,
        "kl": kl,
        "advantages": advantages,
        "returns": returns,
        "response_mask": mask,
    }


_UPDATE_FIELDS = ("prompts", "responses", "old_logprobs", "advantages", "response_mask", "old_values", "returns")


def ppo_update(
    policy: PromptMLP,
    value_model: PromptMLP,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    epochs: int,
    minibatches: int,
    clip_range: float,
    value_clip_range: float | None,
    value_coef: float,
) -> dict[str, float]:
    """Stage 5: clipped policy + value losses over shuffled minibatches; mean statistics."""
    size = batch["prompts"].shape[0]
    if size % minibatches:
        raise ValueError(f"batch of {size} episodes does not split into {minibatches} minibatches")
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
    for _ in range(epochs):
        for index in torch.randperm(size, generator=generator).view(minibatches, -1):
            mb = {name: batch[name][index] for name in _UPDATE_FIELDS}
            logprobs = torch.log_softmax(policy(mb["prompts"]), dim=-1).gather(-1, mb["responses"])  # (b, 1)
            policy_loss, stats = ppo_policy_loss(
                logprobs, mb["old_logprobs"], mb["advantages"], mb["response_mask"], clip_range
            )
            values = value_model(mb["prompts"])  # (b, 1)
            value_loss, _ = ppo_value_loss(
                values, mb["old_values"], mb["returns"], mb["response_mask"], value_clip_range
            )
            optimizer.zero_grad()
            (policy_loss + value_coef * value_loss).backward()
            optimizer.step()
            totals["policy_loss"] += float(policy_loss.detach())
            totals["value_loss"] += float(value_loss.detach())
            totals["clipfrac"] += float(stats["clipfrac"])
            totals["approx_kl"] += float(stats["approx_kl"])
    return {name: value / (epochs * minibatches) for name, value in totals.items()}


@single_threaded
def train_ppo(
    scenario: SyntheticScenario,
    reference: PromptMLP,
    reward_model: PromptMLP,
    kl_coef: float = 0.1,
    iterations: int = 100,
    episodes_per_prompt: int = 16,
    epochs: int = 4,
    minibatches: int = 4,
    lr: float = 1e-2,
    value_lr: float = 1e-2,
    clip_range: float = 0.2,
    value_clip_range: float | None = None,
    value_coef: float = 0.5,
    gamma: float = 1.0,
    lam: float = 1.0,
    kl_estimator: str = "k1",
    whiten_advantages: bool = True,
    hidden_size: int = 32,
) -> PPOResult:
    """PPO against a frozen reward model with a KL penalty to ``reference`` (stages above).

    The critic is a fresh PromptMLP(P -> 1) of ``hidden_size`` with the reference's activation.
    """
    policy = copy.deepcopy(reference).requires_grad_(True).train()
    value_seed = sub_seed(scenario.seed, STREAM_VALUE)
    value_model = make_mlp(scenario.num_prompts, 1, hidden_size, value_seed, reference.activation)
    optimizer = torch.optim.Adam(
        [{"params": policy.parameters(), "lr": lr}, {"params": value_model.parameters(), "lr": value_lr}],
        foreach=True,
    )
    generator = torch.Generator().manual_seed(sub_seed(scenario.seed, STREAM_PPO))
    prompts = torch.arange(scenario.num_prompts).repeat_interleave(episodes_per_prompt)  # (B,)
    result = PPOResult(policy=policy, value_model=value_model)
    for _ in range(iterations):
        batch = ppo_rollout(
            policy,
            value_model,
            reference,
            reward_model,
            prompts,
            generator,
            kl_coef,
            gamma,
            lam,
            kl_estimator,
            whiten_advantages,
        )
        stats = ppo_update(
            policy,
            value_model,
            optimizer,
            batch,
            generator,
            epochs,
            minibatches,
            clip_range,
            value_clip_range,
            value_coef,
        )
        mask = batch["response_mask"]
        stats["reward/mean"] = float(batch["scores"].mean())
        stats["kl/mean"] = float(masked_mean(batch["kl"], mask))
        stats["unseen_mass"] = unseen_mass(policy, scenario)  # after this iteration's update
        result.history.append(stats)
    policy.requires_grad_(False)
    policy.eval()
    value_model.requires_grad_(False)
    value_model.eval()
    return result
