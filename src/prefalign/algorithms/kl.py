"""KL estimators, KL-penalised token rewards and KL-coefficient controllers.

The RLHF objective (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences", Eq. 2; Ivison et al. 2024, Eq. 4; Xu et al. 2024, section 2) maximises

    E_{y ~ pi}[ r(x, y) ] - beta * KL(pi(.|x) || pi_ref(.|x)),

and PPO implementations spread the KL term over the tokens: at every response token t

    reward_t = -beta * KL_t  (+ r(x, y) at the last response token).

KL_t is a single-sample estimate at the sampled token. With p = pi (the sampling policy),
q = pi_ref and log-ratio d_t = log p(y_t) - log q(y_t), the estimators of KL(p || q) are
(Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html):

    "k1":  d                      unbiased, high variance, can be negative per token
    "k2":  0.5 * d^2              biased (exact to second order), low variance, >= 0
    "k3":  exp(-d) - (-d) - 1     = (q/p - 1) - log(q/p); unbiased and >= 0, low variance
    "abs": |d|                    biased, >= 0 (used by some RLHF code bases)

Departure noted: the ``kl`` tensor returned by ``kl_penalized_rewards`` is the per-token
estimate itself (0 on masked positions), not multiplied by the coefficient.
"""

from __future__ import annotations

import math

import torch

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")


def kl_per_token(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) at the sampled tokens.

    logprobs:     (B, T) log pi(y_t | x, y_<t) of the policy that sampled y.
    ref_logprobs: (B, T) log pi_ref(y_t | x, y_<t).
    Returns (B, T); no masking is applied (see the module docstring for the estimators).
    """
    log_ratio = logprobs - ref_logprobs  # (B, T) d = log p - log q
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        neg = -log_ratio  # log(q/p)
        return torch.expm1(neg) - neg  # exp(q - p) - (q - p) - 1, in log space
    if estimator == "abs":
        return log_ratio.abs()
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``response_mask`` (B, T) -> (B,) long.

    Works for left or right padding and for prompts in front of the response.
    Raises ValueError if some row has no 1 (one host synchronisation).
    """
    mask = response_mask.bool()
    if not bool(mask.any(dim=-1).all()):
        empty = (~mask.any(dim=-1)).nonzero().flatten().tolist()
        raise ValueError(f"response_mask has rows with no response token: {empty}")
    length = mask.shape[-1]
    positions = torch.arange(length, device=mask.device).expand_as(mask)  # (B, T)
    return torch.where(mask, positions, torch.full_like(positions, -1)).amax(dim=-1)


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rewards -kl_coef * KL_t, plus the sequence score at the last real response token.

    Ivison et al. 2024, Eq. 4 / Ziegler et al. 2019, Eq. 2, spread over tokens.
    scores:        (B,) sequence-level reward r(x, y) (reward model, verifier, ...).
    logprobs:      (B, T) rollout-policy log-probs of the sampled tokens.
    ref_logprobs:  (B, T) reference-model log-probs of the same tokens.
    response_mask: (B, T) 1 on response tokens (EOS included when generated), 0 elsewhere.
    kl_coef:       beta, a float or a 0-dim tensor (e.g. ``AdaptiveKLController.value``).
    Returns (token_rewards, kl), both (B, T) and 0 on masked positions. The score goes to
    the position found by ``last_token_index``, never to column -1.
    """
    mask = response_mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    kl = torch.where(mask, kl_per_token(logprobs, ref_logprobs, estimator), zero)  # (B, T)
    token_rewards = -kl_coef * kl  # (B, T)
    last = last_token_index(mask)  # (B,)
    rows = torch.arange(mask.shape[0], device=mask.device)
    token_rewards = token_rewards.index_put((rows, last), scores.to(token_rewards.dtype), accumulate=True)
    return token_rewards, kl


class FixedKLController:
    """A constant KL coefficient with the same interface as ``AdaptiveKLController``."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> None:
        """No-op; present so that trainers can call ``update`` on either controller."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller of the KL coefficient (Ziegler et al. 2019, section 2.2).

        error  = clip(current_kl / target - 1, -0.2, 0.2)
        value <- value * (1 + error * n_steps / horizon)

    The paper writes beta <- beta * (1 + K_beta * error); its code (openai/lm-human-preferences)
    and TRL set K_beta = n_steps / horizon, which is what is implemented.

    current_kl is the measured KL(pi || pi_ref) per sequence (summed over tokens, averaged
    over the batch) and n_steps the number of samples (episodes) seen since the last update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> None:
        current = float(current_kl)
        if not math.isfinite(current):
            raise ValueError(f"current_kl must be finite, got {current}")
        error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])
