"""Xu et al. (2024), section 4.1: the counter-example (Table 1) and Theorem 4.1, numerically.

Notation: pi_ref the reference, r a reward, beta the KL coefficient (= DPO's beta).

* Eq. 8, the maximiser of E_pi[r] - beta KL(pi || pi_ref):  pi*(y|x) ∝ pi_ref(y|x) exp(r(x,y)/beta).
  :func:`kl_regularized_optimum` computes it in log space, log_softmax(log pi_ref + r / beta),
  which gives pi*(y) = 0 exactly where pi_ref(y) = 0 (log pi_ref = -inf) for any finite r.
* The identity behind Theorem 4.1's first half: DPO's implicit reward of pi* is
  beta log(pi*/pi_ref) = r - beta log Z(x), and the prompt constant log Z(x) cancels inside
  every pair, so  DPO-loss(pi*_r) = BT-loss(r)  for every reward r (also with cDPO label
  smoothing s, against the same smoothing of BT). Hence if r minimises the BT loss, pi*_r
  (the PPO solution) minimises the DPO loss: Pi_PPO ⊆ Pi_DPO.
* Why the inclusion can be proper (the counter-example, :func:`counter_example`): three
  actions, pi_ref = (0.5, 0.5, 0), one pair y1 > y2. The DPO loss only reads log-ratios of
  y1 and y2; y3 is in no pair, so its mass is free. As pi(y2) -> 0 the loss tends to 0, its
  infimum, whatever pi(y3) is, so pi_DPO = (0.1, 0, 0.9) is a (limit) minimiser. PPO cannot
  go there: KL((0.1, 0, 0.9) || pi_ref) = +inf because 0.9 log(0.9 / 0) = +inf, so its
  KL-regularised objective is -inf, and Eq. 8 puts exactly 0 on y3.

Careful arithmetic at the zeros:
* log pi_ref(y3) = -inf. The implicit reward of y3 is beta log(pi(y3)/0) = +inf when
  pi(y3) > 0 and the undefined 0/0 when pi(y3) = 0; neither ever enters the DPO loss,
  because y3 is in no pair, so we never form it.
* At the boundary pi(y2) = 0 the DPO logit beta (log(pi(y1)/pi_ref(y1)) - log(0/pi_ref(y2)))
  is +inf and the loss is -log sigmoid(+inf) = 0 exactly; the shared ``dpo_loss`` returns that
  0 for label_smoothing = 0 (it skips the s log sigmoid(-h) term, which would be 0 * inf =
  NaN). We report it (``dpo_loss_at_dpo_policy``) and also the approach to it along the path
  pi_eps = (0.1, eps, 0.9 - eps), eps -> 1e-300 in float64, where the loss is finite and falls
  to ~1e-30 -- slowly, since the logit grows only like beta log(1/eps).
* KL(p || q) uses 0 log(0/q) = 0 and p log(p/0) = +inf for p > 0.

Departure: the paper proves the theorem over all policies and rewards; the numerical check
minimises over *tabular* rewards and policies (one free number per cell), where the minima are
exactly comparable, and uses cDPO label smoothing s > 0 (with the matching smoothed BT loss) so
that the minimum is attained: our preference data are separable, and with s = 0 the infimum 0
is approached only as the margins diverge.
"""

from __future__ import annotations

import copy
import math

import torch

from prefalign.algorithms.preference import bradley_terry_loss, dpo_loss
from prefalign.studies.synthetic.scenario import PromptMLP, SyntheticScenario, single_threaded, table_logprobs
from prefalign.studies.synthetic.training import pair_values, reward_table


