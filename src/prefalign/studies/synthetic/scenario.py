"""The synthetic bandit of Xu et al. (2024), section 4.2: 8 prompts, 8 responses, one-hot MLPs.

A prompt x_i is a one-hot vector; every model (policy, reference, reward model, PPO critic)
is a :class:`PromptMLP` ``one-hot(P) -> Linear -> tanh -> Linear -> (R,)``: logits of a
categorical distribution over the R responses for a policy, one score per response for the
reward model, one value for the critic. A bandit episode is one prompt and one response.

Scenario construction (:func:`build_scenario`), as in the paper where it says so and our
choice (marked *ours*) where it does not:

* The optimal response for prompt i is response i (the diagonal), as in the paper.
* *ours*: a hidden ground-truth score matrix labels the pairs: off-diagonal scores are drawn
  uniformly from [0, 1) and the diagonal is 1, so response i beats every other response of
  prompt i and the order among the others is random. Labels are deterministic (no
  Bradley-Terry sampling noise), so the data never contradict themselves.
* *ours*: coverage. For each prompt, ``responses_per_prompt`` responses are covered: the
  optimal one plus ``responses_per_prompt - 1`` others drawn without replacement. The pairs
  are drawn among the covered responses only: the ``responses_per_prompt - 1`` pairs
  (optimal, other) first -- so every covered response appears and the optimum is always
  identifiable -- then further random pairs among the covered ones up to
  ``pairs_per_prompt`` (default: all pairs among them). A cell (prompt, response) is *seen*
  when it appears in at least one pair of that prompt and *unseen* otherwise; a response
  can be unseen for one prompt and seen for another, which is what lets a shared network
  carry what it learned to the unseen cells.
* *ours*: the reference policy (:func:`build_reference`) is one of
  ``"random"``   a freshly initialised MLP: near-uniform (each cell about 1/R, varying per
                 seed), the stand-in for a pre-trained model that knows nothing of the task;
  ``"uniform"``  the same MLP with its output layer zeroed: exactly uniform;
  ``"data"``     the MLP fitted by cross-entropy to the responses of the preference data (each
                 chosen and rejected response counts once) mixed with ``smoothing`` of the
                 uniform distribution, so unseen cells keep a small, non-zero mass (an SFT
                 model of the data distribution).
  The paper does not say how its reference was obtained; its Figure 1 shows a reference
  with non-zero mass on unseen cells (the example cell starts at 0.11, near 1/8), which
  ``"random"`` (the default) matches.

Threads: the models are 8x32 matrices, and a multi-threaded BLAS call on them costs more than
the arithmetic -- on a busy 2-core machine, 10 to 25 times more. The training functions here
and in ``synthetic_training`` / ``synthetic_theory`` therefore run with one torch thread
(:func:`single_threaded`) and restore the caller's setting on return.

Seeds: everything is drawn from ``seed`` through :func:`sub_seed`, one independent stream per
component (data, reference, reward model, critic, PPO sampling), so a run is reproducible and
does not touch or depend on the global torch / numpy random state.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

REFERENCE_KINDS = ("random", "uniform", "data")
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}

# one independent random stream per component of a seed's run
STREAM_DATA, STREAM_REFERENCE, STREAM_REWARD, STREAM_VALUE, STREAM_PPO = range(5)


_F = TypeVar("_F", bound=Callable)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_threaded(function: _F) -> _F:
    """Decorator: the call runs under ``torch_threads(1)`` (see the module docstring)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch_threads(1):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def sub_seed(seed: int, stream: int) -> int:
    """A 31-bit seed for one component of a run, independent across (seed, stream)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0] >> 1)


@dataclass(frozen=True)
class SyntheticScenario:
    """One draw of the synthetic preference data set (N pairs over P prompts, R responses)."""

    seed: int
    true_reward: torch.Tensor  # (P, R) float64 hidden ground-truth scores; row i peaks at i
    prompt_ids: torch.Tensor  # (N,) long, prompt of each pair
    chosen_ids: torch.Tensor  # (N,) long, preferred response y_c
    rejected_ids: torch.Tensor  # (N,) long, dispreferred response y_r
    coverage: torch.Tensor  # (P, R) bool, True where the cell appears in some pair

    @property
    def num_prompts(self) -> int:
        return int(self.true_reward.shape[0])

    @property
    def num_responses(self) -> int:
        return int(self.true_reward.shape[1])

    @property
    def num_pairs(self) -> int:
        return int(self.prompt_ids.shape[0])

    @property
    def unseen(self) -> torch.Tensor:
        """(P, R) bool, True on the cells no pair of that prompt mentions."""
        return ~self.coverage

    @property
    def optimal_ids(self) -> torch.Tensor:
        """(P,) long, the optimal response of each prompt (the diagonal)."""
        return torch.arange(self.num_prompts)

    def pair_counts(self) -> torch.Tensor:
        """(P, R) long, how many pairs mention each cell (as chosen or rejected)."""
        counts = torch.zeros(self.num_prompts, self.num_responses, dtype=torch.long)
        ones = torch.ones_like(self.prompt_ids)
        counts.index_put_((self.prompt_ids, self.chosen_ids), ones, accumulate=True)
        counts.index_put_((self.prompt_ids, self.rejected_ids), ones, accumulate=True)
        return counts

    def win_counts(self) -> torch.Tensor:
        """(P, R) long, how many pairs each cell wins."""
        counts = torch.zeros(self.num_prompts, self.num_responses, dtype=torch.long)
        counts.index_put_((self.prompt_ids, self.chosen_ids), torch.ones_like(self.prompt_ids), accumulate=True)
        return counts


def build_scenario(
    seed: int,
    num_prompts: int = 8,
    responses_per_prompt: int = 3,
    pairs_per_prompt: int | None = None,
) -> SyntheticScenario:
    """Draw the preference data set of one seed (construction in the module docstring).

    num_prompts: P = R, prompts and responses alike (the paper: 8).
    responses_per_prompt: covered responses per prompt, the optimal one included (2..R).
    pairs_per_prompt: pairs per prompt, between responses_per_prompt - 1 and
        C(responses_per_prompt, 2); None takes all pairs among the covered responses.
    """
    k = responses_per_prompt
    if num_prompts < 2:
        raise ValueError(f"num_prompts must be at least 2, got {num_prompts}")
    if not 2 <= k <= num_prompts:
        raise ValueError(f"responses_per_prompt must be in [2, {num_prompts}], got {k}")
    all_pairs = k * (k - 1) // 2
    n_pairs = all_pairs if pairs_per_prompt is None else pairs_per_prompt
    if not k - 1 <= n_pairs <= all_pairs:
        raise ValueError(f"pairs_per_prompt must be in [{k - 1}, {all_pairs}] for {k} covered responses, got {n_pairs}")
    rng = np.random.default_rng(sub_seed(seed, STREAM_DATA))
    true_reward = rng.uniform(0.0, 1.0, size=(num_prompts, num_prompts))
    np.fill_diagonal(true_reward, 1.0)  # off-diagonal scores are < 1: response i is optimal
    prompts, chosen, rejected = [], [], []
    for i in range(num_prompts):
        others = rng.choice([j for j in range(num_prompts) if j != i], size=k - 1, replace=False)
        pairs = [(i, int(j)) for j in others]  # the optimum against every other covered response
        rest = list(itertools.combinations(sorted(int(j) for j in others), 2))
        extra = rng.choice(len(rest), size=n_pairs - len(pairs), replace=False) if rest else []
        pairs += [rest[int(e)] for e in extra]
        for a, b in pairs:
            win, lose = (a, b) if true_reward[i, a] > true_reward[i, b] else (b, a)
            prompts.append(i)
            chosen.append(win)
            rejected.append(lose)
    prompt_ids = torch.tensor(prompts, dtype=torch.long)
    chosen_ids = torch.tensor(chosen, dtype=torch.long)
    rejected_ids = torch.tensor(rejected, dtype=torch.long)
    coverage = torch.zeros(num_prompts, num_prompts, dtype=torch.bool)
    coverage[prompt_ids, chosen_ids] = True
    coverage[prompt_ids, rejected_ids] = True
    return SyntheticScenario(
        seed=int(seed),
        true_reward=torch.from_numpy(true_reward),
        prompt_ids=prompt_ids,
        chosen_ids=chosen_ids,
        rejected_ids=rejected_ids,
        coverage=coverage,
    )


class PromptMLP(nn.Module):
    """one-hot(prompt) (B, P) -> Linear(P, H) -> activation -> Linear(H, K) -> (B, K).

    K = R for a policy (logits) or a reward model (a score per response), K = 1 for a critic.
    activation: "tanh" or "relu". It decides how much the network shares between prompts:
    with a one-hot input, ReLU features are non-negative for every prompt, so raising
    response j's output weights raises j for all prompts alike; tanh features have signs
    that differ between prompts, so they share less (see the study's report).
    """

    def __init__(self, num_prompts: int, num_outputs: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}")
        self.num_prompts = num_prompts
        self.activation = activation
        self.hidden = nn.Linear(num_prompts, hidden_size)
        self.out = nn.Linear(hidden_size, num_outputs)

    def forward(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """prompt_ids (B,) long -> (B, K)."""
        # one_hot(prompt_ids) @ W1^T + b1 is W1's prompt_ids columns plus b1 (same maths, fewer ops)
        pre_activation = self.hidden.weight.t()[prompt_ids] + self.hidden.bias  # (B, H)
        return self.out(ACTIVATIONS[self.activation](pre_activation))


def make_mlp(num_prompts: int, num_outputs: int, hidden_size: int, seed: int, activation: str = "tanh") -> PromptMLP:
    """A PromptMLP initialised (PyTorch's default init) from ``seed``, leaving global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PromptMLP(num_prompts, num_outputs, hidden_size, activation)


def table_logprobs(model: nn.Module, num_prompts: int) -> torch.Tensor:
    """(P, R) log pi(y | x) of a policy MLP for every prompt (grad flows when enabled)."""
    return torch.log_softmax(model(torch.arange(num_prompts)), dim=-1)


def data_distribution(scenario: SyntheticScenario, smoothing: float) -> torch.Tensor:
    """(P, R) the responses of the preference data per prompt, mixed with ``smoothing`` uniform."""
    counts = scenario.pair_counts().to(torch.float64)
    empirical = counts / counts.sum(dim=-1, keepdim=True)
    return (1.0 - smoothing) * empirical + smoothing / scenario.num_responses


@single_threaded
def build_reference(
    scenario: SyntheticScenario,
    kind: str = "random",
    hidden_size: int = 32,
    steps: int = 300,
    lr: float = 1e-2,
    smoothing: float = 0.2,
    activation: str = "tanh",
) -> PromptMLP:
    """The frozen reference policy of one seed; ``kind`` is described in the module docstring.

    steps, lr, smoothing: only for kind="data" (Adam on the cross-entropy to the smoothed
    data distribution).
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference kind {kind!r}; expected one of {REFERENCE_KINDS}")
    num_prompts = scenario.num_prompts
    model = make_mlp(
        num_prompts, scenario.num_responses, hidden_size, sub_seed(scenario.seed, STREAM_REFERENCE), activation
    )
    if kind == "uniform":
        with torch.no_grad():
            model.out.weight.zero_()
            model.out.bias.zero_()
    elif kind == "data":
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"reference smoothing must be in (0, 1] so unseen cells keep mass, got {smoothing}")
        target = data_distribution(scenario, smoothing).to(torch.float32)  # (P, R)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
        for _ in range(steps):
            loss = -(target * table_logprobs(model, num_prompts)).sum(dim=-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.requires_grad_(False)
    return model.eval()


def policy_metrics(
    probs: torch.Tensor,
    ref_probs: torch.Tensor,
    scenario: SyntheticScenario,
    raised_margin: float = 0.01,
) -> dict[str, float | int | list[int] | None]:
    """The study's numbers for one policy table ``probs`` (P, R) against ``ref_probs`` (P, R).

    unseen_mass:  mean over prompts of the mass on the prompt's unseen responses.
    optimal_mass: mean over prompts of pi(y_i | x_i).
    cells_raised: number of unseen cells with pi > pi_ref + raised_margin.
    max_unseen_raise: largest pi - pi_ref over unseen cells (negative if all were lowered),
        with its cell and the two probabilities (the paper's "0.11 -> 0.23" example); None
        when every cell is covered.
    """
    unseen = scenario.unseen
    metrics: dict[str, float | int | list[int] | None] = {
        "unseen_mass": float(torch.where(unseen, probs, torch.zeros_like(probs)).sum(dim=-1).mean()),
        "optimal_mass": float(probs.diagonal().mean()),
        "cells_raised": int(((probs - ref_probs > raised_margin) & unseen).sum()),
        "max_unseen_raise": None,
        "max_unseen_raise_cell": None,
        "max_unseen_raise_from": None,
        "max_unseen_raise_to": None,
    }
    if bool(unseen.any()):  # full coverage leaves no unseen cell to report
        diff = torch.where(unseen, probs - ref_probs, torch.full_like(probs, -float("inf")))
        cell = divmod(int(torch.argmax(diff)), scenario.num_responses)
        metrics["max_unseen_raise"] = float(diff[cell])
        metrics["max_unseen_raise_cell"] = [int(cell[0]), int(cell[1])]
        metrics["max_unseen_raise_from"] = float(ref_probs[cell])
        metrics["max_unseen_raise_to"] = float(probs[cell])
    return metrics
