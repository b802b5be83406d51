"""Preference losses: Bradley-Terry reward modelling, DPO, RRHF and PRO.

All inputs are *sequence-level* log-probabilities: the sum over response tokens of
log pi(y_t | x, y_<t) (B,) or, for list-wise losses, (B, K) for K responses per prompt.
Each function returns per-example losses (B,) so that the caller chooses the reduction.

Bradley-Terry (Xu et al. 2024, Eq. 4; Ouyang et al. 2022, Eq. 1):
    L_BT = -log sigmoid(r(x, y_c) - r(x, y_r) [- margin])
    ``margin`` is the Llama-2 (Touvron et al. 2023, Eq. 2) preference-strength margin.

DPO (Rafailov et al. 2023, Eq. 7; Xu et al. 2024, Eq. 7):
    h     = [log pi(y_c) - log pi_ref(y_c)] - [log pi(y_r) - log pi_ref(y_r)]
    L_DPO = -(1 - s) log sigmoid(beta h) - s log sigmoid(-beta h)
    s = ``label_smoothing`` is conservative DPO (cDPO, Mitchell 2023): the label is assumed
    flipped with probability s; s = 0 is the paper's loss. Implicit rewards
    beta * (log pi - log pi_ref) are returned detached.

RRHF (Yuan et al. 2023, "RRHF: Rank Responses to Align Language Models with Human Feedback
without tears"), for K responses y_1..y_K with scores r_1..r_K:
    p_i    = sum_t log pi(y_{i,t} | x, y_{i,<t}) / |y_i|          (Eq. 1, length-normalised)
    L_rank = sum_{i, j : r_i < r_j} max(0, p_i - p_j)               (Eq. 2)
    i'     = argmax_i r_i
    L_ft   = -sum_t log pi(y_{i',t} | x, y_{i',<t})                 (Eq. 3)
    L      = L_rank + sft_weight * L_ft                             (Eq. 4, sft_weight = 1)
  Departures: ``length_normalized=False`` uses the summed log-prob for p_i (the official
  code's ``length_penalty = 0``). Pairs with equal scores are not ranked (strict r_i < r_j).
  Ties for the best score take the first index. The official code (GanjinZero/RRHF,
  train.py) averages L_ft over the padded token positions instead of summing; we follow the
  paper's sum. ``sft_logps`` lets the caller give the log-probs used by L_ft separately.

PRO (Song et al. 2024, "Preference Ranking Optimization for Human Alignment", AAAI), for a
list ranked best first y^1 > y^2 > ... > y^n with scores s_1 >= s_2 >= ... >= s_n:
    r_k = sum_t log pi(y^k_t | x, y^k_<t) / |y^k|                   (length-normalised)
    L_PRO = -sum_{k=1}^{n-1} log [ exp(r_k / T_k^k) / sum_{i=k}^{n} exp(r_i / T_k^i) ]
    T_k^i = 1 / (s_k - s_i)  for i > k,    T_k^k = min_{i > k} T_k^i   (dynamic temperature)
    L     = L_PRO + sft_weight * L_SFT,    L_SFT = -sum_t log pi(y^1_t | x, y^1_<t)
  ``temperature_from_scores=False`` gives the paper's basic form with every T = 1.
  Implementation and departures:
  * 1/T is used as a multiplier, 1/T_k^i = s_k - s_i and 1/T_k^k = max_{i>k}(s_k - s_i), as
    the authors' code does (AlibabaResearch/DAMO-ConvAI, PRO/train/utils/process_manager.py).
    A tie s_i = s_k then gives the finite limit r_i / T = 0 instead of dividing by zero.
  * The authors' code adds 1e-10 inside the log; we use logsumexp and no epsilon.
  * L_SFT is the summed (not length-normalised) NLL of y^1, as in the authors' code. Their
    code also multiplies the SFT term by (n - 1)^2 (with sft_weight = 0.05 in their scripts);
    ``scale_sft_by_ranking_length=True`` reproduces that, the default follows the paper.
  * Scores must be non-increasing along K (ValueError otherwise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """-log sigmoid(r_c - r_r [- margin]) (Xu et al. 2024, Eq. 4), per pair.

    chosen_rewards, rejected_rewards: (B,) reward-model outputs; margin: (B,) or scalar.
    Returns losses (B,).
    """
    logits = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        logits = logits - margin
    return -F.logsigmoid(logits)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss (Rafailov et al. 2023, Eq. 7; Xu et al. 2024, Eq. 7), cDPO with smoothing.

    All inputs (B,): summed response log-probs under the policy and the reference.
    Returns (losses, chosen_rewards, rejected_rewards), all (B,); rewards are detached
    implicit rewards beta * (log pi - log pi_ref).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    if label_smoothing > 0:  # skipped at 0: an infinite margin (a zero-probability response) would give 0 * inf = nan
        losses = losses - label_smoothing * F.logsigmoid(-logits)
    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    return losses, chosen_rewards, rejected_rewards


def _length_normalize(seq_logps: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        raise ValueError("lengths (B, K) are required for length-normalised log-probs")
    if lengths.shape != seq_logps.shape:
        raise ValueError(f"lengths shape {tuple(lengths.shape)} != seq_logps shape {tuple(seq_logps.shape)}")
    return seq_logps / lengths.clamp(min=1).to(seq_logps.dtype)


def rrhf_loss(
    seq_logps: torch.Tensor,
    scores: torch.Tensor,
    sft_logps: torch.Tensor | None = None,
    length_normalized: bool = True,
    sft_weight: float = 1.0,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RRHF ranking + fine-tuning loss (Yuan et al. 2023, Eq. 1-4), per prompt.

    seq_logps: (B, K) summed response log-probs of K responses per prompt (any order).
    scores:    (B, K) reward of each response.
    sft_logps: (B, K) summed log-probs used by L_ft; default ``seq_logps``.
    lengths:   (B, K) response lengths in tokens; required when length_normalized.
    Returns (loss (B,), stats) with detached 0-dim means ``rank_loss`` and ``sft_loss``.
    """
    p = _length_normalize(seq_logps, lengths) if length_normalized else seq_logps  # (B, K)
    # pair (i, j) counts when r_i < r_j; its hinge is max(0, p_i - p_j)
    worse = scores.unsqueeze(-1) < scores.unsqueeze(-2)  # (B, K, K) [b, i, j] = r_i < r_j
    hinge = torch.relu(p.unsqueeze(-1) - p.unsqueeze(-2))  # (B, K, K) max(0, p_i - p_j)
    rank = torch.where(worse, hinge, torch.zeros_like(hinge)).sum(dim=(-2, -1))  # (B,)
    ft_source = seq_logps if sft_logps is None else sft_logps  # (B, K)
    best = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
    ft = -ft_source.gather(-1, best).squeeze(-1)  # (B,)
    loss = rank + sft_weight * ft
    stats = {"rank_loss": rank.detach().mean(), "sft_loss": ft.detach().mean()}
    return loss, stats


