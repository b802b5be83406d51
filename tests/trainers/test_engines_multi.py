"""Several DeepSpeed engines in one run (PPO's policy and critic), wired with stand-ins: no DeepSpeed runs on a CPU.

The plugins are accelerate's real ``DeepSpeedPlugin`` objects built from the recipes' JSON files; the state and the
accelerators around them are stand-ins that record which plugin is active at each ``prepare`` and each backward.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedType
from accelerate.utils.deepspeed import get_active_deepspeed_plugin

from prefalign.trainers import engines
from prefalign.trainers.common import accumulate_and_step
from prefalign.trainers.engines import engine_accelerators, engine_loss_scale, prepare_engine

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"


class StandInState:
    """What accelerate's AcceleratorState offers for DeepSpeed plugins (selection as its select_deepspeed_plugin,
    without transformers' weak reference)."""

    distributed_type = DistributedType.DEEPSPEED

    def __init__(self, plugin, mixed_precision: str = "bf16"):
        plugin._set_selected(True)
        self.deepspeed_plugins = plugin
        self.mixed_precision = mixed_precision

    @property
    def deepspeed_plugin(self):
        return get_active_deepspeed_plugin(self)

    def select_deepspeed_plugin(self, name: str) -> None:
        for key, plugin in self.deepspeed_plugins.items():
            if key != name:
                plugin._unselect()
        self.deepspeed_plugins[name]._set_selected(True)

    def active_name(self) -> str | None:
        plugins = self.deepspeed_plugins
        if not isinstance(plugins, dict):
            return None
        return next(k for k, p in plugins.items() if p is self.deepspeed_plugin)


class StandInAccelerator:
    """A DeepSpeed Accelerator as our code sees it; with ``real`` set, models, backward and clipping are the real
    CPU Accelerator's, and ``prepare`` / ``backward`` are logged with the active plugin."""

    def __init__(self, state: StandInState, log: list, label: str, real: Accelerator | None = None):
        self.state, self.log, self.label, self.real = state, log, label, real
        self.distributed_type = DistributedType.DEEPSPEED
        self.num_processes = 1
        self.gradient_accumulation_steps = 1
        self.sync_gradients = True

    def __getattr__(self, name):
        if self.real is None:
            raise AttributeError(name)
        return getattr(self.real, name)

    def prepare(self, *objects):
        plugin = self.state.deepspeed_plugin
        self.log.append(("prepare", self.label, self.state.active_name(), copy.deepcopy(plugin.deepspeed_config)))
        return self.real.prepare(*objects) if self.real is not None else objects

    def backward(self, loss):
        self.log.append(("backward", self.label, self.sync_gradients))
        loss.backward()

    def no_sync(self, model):
        return self.real.no_sync(model)


def _plugin(name: str = "zero3") -> DeepSpeedPlugin:
    return DeepSpeedPlugin(hf_ds_config=str(RECIPES / f"ds_{name}.json"), zero3_init_flag=False)


def _two(tmp_path=None, files=None):
    log: list = []
    state = StandInState(_plugin())
    main = StandInAccelerator(state, log, "main")
    accs = engine_accelerators(
        main, ("policy", "critic"), files, new_accelerator=lambda: StandInAccelerator(state, log, "second")
    )
    return state, log, accs


def test_each_trained_model_gets_its_own_plugin_and_accelerator():
    state, log, accs = _two()
    plugins = state.deepspeed_plugins
    assert list(plugins) == ["policy", "critic"]
    assert accs["policy"].label == "main" and accs["critic"].label == "second"
    policy, critic = plugins["policy"], plugins["critic"]
    assert policy is not critic and policy.deepspeed_config is not critic.deepspeed_config
    assert critic.zero_stage == policy.zero_stage == 3 and critic.deepspeed_config["bf16"] == {"enabled": True}
    assert critic.deepspeed_config["zero_optimization"] == policy.deepspeed_config["zero_optimization"]
    assert state.active_name() == "policy"  # the launcher's plugin stays the active one until a prepare selects


def test_the_plugin_is_selected_and_filled_before_each_prepare():
    state, log, accs = _two()
    prepare_engine(accs["policy"], "policy", 4, 1.0, "policy-model")
    prepare_engine(accs["critic"], "critic", 2, None, "critic-model")
    (_, who_p, plugin_p, config_p), (_, who_c, plugin_c, config_c) = log
    assert (who_p, plugin_p) == ("main", "policy") and (who_c, plugin_c) == ("second", "critic")
    assert config_p["train_micro_batch_size_per_gpu"] == 4 and config_p["gradient_clipping"] == 1.0
    assert config_c["train_micro_batch_size_per_gpu"] == 2 and config_c["gradient_clipping"] == 0.0
    for config in (config_p, config_c):
        assert config["gradient_accumulation_steps"] == 1  # boundaries marked by accumulate_and_step
        assert config["train_batch_size"] == config["train_micro_batch_size_per_gpu"]  # 1 process
    # filling the critic's plugin left the policy's as it was prepared
    assert state.deepspeed_plugins["policy"].deepspeed_config["gradient_clipping"] == 1.0


