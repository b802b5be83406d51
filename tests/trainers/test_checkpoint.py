"""Checkpointer on one process: layout checks, the prepared/unprepared split, RNG across process counts."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from prefalign.trainers.checkpoint import Checkpointer, checkpoint_model_files, reseed_for


def _prepared(acc):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model, optimizer = acc.prepare(model, optimizer)
    return model, optimizer, scheduler


def _train_step(model, optimizer, scheduler):
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_prepared_and_frozen_models_optimizer_scheduler_and_rng_come_back(tmp_path):
    acc = Accelerator(cpu=True)
    model, optimizer, scheduler = _prepared(acc)
    frozen = torch.nn.Linear(2, 2)
    _train_step(model, optimizer, scheduler)
    ckpt = Checkpointer(tmp_path, acc, seed=5)
    path = ckpt.save(1, {"policy": model, "reference": frozen}, {"step": 1}, {"policy": scheduler})
    files = checkpoint_model_files(path)
    assert files["policy"] == path / "accelerate" / "model.safetensors" and files["reference"].exists()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    moments = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    draw = torch.rand(3)
    with torch.no_grad():
        for p in [*model.parameters(), *frozen.parameters()]:
            p.zero_()
    _train_step(model, optimizer, scheduler)
    frozen_before = {k: v.clone() for k, v in frozen.state_dict().items()}
    state = ckpt.load(
        ckpt.latest(), {"policy": model, "reference": frozen}, {"policy": optimizer}, {"policy": scheduler}
    )
    assert state["step"] == 1 and state["layout"]["prepared_models"] == ["policy"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert not all(torch.equal(v, frozen_before[k]) for k, v in frozen.state_dict().items())
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], moments)
    assert scheduler.last_epoch == 1
    assert torch.equal(torch.rand(3), draw), "this process's RNG continues where it was saved"


def test_another_process_count_reseeds_every_process_deterministically(tmp_path):
    acc = Accelerator(cpu=True)
    model, optimizer, scheduler = _prepared(acc)
    ckpt = Checkpointer(tmp_path, acc, seed=5)
    path = ckpt.save(7, {"policy": model}, {"step": 7}, {"policy": scheduler})
    state = torch.load(path / "state.pt", weights_only=False)
    state["layout"]["num_processes"] = 2  # as if written by a 2-process run
    torch.save(state, path / "state.pt")
    ckpt.load(path, {"policy": model}, {"policy": optimizer}, {"policy": scheduler})
    seen = (torch.rand(2), random.random(), np.random.rand())
    seed = reseed_for(5, 7, 0)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    assert torch.equal(seen[0], torch.rand(2)) and seen[1] == random.random() and seen[2] == np.random.rand()


def test_a_checkpoint_of_another_layout_is_refused(tmp_path):
    acc = Accelerator(cpu=True)
    model, optimizer, scheduler = _prepared(acc)
    ckpt = Checkpointer(tmp_path, acc)
    path = ckpt.save(1, {"policy": model}, {"step": 1}, {"policy": scheduler})
    state = torch.load(path / "state.pt", weights_only=False)
    for change, message in [
        ({"format": "deepspeed"}, "holds deepspeed states but this run is full"),
        ({"prepared_models": ["critic"]}, r"saved prepared models \['critic'\], this run has \['policy'\]"),
    ]:
        torch.save({**state, "layout": {**state["layout"], **change}}, path / "state.pt")
        with pytest.raises(ValueError, match=message):
            ckpt.load(path, {"policy": model}, {"policy": optimizer}, {"policy": scheduler})
    torch.save({k: v for k, v in state.items() if k != "layout"}, path / "state.pt")
    with pytest.raises(ValueError, match="older prefalign"):
        ckpt.load(path, {"policy": model})
    with pytest.raises(ValueError, match="missing from the checkpoint's models"):
        ckpt.save(2, {"other": torch.nn.Linear(1, 1)}, {"step": 2})


def test_a_companion_accelerator_saves_and_loads_its_own_models(tmp_path):
    """PPO's critic under DeepSpeed is prepared by a second Accelerator; here two CPU Accelerators stand in."""
    acc, second = Accelerator(cpu=True), Accelerator(cpu=True)
    policy, policy_opt, policy_sched = _prepared(acc)
    critic, critic_opt, critic_sched = _prepared(second)
    for parts in ((policy, policy_opt, policy_sched), (critic, critic_opt, critic_sched)):
        _train_step(*parts)
    models = {"policy": policy, "critic": critic}
    ckpt = Checkpointer(tmp_path, acc, companions={"critic": second})
    path = ckpt.save(1, models, {"step": 1}, {"policy": policy_sched, "critic": critic_sched})
    assert (path / "accelerate-critic" / "model.safetensors").exists() and not (path / "critic.safetensors").exists()
    expected = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in models.items()}
    moments = critic_opt.state_dict()["state"][0]["exp_avg"].clone()
    _train_step(policy, policy_opt, policy_sched)
    _train_step(critic, critic_opt, critic_sched)
    state = ckpt.load(path, models, {"policy": policy_opt, "critic": critic_opt}, {"critic": critic_sched})
    assert state["layout"]["companions"] == {"critic": ["critic"]}
    for key, model in models.items():
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, expected[key][name]), f"{key}.{name}"
    assert torch.equal(critic_opt.state_dict()["state"][0]["exp_avg"], moments)
    with pytest.raises(ValueError, match="saved models of separate engines"):  # resumed with one engine for both
        Checkpointer(tmp_path, acc).load(path, {"policy": policy})
