"""The reference model: a frozen copy of the policy, optionally moved toward it by an EMA.

Xu et al. section 5 (third key factor): after each policy update the reference moves toward the
policy, ``ref <- (1 - rate) * ref + rate * policy``, every ``interval`` updates. With rate 0 the
reference stays the initial SFT model, as in standard PPO and DPO.

For a LoRA policy whose adapters start at zero, :class:`AdaptersOffReference` is the reference without a
second model: the policy's own forward with its adapters disabled (peft's ``disable_adapter()``, as TRL's
``null_ref_context``), which is exactly the starting policy as long as the base stays frozen.
"""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedModel

from prefalign.models.load import disable_dropout


class ReferenceModel:
    """A frozen copy of a model; ``ema_update_(policy, rate)`` moves it toward the policy in place."""

    shares_policy = False
    """True for :class:`AdaptersOffReference` (the policy's own weights): nothing to place, save or load."""

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


def adapters_off_obstacle(policy: torch.nn.Module) -> str | None:
    """Why the LoRA ``policy``'s base with its adapters disabled is *not* its starting point (None when it is).

    It is when the policy is a peft LoRA model whose trained parameters are its adapters alone (the base
    weights frozen, so the base stays what it was) and every adapter starts as a zero update (peft's
    default initialisation: ``lora_B`` = 0), so base-with-adapters-off = the policy before training.
    """
    if not (hasattr(policy, "disable_adapter") and hasattr(policy, "get_base_model")):
        return "the policy is not a peft (LoRA) model"
    if getattr(policy.get_base_model(), "_hf_peft_config_loaded", False):
        return "the policy's base already carries an adapter loaded by transformers (disabling peft's keeps it)"
    trained = [n for n, p in policy.named_parameters() if p.requires_grad and "lora_" not in n]
    if trained:
        return f"the policy trains parameters other than its LoRA adapters, e.g. {trained[0]}"
    for name, param in policy.named_parameters():
        if ("lora_B" in name or "lora_embedding_B" in name) and bool(param.detach().ne(0).any()):
            return f"the policy's LoRA adapter does not start at zero ({name} is non-zero): it was loaded or trained"
    return None


class _AdaptersOff(torch.nn.Module):
    """A view of a peft model whose forward runs with its adapters disabled (it holds no weights of its own).

    ``module`` is the peft model itself (the name :func:`prefalign.models.logprobs._output_embeddings` looks
    through), so ``parameters()`` are the policy's: the same device and dtype, nothing copied.
    """

    def __init__(self, peft_model: torch.nn.Module):
        super().__init__()
        self.module = peft_model

    def forward(self, *args, **kwargs):
        with self.module.disable_adapter():
            return self.module(*args, **kwargs)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.module.get_output_embeddings()


class AdaptersOffReference(ReferenceModel):
    """The reference as the LoRA policy's own base with its adapters switched off: no second model in memory.

    Valid only while the base is frozen and the adapters started at zero (:func:`adapters_off_obstacle`);
    the reference then never moves, so the EMA is refused and a checkpoint holds no reference weights
    (the base is inside the policy's). Pass the *unwrapped* policy (``accelerator.unwrap_model``).
    """

    shares_policy = True

    def __init__(self, policy: torch.nn.Module, checked: bool = False):
        """``checked``: :func:`adapters_off_obstacle` already found none on the policy before it was prepared (its
        parameters may be sharded now: FSDP2's DTensors, ZeRO-3's partitions). No ``super().__init__``: it would
        freeze the adapters."""
        obstacle = None if checked else adapters_off_obstacle(policy)
        if obstacle is not None:
            raise ValueError(f"the reference cannot be the policy with adapters off: {obstacle}")
        self.model = _AdaptersOff(policy)

    def ema_update_(self, policy: torch.nn.Module, rate: float) -> None:
        raise ValueError(
            "the reference is the policy's base with adapters off, shared with the policy: it cannot move by an EMA"
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError("the reference is the policy's base with adapters off: it loads no weights of its own")
