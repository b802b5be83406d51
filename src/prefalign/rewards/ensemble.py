"""Reward-model ensembles: k reward models trained alike (different seeds: head initialisation and data
order), read as one reward function with a conservative combination of their scores.

Combinations of the members' scores R_1..R_k of a response (Coste et al., ICLR 2024, "Reward Model
Ensembles Help Mitigate Overoptimization", section 3):

    mean  R = 1/k sum_i R_i
    wco   R = min_i R_i                                     (worst-case optimisation)
    uwo   R = 1/k sum_i R_i - lambda * 1/k sum_i (R_i - mean)^2   (uncertainty-weighted optimisation)

The variance of UWO is the population variance over the members (divide by k), as in the paper's
definition; ``unbiased=True`` of :func:`combine_member_scores` divides by k - 1 instead.

The ensemble folder (``prefalign rm --ensemble_size K`` writes one) holds ``ensemble.json``:
``{"members": ["member-0/model", ...]}``, paths relative to the folder, each an ordinary reward-model
folder. :func:`load_learned_reward` reads a plain reward-model folder or an ensemble folder alike.

Scoring: when the members share a tokenizer (and length limit), a batch is tokenised and padded once
and every member scores the same tensors, micro-batch by micro-batch (one pass over the batch, the k
forward passes of a micro-batch back to back); otherwise each member scores its own encoding.
Departure: Coste et al. combine the members' scores as they come; we do too, without per-member
normalisation, since the members are trained alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from prefalign.atomic import write_json_atomic
from prefalign.data.collate import pad_sequences
from prefalign.data.schema import Prompt
from prefalign.models.heads import sequence_scores
from prefalign.models.load import ModelConfig, disable_dropout, load_reward_model, load_tokenizer
from prefalign.rewards.learned import LearnedReward, same_tokenizer, trimmed_micro_batches

ENSEMBLE_RULES = ("mean", "wco", "uwo")
ENSEMBLE_FILE = "ensemble.json"


def combine_member_scores(scores: torch.Tensor, rule: str, uwo_lambda: float = 0.0, unbiased: bool = False):
    """(K, B) member scores -> (B,) combined score (see the module docstring for the formulas)."""
    if scores.dim() != 2 or scores.shape[0] < 1:
        raise ValueError(f"member scores must be (K, B) with K >= 1, got shape {tuple(scores.shape)}")
    if rule == "mean":
        return scores.mean(dim=0)
    if rule == "wco":
        return scores.min(dim=0).values
    if rule == "uwo":
        if scores.shape[0] < (2 if unbiased else 1):
            raise ValueError("uwo with unbiased=True needs at least 2 members")
        return scores.mean(dim=0) - uwo_lambda * scores.var(dim=0, unbiased=unbiased)
    raise ValueError(f"ensemble rule must be one of {ENSEMBLE_RULES}, got {rule!r}")


def check_ensemble_settings(prefix: str, rule: str, uwo_lambda: float) -> None:
    """Config validation shared by the commands that read a reward (``prefix``: the fields' parent, e.g. reward)."""
    if rule not in ENSEMBLE_RULES:
        raise ValueError(f"{prefix}ensemble must be one of {ENSEMBLE_RULES}, got {rule!r}")
    if uwo_lambda < 0:
        raise ValueError(f"{prefix}uwo_lambda must be >= 0, got {uwo_lambda}")


def is_ensemble_folder(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def ensemble_members(path: str | Path) -> list[Path]:
    """The member folders listed by ``<path>/ensemble.json``; a clear error for a malformed or incomplete folder."""
    manifest = Path(path) / ENSEMBLE_FILE
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest}: not a readable ensemble manifest ({err})") from err
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ValueError(f'{manifest}: needs "members", a non-empty list of member folders (relative paths)')
    folders = [Path(path) / m for m in members]
    for member, folder in zip(members, folders):
        if not (folder / "config.json").is_file():
            raise ValueError(f"{manifest}: member {member!r} is not a model folder ({folder}/config.json missing)")
    return folders


def write_ensemble_manifest(path: str | Path, members: Sequence[str], extra: dict | None = None) -> Path:
    """Write ``<path>/ensemble.json`` atomically (members: folder paths relative to ``path``)."""
    target = Path(path) / ENSEMBLE_FILE
    write_json_atomic(target, {"members": list(members), **(extra or {})})
    return target


class EnsembleReward:
    """k learned reward models scored together and combined by ``rule`` (mean, wco or uwo)."""

    def __init__(self, members: Sequence[LearnedReward], rule: str = "mean", uwo_lambda: float = 0.0, name: str = ""):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        check_ensemble_settings("", rule, uwo_lambda)
        self.members = list(members)
        self.rule, self.uwo_lambda = rule, uwo_lambda
        self.name = name or f"ensemble-{rule}"
        first = self.members[0]
        self.shared = all(
            same_tokenizer(m.tokenizer, first.tokenizer) and m.max_length == first.max_length for m in self.members
        )
        self.tokenizer = first.tokenizer if self.shared else None  # the token path needs one tokenizer
        self.micro_batch_size = first.micro_batch_size

    @torch.no_grad()
    def member_scores_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(K, B) float32 scores of (B, T) sequences by every member, on the CPU (members share a tokenizer)."""
        if not self.shared:
            raise ValueError("the ensemble's members do not share a tokenizer: score texts, not token ids")
        out = []
        for ids, mask in trimmed_micro_batches(input_ids, attention_mask, self.micro_batch_size):
            chunk = [sequence_scores(m.model, ids.to(m.device), mask.to(m.device)).float().cpu() for m in self.members]
            out.append(torch.stack(chunk))  # (K, b)
        return torch.cat(out, dim=1)

    def member_scores(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        """(K, B) scores of (prompt, response) texts by every member."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not self.shared:
            return torch.stack([m(prompts, responses) for m in self.members])
        first = self.members[0]
        rows = first.encode_many(prompts, responses)  # tokenised once for every member
        pad = first.tokenizer.pad_token_id if first.tokenizer.pad_token_id is not None else 0
        ids = pad_sequences(rows, pad)
        mask = pad_sequences([[1] * len(r) for r in rows], 0)
        return self.member_scores_tokens(ids, mask)

    def combine(self, member_scores: torch.Tensor) -> torch.Tensor:
        return combine_member_scores(member_scores, self.rule, self.uwo_lambda)

    def score_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) combined scores of (B, T) sequences."""
        return self.combine(self.member_scores_tokens(input_ids, attention_mask))

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        return self.combine(self.member_scores(prompts, responses))


def load_learned_reward(
    cfg: ModelConfig,
    device: torch.device | str,
    micro_batch_size: int,
    *,
    max_length: int | None = None,
    rule: str = "mean",
    uwo_lambda: float = 0.0,
    seed: int = 0,
    name: str | None = None,
) -> LearnedReward | EnsembleReward:
    """The reward model of ``cfg`` on ``device``: a :class:`LearnedReward`, or for an ensemble folder an
    :class:`EnsembleReward` combining its members by ``rule``. ``max_length`` None: each model's
    ``max_position_embeddings`` (e.g. 512 for a MiniLM reward model)."""

    def one(model_cfg: ModelConfig) -> LearnedReward:
        model = load_reward_model(model_cfg, seed=seed).to(device)
        disable_dropout(model)
        limit = max_length if max_length is not None else getattr(model.config, "max_position_embeddings", None)
        return LearnedReward(model, load_tokenizer(model_cfg), micro_batch_size, limit, name=name or "reward_model")

    if not is_ensemble_folder(cfg.name_or_path):
        return one(cfg)
    members = [one(dataclasses.replace(cfg, name_or_path=str(p))) for p in ensemble_members(cfg.name_or_path)]
    return EnsembleReward(members, rule, uwo_lambda, name=name or f"reward_model_ensemble[{rule}]")