def test_a_named_file_gives_the_critic_another_zero_stage(tmp_path):
    state, _, _ = _two(files={"critic": str(RECIPES / "ds_zero2.json")})
    assert state.deepspeed_plugins["policy"].zero_stage == 3 and state.deepspeed_plugins["critic"].zero_stage == 2


def test_unsupported_cases_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="given for the critic, 'nope.json', is not a file"):
        _two(files={"critic": "nope.json"})
    with pytest.raises(ValueError, match="config of policy is the launcher's"):
        _two(files={"policy": str(RECIPES / "ds_zero2.json")})
    state = StandInState(_plugin())
    state.deepspeed_plugins = {"student": state.deepspeed_plugins}  # a user's own dict of plugins
    with pytest.raises(ValueError, match=r"named \['student'\].*missing \['policy', 'critic'\]"):
        engine_accelerators(StandInAccelerator(state, [], "main"), ("policy", "critic"))
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)
    with pytest.raises(ValueError, match="DeepSpeed config for critic was given, but this run is not launched"):
        engine_accelerators(ddp, ("policy", "critic"), {"critic": "x.json"})
    assert engine_accelerators(ddp, ("policy", "critic")) == {"policy": ddp, "critic": ddp}


def test_one_trained_model_needs_no_second_plugin():
    state = StandInState(_plugin())
    log: list = []
    main = StandInAccelerator(state, log, "main")
    accs = engine_accelerators(main, ("policy",), {"critic": None})
    assert accs == {"policy": main} and isinstance(state.deepspeed_plugins, DeepSpeedPlugin)
    prepare_engine(main, "policy", 4, 1.0, "model")
    assert log[0][:3] == ("prepare", "main", None) and log[0][3]["train_micro_batch_size_per_gpu"] == 4


def test_accumulation_marks_the_boundary_for_any_number_of_micro_batches():
    state, log, accs = _two()
    acc = accs["critic"]
    prepare_engine(acc, "critic", 2, None, "critic-model")
    assert engine_loss_scale(acc, 3) == 1.0 and engine_loss_scale(acc, 5) == 1.0  # one micro-batch per engine step
    weight = torch.nn.Parameter(torch.ones(2))
    acc.real = SimpleNamespace(no_sync=lambda model: torch.enable_grad(), autocast=torch.enable_grad)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    accumulate_and_step(acc, weight, optimizer, None, [1.0, 2.0, 3.0], lambda x: (weight * x).sum(), None)
    assert [e[2] for e in log if e[0] == "backward"] == [False, False, True]  # engine.step only at the last
    assert acc.sync_gradients is True
    assert torch.allclose(weight.detach(), torch.full((2,), 1 - 0.1 * 6))
    # SFT / RM / DPO: the engine configured for exactly its micro-batches per step; the same single boundary
    engines.configure_deepspeed(acc, 2, 3, None)
    log.clear()
    accumulate_and_step(acc, weight, optimizer, None, [1.0, 2.0, 3.0], lambda x: (weight * x).sum(), None)
    assert [e[2] for e in log if e[0] == "backward"] == [False, False, True] and engine_loss_scale(acc, 3) == 3.0


def test_ppo_prepares_policy_and_critic_on_their_own_engines(tmp_path, monkeypatch):
    """build_parts under a DeepSpeed stand-in: the policy's plugin is active at the policy's prepare (main
    Accelerator), the critic's at the critic's (second Accelerator); the update backwards the critic through its
    own Accelerator; checkpoints know the companion."""
    from prefalign.trainers.ppo.setup import build_parts
    from prefalign.trainers.ppo.trainer import build_context
    from prefalign.trainers.ppo.update import ppo_update
    from tests.trainers.ppo.helpers import experience_at, tiny_config

    real = Accelerator(cpu=True)
    log: list = []
    state = StandInState(_plugin("zero2"))  # ZeRO-3's gather for generation would need deepspeed itself
    main = StandInAccelerator(state, log, "main", real)
    monkeypatch.setattr(engines, "Accelerator", lambda: StandInAccelerator(state, log, "second", real))
    config = tiny_config(tmp_path, {"batch": {"steps": 1}})
    ctx = build_context(config, main)
    prepares = [e[:3] for e in log if e[0] == "prepare"]
    assert prepares == [("prepare", "main", "policy"), ("prepare", "second", "critic")]
    assert state.active_name() == "policy"  # the launcher's plugin is active again after the critic's prepare
    parts = ctx.parts
    assert parts.critic_accelerator.label == "second"
    assert parts.companion_accelerators() == {"critic": parts.critic_accelerator}
    log.clear()
    ppo_update(main, parts.update_parts(), ctx.settings, experience_at(ctx), 0)
    backwards = [(who, sync) for kind, who, sync in (e for e in log if e[0] == "backward")]
    # the actor's micro-batches go to the main engine, the critic's to its own; each minibatch ends on a boundary
    assert {who for who, _ in backwards} == {"main", "second"}
    for who in ("main", "second"):
        flags = [sync for w, sync in backwards if w == who]
        assert flags.count(True) == ctx.settings.num_minibatches and flags[-1]
    critic_free = tiny_config(
        tmp_path / "grpo", {"ppo": {"advantage_estimator": "grpo"}, "sampling": {"num_samples": 2}}
    )
    log.clear()
    state.deepspeed_plugins = _plugin("zero2")
    state.deepspeed_plugins._set_selected(True)
    parts = build_parts(critic_free, main)
    assert [e[:3] for e in log if e[0] == "prepare"] == [("prepare", "main", None)] and parts.critic_accelerator is None


