"""PPO's reference under LoRA as the policy's own base with its adapters off (``ppo.reference_from_adapters``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from prefalign.config import merge
from prefalign.models.load import ModelConfig, load_causal_lm
from prefalign.models.reference import AdaptersOffReference, adapters_off_obstacle
from prefalign.rollout.experience import rollout_logprobs
from prefalign.rollout.generate import Rollout
from prefalign.trainers.checkpoint import checkpoint_model_files
from prefalign.trainers.ppo.setup import build_parts, use_adapters_off
from prefalign.trainers.ppo.trainer import run_ppo
from tests.trainers.ppo.helpers import tiny_config

LORA = {"policy": {"lora": True, "lora_r": 4, "lora_alpha": 8}}


def _lora_policy(seed: int = 0) -> torch.nn.Module:
    return load_causal_lm(ModelConfig(name_or_path="tiny-random", lora=True, lora_r=4, lora_alpha=8), seed=seed)


def _train_adapters_(policy: torch.nn.Module) -> None:
    """Move every adapter off zero, as training does (the base stays frozen)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))


def _rollout(vocab: int) -> Rollout:
    generator = torch.Generator().manual_seed(2)
    sequences = torch.randint(3, vocab, (4, 10), generator=generator)
    attention = torch.ones_like(sequences)
    response = torch.zeros_like(sequences)
    response[:, 5:] = 1
    attention[0, 8:] = response[0, 8:] = 0  # a right-padded (shorter) response
    return Rollout(
        sequences=sequences,
        attention_mask=attention,
        response_mask=response,
        ended_with_eos=torch.zeros(4, dtype=torch.bool),
        prompt_index=torch.arange(4),
        prompt_lengths=torch.full((4,), 5),
        response_lengths=response.sum(1),
        response_texts=[""] * 4,
    )