def pro_loss(
    seq_logps: torch.Tensor,
    scores: torch.Tensor,
    lengths: torch.Tensor,
    sft_weight: float = 0.05,
    temperature_from_scores: bool = True,
    scale_sft_by_ranking_length: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PRO loss (Song et al. 2024) with dynamic temperature and an SFT term on the best response.

    seq_logps: (B, K) summed response log-probs, responses ordered best first.
    scores:    (B, K) reward-model scores, non-increasing along K.
    lengths:   (B, K) response lengths in tokens (for the length-normalised r_k).
    Returns (loss (B,), stats) with detached 0-dim means ``rank_loss`` and ``sft_loss``.
    The formula and its departures from the paper are in the module docstring.
    """
    num = seq_logps.shape[-1]
    if num < 2:
        raise ValueError(f"PRO needs at least 2 ranked responses, got K={num}")
    if bool((scores[..., 1:] > scores[..., :-1]).any()):
        raise ValueError("pro_loss expects responses ordered best first (scores non-increasing along K)")
    r = _length_normalize(seq_logps, lengths)  # (B, K)
    rank = torch.zeros_like(r[..., 0])  # (B,)
    for k in range(num - 1):
        if temperature_from_scores:
            inv_temp_rest = (scores[..., k : k + 1] - scores[..., k + 1 :]).to(r.dtype)  # (B, K-k-1)
            inv_temp_top = inv_temp_rest.amax(dim=-1, keepdim=True)  # (B, 1) 1/T_k^k
        else:
            inv_temp_rest = torch.ones_like(r[..., k + 1 :])
            inv_temp_top = torch.ones_like(r[..., k : k + 1])
        top = r[..., k : k + 1] * inv_temp_top  # (B, 1)
        rest = r[..., k + 1 :] * inv_temp_rest  # (B, K-k-1)
        logits = torch.cat([top, rest], dim=-1)  # (B, K-k)
        rank = rank + torch.logsumexp(logits, dim=-1) - top.squeeze(-1)
    sft = -seq_logps[..., 0]  # (B,) NLL of the best response
    weight = sft_weight * ((num - 1) ** 2 if scale_sft_by_ranking_length else 1)
    loss = rank + weight * sft
    stats = {"rank_loss": rank.detach().mean(), "sft_loss": sft.detach().mean()}
    return loss, stats
