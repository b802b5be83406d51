"""Presets: docs/presets.md is the code's table (values and sources), the papers' values of issue 12 resolve
exactly, and `--print-config` prints every command's resolved settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefalign import cli
from prefalign.config import build_config, to_dict
from prefalign.trainers import presets_doc
from prefalign.trainers.ppo.config import PRESETS, PPOConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "presets.md"


def _table(text: str) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """(command, preset) -> field -> (value, source), parsed from the Markdown page."""
    out: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    command = preset = None
    for line in text.splitlines():
        if line.startswith("## `prefalign "):
            command = line.removeprefix("## `prefalign ").rstrip("`")
        elif line.startswith("### `--preset "):
            preset = line.removeprefix("### `--preset ").rstrip("`")
            out[(command, preset)] = {}
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[(command, preset)][cells[0].strip("`")] = (cells[1].strip("`"), cells[3])
    return out


def test_the_page_is_generated_from_the_current_presets():
    assert DOC.read_text() == presets_doc.render(), "run: python -m prefalign.trainers.presets_doc"


def test_the_page_lists_every_preset_of_every_command_with_resolved_values_and_a_source():
    table = _table(DOC.read_text())
    for command in presets_doc.COMMANDS:
        cls, presets = presets_doc.load_presets(command)
        for preset in presets:
            rows = table[(command, preset)]
            resolved = presets_doc.flatten(to_dict(build_config(cls, presets=presets, preset=preset)))
            default = presets_doc.flatten(to_dict(build_config(cls)))
            changed = {k for k in resolved if resolved[k] != default.get(k)}
            assert changed <= set(rows), f"{command} {preset}: changed but not listed: {changed - set(rows)}"
            for key, (value, source) in rows.items():
                assert value == presets_doc._fmt(resolved[key]), (command, preset, key)
                assert source and source != "MISSING", (command, preset, key)
            named = set(presets_doc.SOURCES.get(command, {}).get(preset, {})) - {"*"}
            assert named <= set(rows), f"{command} {preset}: sources for settings it does not set: {named - set(rows)}"


def test_ivison_ppo_preset_is_table_9():
    c = build_config(PPOConfig, presets=PRESETS, preset="ivison")
    for optim in (c.actor_optim, c.critic_optim):
        assert (optim.learning_rate, optim.warmup_ratio) == (1e-6, 0.1)
        assert (optim.adam_beta1, optim.adam_beta2, optim.adam_epsilon) == (0.9, 0.95, 1e-5)
    assert c.ppo.value_loss_coef == 0.1
    assert (c.data.max_prompt_length, c.sampling.max_new_tokens) == (1024, 1024)
    assert (c.sampling.temperature, c.kl.coef, c.ppo.gamma, c.ppo.lam) == (0.7, 0.05, 1.0, 0.95)


def test_xu_ppo_preset_normalises_advantages_and_values_and_masks_top_k():
    for name in ("xu", "table3-baseline", "table3-advnorm", "table3-largebatch", "table3-ema"):
        c = build_config(PPOConfig, presets=PRESETS, preset=name)
        assert c.ppo.value_normalization and c.ppo.value_normalization_beta == 0.99995, name
        assert c.sampling.top_k == 200 and c.ppo.logprobs_top_k, name
    assert build_config(PPOConfig, presets=PRESETS, preset="xu").ppo.advantage_normalization


def test_xu_code_iterative_dpo_samples_five_responses():
    from prefalign.trainers.preference.iterative_config import PRESETS as ITER
    from prefalign.trainers.preference.iterative_config import IterativeDPOConfig

    assert build_config(IterativeDPOConfig, presets=ITER, preset="xu-code").sampling.num_samples == 5


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_print_config_prints_the_resolved_settings_and_runs_nothing(command, capsys, monkeypatch):
    entry = cli._Command(command, *cli.COMMANDS[command])
    config_cls, _, presets = entry.load()
    preset = sorted(presets)[0] if presets else None
    monkeypatch.setattr(entry.__class__, "load", lambda self: (config_cls, _fail, presets))
    argv = [command] + (["--preset", preset] if preset else []) + ["--print-config"]
    assert cli.main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = build_config(config_cls, presets=presets, preset=preset)
    assert printed == to_dict(expected)
    assert build_config(config_cls, overrides=printed) == expected  # the output loads back as --config


def _fail(config):
    raise AssertionError("--print-config must not run the command")
