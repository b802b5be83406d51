"""Running mean and variance, for value normalisation in PPO.

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
        mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
        if tuple(mean.shape) != self.shape:
            raise ValueError(f"state shape {tuple(mean.shape)} != RunningMeanStd shape {self.shape}")
        self.mean = mean
        self.var = torch.as_tensor(state["var"], dtype=torch.float64).clone()
        self.count = float(state["count"])
        self.var_eps = float(state.get("var_eps", self.var_eps))