def test_generation_gathers_by_the_engine_s_own_zero_stage():
    """After the critic's prepare its plugin is the active one; the policy's gather must follow the policy's stage."""
    from prefalign.trainers.gather import _zero3

    state, _, accs = _two(files={"critic": str(RECIPES / "ds_zero2.json")})
    state.select_deepspeed_plugin("critic")  # ZeRO-2 active
    engine = SimpleNamespace(zero_optimization_stage=lambda: 3)
    assert _zero3(accs["policy"], engine) and not _zero3(
        accs["policy"], SimpleNamespace(zero_optimization_stage=lambda: 2)
    )
    assert not _zero3(accs["policy"])  # without an engine: the active plugin's stage
    state.select_deepspeed_plugin("policy")
    assert _zero3(accs["policy"])


def test_the_gpu_smoke_ppo_cases_are_valid_commands(tmp_path, capsys):
    """benchmarks/gpu_smoke.sh's PPO-under-DeepSpeed cases (they run only on a GPU): their arguments parse, and the
    resumed half names the same settings plus --run.resume."""
    import importlib.util
    import subprocess

    import yaml

    from prefalign.cli import main as cli

    root = RECIPES.parents[1]
    assert subprocess.run(["bash", "-n", str(root / "benchmarks" / "gpu_smoke.sh")]).returncode == 0
    spec = importlib.util.spec_from_file_location("gpu_smoke", root / "benchmarks" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    calls: list[list[str]] = []

    def fake_cli(args):
        calls.append(args)
        return 0

    critic = str(RECIPES / "ds_zero2.json")
    assert smoke.run_ppo_cli(fake_cli, tmp_path / "run", 4, "builtin", critic, resume_check=True) == 0
    assert calls[0][-2:] == ["--stop_after", "2"] and calls[1][-2:] == ["--run.resume", "True"]
    assert calls[0][:-2] == calls[1][:-2]
    capsys.readouterr()
    assert cli([*calls[0], "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["critic_deepspeed_config"] == critic and printed["stop_after"] == 2
    assert printed["ppo"]["advantage_estimator"] == "gae"  # a critic: two DeepSpeed engines


def test_a_deepspeed_checkpoint_refuses_other_zero_stages(tmp_path):
    """The layout records each engine's ZeRO stage; a resume with another (e.g. a changed critic_deepspeed_config)
    stops with both named instead of failing inside DeepSpeed's loader."""
    from prefalign.trainers.checkpoint import Checkpointer

    def engine_acc(stage: int):
        return SimpleNamespace(
            distributed_type=DistributedType.DEEPSPEED,
            deepspeed_config={"zero_optimization": {"stage": stage}},
            num_processes=2,
            _models=[],
            unwrap_model=lambda m: m,
        )

    saved = Checkpointer(tmp_path, engine_acc(3), companions={"critic": engine_acc(3)})
    layout = {"format": "deepspeed", "num_processes": 2, "prepared_models": [], "companions": {"critic": []}}
    layout["zero_stages"] = saved._zero_stages()
    assert layout["zero_stages"] == {"accelerate": 3, "accelerate-critic": 3}
    saved._check_layout(tmp_path, layout, {})  # the same stages: accepted
    changed = Checkpointer(tmp_path, engine_acc(3), companions={"critic": engine_acc(2)})
    with pytest.raises(
        ValueError, match=r"ZeRO stages \{'accelerate': 3, 'accelerate-critic': 3\}.*'accelerate-critic': 2"
    ):
        changed._check_layout(tmp_path, layout, {})
