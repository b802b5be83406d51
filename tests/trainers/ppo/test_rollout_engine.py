"""The rollout-engine switch on a CPU: the vLLM path's assembly, settings and corrections, with vLLM replaced by
a stand-in that samples with the built-in engine and reports log-probs we control (vLLM itself needs a GPU)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch

from prefalign.config import ConfigError
from prefalign.rollout.experience import rollout_logprobs
from prefalign.rollout.generate import SamplingConfig, generate
from prefalign.rollout.vllm_engine import rollout_from_samples, sampling_params_kwargs
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo.trainer import build_context, ppo_step, run_ppo
from tests.trainers.ppo.helpers import tiny_config

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _as_samples(rollout, num_samples):
    """The built-in engine's rollout as an engine would report it: per prompt, (tokens, log-probs, stopped)."""
    rows = []
    for i in range(len(rollout)):
        start, length = int(rollout.prompt_lengths[i]), int(rollout.response_lengths[i])
        tokens = rollout.sequences[i, start : start + length].tolist()
        rows.append((tokens, [-0.5] * len(tokens), bool(rollout.ended_with_eos[i])))
    return [rows[p : p + num_samples] for p in range(0, len(rows), num_samples)]


def test_engine_samples_assemble_into_the_builtin_rollout(tiny):
    model, tok = tiny
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, num_samples=2)
    prompts = [tok.encode("hello"), tok.encode("a longer prompt here")]
    built_in = generate(model, tok, prompts, sampling, 4, generator_seed=3)
    rebuilt, engine_logprobs = rollout_from_samples(prompts, _as_samples(built_in, 2), tok)
    for field in dataclasses.fields(built_in):
        if field.name == "logprobs":  # the built-in sampler's own; an engine's rollout leaves them to the trainer
            continue
        a, b = getattr(built_in, field.name), getattr(rebuilt, field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, field.name
    assert built_in.logprobs is not None and rebuilt.logprobs is None  # so stage_score recomputes pi_old
    assert engine_logprobs.shape == built_in.sequences.shape
    assert torch.all(engine_logprobs[built_in.response_mask.bool()] == -0.5)
    assert torch.all(engine_logprobs[~built_in.response_mask.bool()] == 0.0)


def test_an_eos_the_engine_left_out_is_appended_with_an_unknown_log_prob(tiny):
    _, tok = tiny
    rollout, logps = rollout_from_samples([[5, 6]], [[([7, 8], [-1.0, -2.0], True), ([9], [-3.0], False)]], tok)
    assert rollout.sequences[0, :5].tolist() == [5, 6, 7, 8, tok.eos_token_id]
    assert rollout.ended_with_eos.tolist() == [True, False] and rollout.response_lengths.tolist() == [3, 1]
    assert logps[0, 2:4].tolist() == [-1.0, -2.0] and math.isnan(float(logps[0, 4]))


def test_vllm_sampling_settings_match_ours():
    kwargs = sampling_params_kwargs(SamplingConfig(temperature=0.7, top_k=0, top_p=0.9, max_new_tokens=5), 2, 11)
    assert kwargs["top_k"] == -1 and kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9
    assert kwargs["max_tokens"] == 5 and kwargs["stop_token_ids"] == [2] and kwargs["logprobs"] == 0
    assert kwargs["seed"] == 11 and kwargs["n"] == 1
    assert sampling_params_kwargs(SamplingConfig(top_k=20), 2, 0)["top_k"] == 20


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="rollout.engine must be builtin or vllm"):
        tiny_config(tmp_path, {"rollout": {"engine": "sglang"}})
    with pytest.raises(ConfigError, match="set rollout.engine vllm"):
        tiny_config(tmp_path, {"rollout": {"importance_sampling_cap": 2.0}})
    with pytest.raises(ConfigError, match="ppo.recompute_old"):
        tiny_config(
            tmp_path,
            {"rollout": {"engine": "vllm", "importance_sampling_cap": 2.0}, "ppo": {"recompute_old": True}},
        )


@pytest.mark.skipif(HAS_VLLM and torch.cuda.is_available(), reason="vLLM and a GPU are here: the engine would run")
def test_selecting_vllm_where_it_cannot_run_fails_before_loading_anything(tmp_path):
    config = tiny_config(tmp_path / "run", {"rollout": {"engine": "vllm"}})
    with pytest.raises((ImportError, ValueError), match=r"prefalign\[vllm\]|needs a GPU"):
        run_ppo(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


class _StandIn:
    """Samples with the built-in engine; reports the trainer's log-probs shifted by ``shift`` (a known mismatch)."""

    def __init__(self, tokenizer, shift: float):
        self.tokenizer, self.shift, self.pushes, self.policy = tokenizer, shift, 0, None

    def push_weights(self, policy):
        self.pushes += 1
        self.policy = policy

    def generate(self, prompt_ids, sampling, seed):
        rollout = generate(self.policy, self.tokenizer, prompt_ids, sampling, 8, generator_seed=seed)
        trainer = rollout_logprobs(self.policy, rollout, 8, sampling.temperature)
        return rollout, torch.where(rollout.response_mask.bool(), trainer - self.shift, torch.zeros_like(trainer))


@pytest.mark.parametrize("cap", [None, 1.2])
def test_the_mismatch_is_logged_and_the_weights_applied(tmp_path, cap, monkeypatch):
    config = tiny_config(tmp_path, {"batch": {"steps": 2}})
    ctx = build_context(config, make_accelerator(config.run))
    rollout_cfg = dataclasses.replace(config.rollout, engine="vllm", importance_sampling_cap=cap)
    ctx.config = dataclasses.replace(config, rollout=rollout_cfg)
    ctx.engine = _StandIn(ctx.parts.tokenizer, shift=0.1)  # pi_old / pi_rollout = e^0.1 on every token
    ctx.engine.policy = ctx.accelerator.unwrap_model(ctx.parts.policy)
    seen = {}
    import prefalign.trainers.ppo.trainer as trainer

    original = trainer.engine_corrections

    def spy(ctx, exp):
        before = exp.advantages.clone()
        metrics = original(ctx, exp)
        seen["ratio"] = (exp.advantages[exp.response_mask.bool()] / before[exp.response_mask.bool()]).tolist()
        return metrics

    monkeypatch.setattr(trainer, "engine_corrections", spy)
    metrics = ppo_step(ctx, 0)
    assert metrics["rollout/mismatch_mean"] == pytest.approx(math.exp(0.1) - 1, rel=1e-4)
    assert metrics["rollout/mismatch_max"] == pytest.approx(math.exp(0.1) - 1, rel=1e-4)
    expected = 1.0 if cap is None else min(math.exp(0.1), cap)
    assert seen["ratio"] == pytest.approx([expected] * len(seen["ratio"]), rel=1e-4)
    assert ("rollout/is_weight_mean" in metrics) == (cap is not None)
    assert ctx.engine.pushes == 1  # the weights of the update before the next rollout
    ppo_step(ctx, 1)
    assert ctx.engine.pushes == 2
