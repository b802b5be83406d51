"""Running statistics for value normalisation in PPO: cumulative (:class:`RunningMeanStd`) or
exponential (:class:`ExponentialMeanStd`, MAPPO / ReaLHF style; documented there).

``RunningMeanStd`` keeps the mean, the (population) variance and the count of everything it
has seen, and merges each new batch with the parallel formula of Chan, Golub and LeVeque
(1979, "Updating formulae and a pairwise algorithm for computing sample variances"), the
batched form of Welford's algorithm used by OpenAI baselines and Stable-Baselines3:

    delta    = mean_b - mean
    n'       = n + n_b
    mean'    = mean + delta * n_b / n'
    var'     = (var * n + var_b * n_b + delta^2 * n * n_b / n') / n'

Conventions:
* The state starts at mean 0, var 1 and count ``epsilon`` (1e-4, as in baselines), so the
  first batch dominates at once and nothing divides by zero; ``epsilon=0`` gives the exact
  statistics of the data seen.
* Statistics are kept in float64 on the CPU; ``normalize``/``denormalize`` move them to the
  input's device and return the input's dtype.
* ``normalize(x) = (x - mean) / sqrt(var + var_eps)``, ``denormalize`` is its exact inverse.
"""

from __future__ import annotations

import torch


class RunningMeanStd:
    """Running mean / variance over a stream of batches (parallel Welford merge).

    shape is the shape of one observation: () for scalar returns. ``update(x)`` takes x of
    shape (N, *shape), or any shape when shape == () (every element is one observation).
    """

    def __init__(self, epsilon: float = 1e-4, shape: tuple[int, ...] = (), var_eps: float = 1e-8) -> None:
        self.shape = tuple(shape)
        self.mean = torch.zeros(self.shape, dtype=torch.float64)
        self.var = torch.ones(self.shape, dtype=torch.float64)
        self.count = float(epsilon)
        self.var_eps = float(var_eps)

    @property
    def std(self) -> torch.Tensor:
        """sqrt(var), without ``var_eps``."""
        return self.var.sqrt()

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Merge the observations in x (optionally only where ``mask`` is 1) into the state.

        x: (N, *shape), or any shape when shape == (); mask: same leading shape as x without
        the trailing ``shape`` dimensions, e.g. (B, T) returns with the response mask.
        """
        data = x.detach().to(device="cpu", dtype=torch.float64)
        if mask is not None:
            data = data[mask.detach().to("cpu").bool()]
        data = data.reshape(-1, *self.shape)  # (N, *shape)
        batch_count = data.shape[0]
        if batch_count == 0:
            return
        batch_mean = data.mean(dim=0)
        batch_var = data.var(dim=0, unbiased=False)
        self._merge(batch_mean, batch_var, batch_count)

    def _merge(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_count: int) -> None:
        total = self.count + batch_count
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (batch_count / total)
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * (self.count * batch_count / total)
        self.mean = new_mean
        self.var = m2 / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / sqrt(var + var_eps), in x's dtype and device."""
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        scale = (self.var + self.var_eps).sqrt().to(device=x.device, dtype=x.dtype)
        return (x - mean) / scale

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """x * sqrt(var + var_eps) + mean, the inverse of ``normalize``."""
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        scale = (self.var + self.var_eps).sqrt().to(device=x.device, dtype=x.dtype)
        return x * scale + mean

    def state_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": self.count,
            "var_eps": self.var_eps,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("kind") == "ema":
            raise ValueError("checkpoint value statistics are exponential; this run keeps cumulative ones")
        mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
        if tuple(mean.shape) != self.shape:
            raise ValueError(f"state shape {tuple(mean.shape)} != RunningMeanStd shape {self.shape}")
        self.mean = mean
        self.var = torch.as_tensor(state["var"], dtype=torch.float64).clone()
        self.count = float(state["count"])
        self.var_eps = float(state.get("var_eps", self.var_eps))


class ExponentialMeanStd:
    """Exponentially weighted mean / variance with bias correction, for value normalisation.

    The MAPPO-style value normaliser (Yu et al. 2022, "The surprising effectiveness of PPO in
    cooperative multi-agent games", ``ValueNorm``), which ReaLHF, the public framework of Xu et al.'s
    group, uses for PPO with ``beta = 0.99995``. Each ``update`` takes the (masked) mean ``m_b`` and
    mean square ``s_b`` of one batch and moves

        mean_ema    <- beta * mean_ema    + (1 - beta) * m_b
        sq_ema      <- beta * sq_ema      + (1 - beta) * s_b
        debias      <- beta * debias      + (1 - beta)
        mean = mean_ema / max(debias, epsilon),   var = max(sq_ema / max(debias, epsilon) - mean^2, var_floor)

    so a batch's weight is ``(1 - beta)``, every batch counts the same whatever its size, and the
    bias correction makes the first batch's statistics exact (``debias`` is the sum of the weights).

    Conventions: statistics in float64 on the CPU; before any update, mean 0 and var 1 (MAPPO would give
    var ``var_floor`` there; ours makes ``denormalize`` the identity for an untrained critic);
    ``normalize(x) = (x - mean) / sqrt(var)`` and ``denormalize`` is its exact inverse (no output
    clipping). Same interface as :class:`RunningMeanStd`.
    """

    def __init__(self, beta: float = 0.99995, epsilon: float = 1e-5, var_floor: float = 1e-2) -> None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        self.beta, self.epsilon, self.var_floor = float(beta), float(epsilon), float(var_floor)
        self.mean_ema = torch.zeros((), dtype=torch.float64)
        self.sq_ema = torch.zeros((), dtype=torch.float64)
        self.debias = torch.zeros((), dtype=torch.float64)

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Merge one batch: every element of x (where ``mask`` is 1) is one observation."""
        data = x.detach().to(device="cpu", dtype=torch.float64)
        if mask is not None:
            data = data[mask.detach().to("cpu").bool()]
        if data.numel() == 0:
            return
        b = self.beta
        self.mean_ema = b * self.mean_ema + (1 - b) * data.mean()
        self.sq_ema = b * self.sq_ema + (1 - b) * data.square().mean()
        self.debias = b * self.debias + (1 - b)

    @property
    def mean(self) -> torch.Tensor:
        if float(self.debias) == 0.0:
            return torch.zeros((), dtype=torch.float64)
        return self.mean_ema / self.debias.clamp(min=self.epsilon)

    @property
    def var(self) -> torch.Tensor:
        if float(self.debias) == 0.0:
            return torch.ones((), dtype=torch.float64)
        return (self.sq_ema / self.debias.clamp(min=self.epsilon) - self.mean.square()).clamp(min=self.var_floor)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, in x's dtype and device."""
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """x * std + mean, the inverse of ``normalize``."""
        return x * self.std.to(x.device, x.dtype) + self.mean.to(x.device, x.dtype)

    def state_dict(self) -> dict[str, object]:
        return {
            "kind": "ema",
            "beta": self.beta,
            "mean_ema": self.mean_ema.clone(),
            "sq_ema": self.sq_ema.clone(),
            "debias": self.debias.clone(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("kind") != "ema" or float(state["beta"]) != self.beta:
            raise ValueError(
                f"checkpoint value statistics {state.get('kind')!r} beta {state.get('beta')} do not match "
                f"this run's EMA beta {self.beta} (ppo.value_normalization_beta)"
            )
        for name in ("mean_ema", "sq_ema", "debias"):
            setattr(self, name, torch.as_tensor(state[name], dtype=torch.float64).clone())