def kl_regularized_optimum(ref_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi* with pi* ∝ pi_ref exp(r / beta) (Xu et al. 2024, Eq. 8), per row.

    ref_logprobs, rewards: (P, R) (or (R,)); -inf in ref_logprobs gives pi* = 0 there.
    Returns log pi*, same shape.
    """
    return torch.log_softmax(ref_logprobs + rewards / beta, dim=-1)


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) per row, (P, R) -> (P,), with 0 log(0/q) = 0 and p log(p/0) = +inf."""
    probs = logprobs.exp()
    terms = torch.where(probs > 0, probs * (logprobs - ref_logprobs), torch.zeros_like(probs))
    return terms.sum(dim=-1)


def kl_regularized_objective(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float
) -> torch.Tensor:
    """E_pi[r] - beta KL(pi || pi_ref) per row (P,), the objective PPO ascends (Eq. 5)."""
    probs = logprobs.exp()
    expected = torch.where(probs > 0, probs * rewards, torch.zeros_like(probs)).sum(dim=-1)
    return expected - beta * kl_divergence(logprobs, ref_logprobs)


def dpo_loss_of_table(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    scenario: SyntheticScenario,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean DPO loss over the scenario's pairs of a policy table log pi (P, R); 0-dim."""
    chosen, rejected = pair_values(logprobs, scenario)
    ref_chosen, ref_rejected = pair_values(ref_logprobs, scenario)
    losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, label_smoothing)
    return losses.mean()


def bradley_terry_loss_of_table(
    rewards: torch.Tensor, scenario: SyntheticScenario, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean BT loss over the pairs of a reward table r (P, R); 0-dim.

    label_smoothing s: (1 - s) BT(y_c > y_r) + s BT(y_r > y_c), the reward-model counterpart
    of cDPO (for s = 0 the second term is not formed).
    """
    chosen, rejected = pair_values(rewards, scenario)
    losses = bradley_terry_loss(chosen, rejected)
    if label_smoothing:
        losses = (1.0 - label_smoothing) * losses + label_smoothing * bradley_terry_loss(rejected, chosen)
    return losses.mean()


def counter_example(
    beta: float = 0.1,
    rejected_probs: tuple[float, ...] = (1e-1, 1e-2, 1e-5, 1e-10, 1e-20, 1e-50, 1e-100, 1e-300),
    reward_margins: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0),
    unseen_reward: float = 10.0,
) -> dict:
    """Table 1 of Xu et al. (2024), in float64 (arithmetic at the zeros: module docstring).

    rejected_probs: the path pi_eps = (0.1, eps, 0.9 - eps) along which the DPO loss is taken.
    reward_margins: rewards r = (margin, 0, unseen_reward) for the PPO solution pi*_r; any BT
        fit of the single pair has r1 - r2 = margin > 0 and leaves r3 free -- we give y3 a
        reward higher than y1's to show that pi*(y3) stays 0 regardless.
    """
    f64 = dict(dtype=torch.float64)
    ref = torch.tensor([0.5, 0.5, 0.0], **f64)
    ref_logp = ref.log()  # log 0 = -inf on y3
    one = lambda value: torch.tensor([value], **f64)  # noqa: E731
    path = []
    for eps in rejected_probs:
        loss, _, _ = dpo_loss(one(math.log(0.1)), one(math.log(eps)), ref_logp[:1], ref_logp[1:2], beta)
        path.append({"pi": [0.1, eps, 0.9 - eps], "dpo_loss": float(loss)})
    dpo_policy = torch.tensor([0.1, 0.0, 0.9], **f64)
    dpo_policy_logp = dpo_policy.log()  # log 0 = -inf on y2
    at_policy, _, _ = dpo_loss(dpo_policy_logp[:1], dpo_policy_logp[1:2], ref_logp[:1], ref_logp[1:2], beta)
    ppo_rows = []
    for margin in reward_margins:
        reward = torch.tensor([margin, 0.0, unseen_reward], **f64)
        star = kl_regularized_optimum(ref_logp, reward, beta)  # (3,) log pi*
        loss, _, _ = dpo_loss(star[:1], star[1:2], ref_logp[:1], ref_logp[1:2], beta)
        ppo_rows.append(
            {
                "reward": reward.tolist(),
                "pi": star.exp().tolist(),
                "dpo_loss": float(loss),
                "bt_loss": float(bradley_terry_loss(reward[:1], reward[1:2])),
                "kl_to_reference": float(kl_divergence(star, ref_logp)),
            }
        )
    limit_reward = torch.tensor([reward_margins[-1], 0.0, unseen_reward], **f64)
    return {
        "beta": beta,
        "reference": ref.tolist(),
        "preference": "y1 > y2",
        "dpo_policy": dpo_policy.tolist(),
        "dpo_loss_path": path,
        "dpo_loss_at_dpo_policy": float(at_policy) + 0.0,  # + 0.0 turns -log sigmoid(inf) = -0.0 into 0.0
        "dpo_loss_infimum": 0.0,  # -log sigmoid(.) > 0 for every finite logit: 0 is the bound
        "dpo_policy_kl_to_reference": float(kl_divergence(dpo_policy_logp, ref_logp)),  # +inf
        "dpo_policy_ppo_objective": float(kl_regularized_objective(dpo_policy_logp, ref_logp, limit_reward, beta)),
        "ppo_solutions": ppo_rows,
        "ppo_policy_limit": [1.0, 0.0, 0.0],  # pi*_r as margin -> inf, with DPO loss -> 0
    }


def _minimise(loss_fn, start: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, float, float]:
    """L-BFGS (strong Wolfe) on one float64 tensor; returns (argmin, loss, gradient max-norm)."""
    param = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [param],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss_fn(param)
        value.backward()
        return value

    optimizer.step(closure)
    value = loss_fn(param)
    (grad,) = torch.autograd.grad(value, param)
    return param.detach(), float(value.detach()), float(grad.abs().max())


def _move_mass_to_unseen(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, unseen: torch.Tensor, mass: float
) -> torch.Tensor:
    """log pi' (P, R): pi's covered cells scaled to 1 - mass, pi_ref's unseen cells scaled to mass.

    Rows without unseen cells are returned unchanged. Ratios within the covered cells, the
    only thing the DPO loss reads, are kept exactly.
    """
    if not 0.0 < mass < 1.0:
        raise ValueError(f"unseen_target_mass must be in (0, 1), got {mass}")
    minus_inf = torch.full_like(logprobs, -math.inf)
    covered_part = torch.log_softmax(torch.where(unseen, minus_inf, logprobs), dim=-1) + math.log1p(-mass)
    unseen_part = torch.log_softmax(torch.where(unseen, ref_logprobs, minus_inf), dim=-1) + math.log(mass)
    moved = torch.where(unseen, unseen_part, covered_part)
    return torch.where(unseen.any(dim=-1, keepdim=True), moved, logprobs)


def _identity_checks(
    scenario: SyntheticScenario, ref_logp: torch.Tensor, rewards: torch.Tensor, dpo_logp: torch.Tensor, beta: float
) -> dict[str, dict[str, float]]:
    """Checks 1 and 2 of :func:`check_theorem` (float64 tables (P, R))."""
    star = kl_regularized_optimum(ref_logp, rewards, beta)
    dpo_at_star = float(dpo_loss_of_table(star, ref_logp, scenario, beta))
    bt_learned = float(bradley_terry_loss_of_table(rewards, scenario))
    implicit = beta * (dpo_logp - ref_logp)  # (P, R) r_D
    dpo_trained = float(dpo_loss_of_table(dpo_logp, ref_logp, scenario, beta))
    bt_implicit = float(bradley_terry_loss_of_table(implicit, scenario))
    gap = (kl_regularized_optimum(ref_logp, implicit, beta) - dpo_logp).abs().max()
    return {
        "learned_reward": {
            "dpo_loss_at_kl_optimum": dpo_at_star,
            "bt_loss_of_reward": bt_learned,
            "abs_difference": abs(dpo_at_star - bt_learned),
        },
        "trained_dpo": {
            "dpo_loss": dpo_trained,
            "bt_loss_of_implicit_reward": bt_implicit,
            "abs_difference": abs(dpo_trained - bt_implicit),
            "max_abs_logprob_gap_to_kl_optimum": float(gap),
        },
    }


def _minimum_checks(
    scenario: SyntheticScenario,
    ref_logp: torch.Tensor,
    beta: float,
    smoothing: float,
    unseen_mass: float,
    max_iter: int,
) -> dict[str, dict[str, float]]:
    """Checks 3 and 4 of :func:`check_theorem` (tabular minimisation, flat unseen direction)."""
    bt = lambda r: bradley_terry_loss_of_table(r, scenario, smoothing)  # noqa: E731
    dpo = lambda logp: dpo_loss_of_table(logp, ref_logp, scenario, beta, smoothing)  # noqa: E731
    r_min, bt_min, bt_grad = _minimise(bt, torch.zeros_like(ref_logp), max_iter)
    logits_min, dpo_min, dpo_grad = _minimise(lambda z: dpo(torch.log_softmax(z, dim=-1)), ref_logp.clone(), max_iter)
    star_min = kl_regularized_optimum(ref_logp, r_min, beta)
    dpo_at_star_min = float(dpo(star_min))
    moved = _move_mass_to_unseen(star_min, ref_logp, scenario.unseen, unseen_mass)
    unseen_of = lambda logp: float((logp.exp() * scenario.unseen).sum(dim=-1).mean())  # noqa: E731
    objective = lambda logp: float(kl_regularized_objective(logp, ref_logp, r_min, beta).mean())  # noqa: E731
    return {
        "minimum": {
            "label_smoothing": smoothing,
            "min_bt_loss": bt_min,
            "min_dpo_loss": dpo_min,
            "dpo_loss_at_kl_optimum_of_bt_minimiser": dpo_at_star_min,
            "max_abs_difference": max(
                abs(bt_min - dpo_min), abs(dpo_at_star_min - bt_min), abs(dpo_at_star_min - dpo_min)
            ),
            "bt_gradient_max": bt_grad,
            "dpo_gradient_max": dpo_grad,
            "dpo_minimiser_logits_finite": bool(torch.isfinite(logits_min).all()),
        },
        "flat_unseen_direction": {
            "unseen_target_mass": unseen_mass,
            "dpo_loss_kl_optimum": dpo_at_star_min,
            "dpo_loss_boosted": float(dpo(moved)),
            "objective_kl_optimum": objective(star_min),
            "objective_boosted": objective(moved),
            "unseen_mass_kl_optimum": unseen_of(star_min),
            "unseen_mass_boosted": unseen_of(moved),
        },
    }


@single_threaded
def check_theorem(
    scenario: SyntheticScenario,
    reference: PromptMLP,
    reward_model: PromptMLP,
    dpo_policy: PromptMLP,
    beta: float,
    label_smoothing: float = 0.1,
    unseen_target_mass: float = 0.5,
    max_iter: int = 500,
) -> dict[str, dict[str, float]]:
    """Theorem 4.1's first half on one 8x8 scenario, in float64; see the module docstring.

    1. learned reward r (the reward model): DPO-loss(pi*_r) against BT-loss(r);
    2. trained DPO policy: its implicit reward r_D = beta log(pi_D/pi_ref) has
       BT-loss(r_D) = DPO-loss(pi_D) and pi*_{r_D} = pi_D (DPO's output is itself Eq. 8's
       optimum for its own implicit reward);
    3. minima with label smoothing s: min_r BT_s (tabular r), min_pi DPO_s (tabular pi) and
       DPO_s(pi*_{r_min}) coincide -- pi*_{r_min} attains the minimal DPO loss;
    4. the DPO loss is flat along unseen cells: pi' that keeps pi*_{r_min}'s ratios among each
       prompt's covered cells but puts ``unseen_target_mass`` on its unseen cells (shared in
       pi_ref's proportions) has the same (minimal) DPO loss but a lower KL-regularised
       objective for r_min, so it is DPO-optimal without being the PPO solution for r_min.
       (It is the PPO solution of another BT minimiser, r_min shifted on the unseen cells --
       BT never reads them; with pi_ref > 0 everywhere the two solution sets differ only
       through which reward the unseen cells get; the proper inclusion needs pi_ref = 0
       somewhere, as in the counter-example.)
    The callers' models are not modified (float64 copies are evaluated).
    """
    as64 = lambda model: copy.deepcopy(model).to(torch.float64)  # noqa: E731
    with torch.no_grad():
        ref_logp = table_logprobs(as64(reference), scenario.num_prompts)  # (P, R)
        rewards = reward_table(as64(reward_model), scenario.num_prompts)  # (P, R)
        dpo_logp = table_logprobs(as64(dpo_policy), scenario.num_prompts)  # (P, R)
    return _identity_checks(scenario, ref_logp, rewards, dpo_logp, beta) | _minimum_checks(
        scenario, ref_logp, beta, label_smoothing, unseen_target_mass, max_iter
    )