def test_adapters_off_log_probs_equal_a_separate_base_copy():
    policy = _lora_policy()
    reference = AdaptersOffReference(policy)  # built while the adapters are at zero
    _train_adapters_(policy)
    base = load_causal_lm(ModelConfig(name_or_path="tiny-random"), seed=0).eval()
    rollout = _rollout(base.config.vocab_size)
    with torch.no_grad():
        off = rollout_logprobs(reference.model, rollout, 2, 0.7)
        separate = rollout_logprobs(base, rollout, 2, 0.7)
        on = rollout_logprobs(policy, rollout, 2, 0.7)
    assert (off - separate).abs().max() < 1e-6
    assert (on - separate).abs().max() > 1e-3  # the trained adapters do change the policy
    # the adapters are back on after the reference's forward, and still trained
    with torch.no_grad():
        assert torch.equal(rollout_logprobs(policy, rollout, 2, 0.7), on)
    lora = [p for n, p in policy.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    assert list(reference.model.parameters())[0] is list(policy.parameters())[0]  # nothing copied
    with pytest.raises(ValueError, match="cannot move by an EMA"):
        reference.ema_update_(policy, 0.1)


def test_obstacles_refuse_on_and_fall_back_under_auto(tmp_path):
    policy = _lora_policy()
    assert adapters_off_obstacle(policy) is None
    on, auto = (tiny_config(tmp_path, merge(LORA, {"ppo": {"reference_from_adapters": s}})) for s in ("on", "auto"))
    off = tiny_config(tmp_path, merge(LORA, {"ppo": {"reference_from_adapters": "off"}}))
    assert use_adapters_off(on, policy) and use_adapters_off(auto, policy) and not use_adapters_off(off, policy)
    _train_adapters_(policy)  # a policy whose adapters do not start at zero (loaded, or trained before)
    assert "does not start at zero" in adapters_off_obstacle(policy)
    with pytest.raises(ValueError, match="ppo.reference_from_adapters=on: .*lora_B"):
        use_adapters_off(on, policy)
    assert not use_adapters_off(auto, policy)
    with pytest.raises(ValueError, match="does not start at zero"):
        AdaptersOffReference(policy)
    fresh = _lora_policy()
    fresh.get_base_model().model.norm.weight.requires_grad_(True)  # a trained base weight
    assert "other than its LoRA adapters" in adapters_off_obstacle(fresh)
    full = load_causal_lm(ModelConfig(name_or_path="tiny-random"), seed=0)
    assert "not a peft" in adapters_off_obstacle(full)
    assert not use_adapters_off(tiny_config(tmp_path), full)


def test_config_refuses_on_without_lora_and_unknown_values(tmp_path):
    with pytest.raises(ValueError, match="reference_from_adapters=on needs a LoRA policy"):
        tiny_config(tmp_path, {"ppo": {"reference_from_adapters": "on"}})
    with pytest.raises(ValueError, match="reference_from_adapters must be auto, on or off"):
        tiny_config(tmp_path, merge(LORA, {"ppo": {"reference_from_adapters": "yes"}}))


def _held_parameters(parts) -> int:
    """Elements of the distinct parameter tensors held by policy, critic and reference."""
    seen = {}
    for model in (parts.policy, parts.critic, parts.reference.model):
        for p in model.parameters():
            seen[p.data_ptr()] = p.numel()
    return sum(seen.values())


def test_adapters_off_builds_no_second_causal_lm(tmp_path):
    acc = Accelerator(cpu=True)
    shared = build_parts(tiny_config(tmp_path / "a", LORA), acc)
    separate = build_parts(tiny_config(tmp_path / "b", merge(LORA, {"ppo": {"reference_from_adapters": "off"}})), acc)
    assert shared.reference.shares_policy and not separate.reference.shares_policy
    base = sum(p.numel() for n, p in acc.unwrap_model(shared.policy).named_parameters() if "lora_" not in n)
    assert _held_parameters(separate) - _held_parameters(shared) == base
    assert "reference" not in shared.checkpoint_models() and "reference" in separate.checkpoint_models()


def _final_tensors(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    root = run / "checkpoints"
    files = checkpoint_model_files(root / (root / "latest").read_text().strip())
    return {name: load_file(str(path)) for name, path in files.items()}


RUN = merge(LORA, {"batch": {"steps": 3}, "run": {"eval_every": 1}, "kl": {"coef": 0.2}})


def test_ppo_with_adapters_off_equals_the_run_with_a_separate_copy(tmp_path):
    shared = run_ppo(tiny_config(tmp_path / "shared", RUN))
    separate = run_ppo(tiny_config(tmp_path / "separate", merge(RUN, {"ppo": {"reference_from_adapters": "off"}})))
    a, b = _final_tensors(tmp_path / "shared"), _final_tensors(tmp_path / "separate")
    assert "reference" not in a and "reference" in b  # no reference in the checkpoint when it is the policy's base
    moved = 0
    for model in ("policy", "critic"):
        for name, tensor in a[model].items():
            torch.testing.assert_close(tensor, b[model][name], rtol=0, atol=1e-6, msg=f"{model}.{name}")
    start = load_causal_lm(ModelConfig(name_or_path="tiny-random", **LORA["policy"]), seed=0)
    for name, tensor in start.state_dict().items():
        if "lora_B" in name:
            moved += int(not torch.equal(a["policy"][name], tensor))
    assert moved > 0  # the adapters trained
    assert shared["best_eval_reward"] == pytest.approx(separate["best_eval_reward"], abs=1e-6)


def test_stop_then_resume_with_adapters_off_equals_an_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_ppo(tiny_config(whole, RUN))
    first = run_ppo(tiny_config(parts, {**RUN, "stop_after": 2}))
    assert first["steps"] == 2 and not first["finished"]
    run_ppo(tiny_config(parts, merge(RUN, {"run": {"resume": True}})))
    a, b = _final_tensors(whole), _final_tensors(parts)
    assert a.keys() == b.keys() == {"policy", "critic"}
    for model in a:
        for name, tensor in a[model].items():
            assert torch.equal(tensor, b[model][name]), f"{model}.{name}"
