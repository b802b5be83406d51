"""The PPO speed shortcuts change no result beyond float rounding: the sampler's log-probs instead of a
scoring forward, length-grouped micro-batches, and the vocabulary projection on response positions only."""

from __future__ import annotations

import copy
import dataclasses

import torch

from prefalign.rollout.batching import contiguous_groups
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo import update as update_module
from prefalign.trainers.ppo.trainer import build_context, build_experience, stage_rollout, stage_score
from tests.trainers.ppo.helpers import sgd_update_parts, tiny_config


def _update(ctx, exp, start, monkeypatch, *, old_way: bool) -> dict[str, torch.Tensor]:
    """Parameters of policy and critic after one SGD update from ``start`` (a state dict pair) on ``exp``."""
    ctx.parts.policy.load_state_dict(start[0])
    ctx.parts.critic.load_state_dict(start[1])
    with monkeypatch.context() as patch:
        if old_way:  # micro-batches of consecutive rows, every position projected from the first response on
            patch.setattr(update_module, "length_groups", lambda lengths, size: contiguous_groups(len(lengths), size))
            real = update_module.token_logprobs
            patch.setattr(update_module, "token_logprobs", lambda *a, **k: real(*a, **{**k, "response_only": False}))
        update_module.ppo_update(ctx.accelerator, sgd_update_parts(ctx, lr=0.5), ctx.settings, exp, 0)
    models = {"policy": ctx.parts.policy, "critic": ctx.parts.critic}
    return {f"{m}.{k}": v.detach().clone() for m, model in models.items() for k, v in model.named_parameters()}


def test_same_ppo_update_with_and_without_the_shortcuts(tmp_path, monkeypatch):
    overrides = {"batch": {"rollout_batch_size": 8, "micro_batch_size": 3, "num_minibatches": 1}}
    cfg = tiny_config(tmp_path, overrides)
    ctx = build_context(cfg, make_accelerator(cfg.run))
    rollout, prompts = stage_rollout(ctx, 0)
    assert rollout.logprobs is not None  # the built-in engine ran
    calls = []
    hook = ctx.parts.policy.register_forward_hook(lambda *_: calls.append(1))
    state = copy.deepcopy(ctx.state)
    fast = build_experience(ctx, rollout, stage_score(ctx, rollout, prompts, 0))[0]
    assert not calls  # no policy forward in scoring
    ctx.state = state
    plain = dataclasses.replace(rollout, logprobs=None)
    slow = build_experience(ctx, plain, stage_score(ctx, plain, prompts, 0))[0]
    assert calls  # the separate forward ran
    hook.remove()
    torch.testing.assert_close(fast.old_logprobs, slow.old_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.advantages, slow.advantages, atol=1e-4, rtol=1e-4)
    start = (copy.deepcopy(ctx.parts.policy.state_dict()), copy.deepcopy(ctx.parts.critic.state_dict()))
    ours = _update(ctx, fast, start, monkeypatch, old_way=False)
    before = _update(ctx, slow, start, monkeypatch, old_way=True)
    moved = max(
        float((ours[k] - start[0 if k.startswith("policy") else 1][k.split(".", 1)[1]]).abs().max()) for k in ours
    )
    assert moved > 1e-3  # the update did something the comparison can see
    for name in ours:
        torch.testing.assert_close(ours[name], before[name], atol=2e-6, rtol=1e-4, msg=name)
