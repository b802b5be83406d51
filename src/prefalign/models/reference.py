"""The reference model: a frozen copy of the policy, optionally moved toward it by an EMA.

Xu et al. section 5 (third key factor): after each policy update the reference moves toward the
policy, ``ref <- (1 - rate) * ref + rate * policy``, every ``interval`` updates. With rate 0 the
reference stays the initial SFT model, as in standard PPO and DPO.
"""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedModel

from prefalign.models.load import disable_dropout


class ReferenceModel:
    """A frozen copy of a model; ``ema_update_(policy, rate)`` moves it toward the policy in place."""

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()
        disable_dropout(self.model)

    @classmethod
    def copy_of(cls, policy: torch.nn.Module) -> ReferenceModel:
        base = (
            policy.get_base_model()
            if hasattr(policy, "get_base_model") and hasattr(policy, "merge_and_unload")
            else policy
        )
        if base is not policy:
            raise TypeError(
                "a LoRA policy's reference is the base model with adapters disabled; copy the merged model instead"
            )
        return cls(copy.deepcopy(policy))

    @torch.no_grad()
    def ema_update_(self, policy: torch.nn.Module, rate: float) -> None:
        """ref <- (1 - rate) * ref + rate * policy, parameter by parameter (names must match)."""
        from prefalign.algorithms.ema import ema_update_

        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        ref_params = dict(self.model.named_parameters())
        pol_params = dict(policy.named_parameters())
        if ref_params.keys() != pol_params.keys():
            missing = sorted(set(ref_params) ^ set(pol_params))[:3]
            raise ValueError(f"reference and policy parameters differ, e.g. {missing}")
        names = list(ref_params)
        ema_update_([ref_params[n] for n in names], [pol_params[n] for n in names], rate)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
