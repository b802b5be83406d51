from dataclasses import dataclass, field

import pytest

from prefalign.cli import COMMANDS, main
from prefalign.config import ConfigError, build_config, from_dict, load_yaml, save_yaml, to_dict
from prefalign.trainers.common import OptimConfig, RunConfig
from prefalign.trainers.sft import PRESETS, SFTConfig


@dataclass
class _Inner:
    a: int = 1
    b: str = "x"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    c: float = 0.5


def test_precedence_defaults_preset_yaml_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("inner:\n  b: from-yaml\nc: 0.25\n")
    presets = {"p": {"inner": {"a": 7, "b": "from-preset"}}}
    cfg = build_config(_Outer, presets=presets, preset="p", yaml_path=yaml_file, overrides={"c": 0.125})
    assert cfg == _Outer(inner=_Inner(a=7, b="from-yaml"), c=0.125)


def test_unknown_field_names_file_and_field(tmp_path):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("inner:\n  nope: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*inner\..*nope"):
        build_config(_Outer, yaml_path=yaml_file)


def test_invalid_value_is_a_config_error():
    with pytest.raises(ConfigError, match="schedule"):
        from_dict(OptimConfig, {"schedule": "exponential"})
    with pytest.raises(ConfigError, match="mixed_precision"):
        from_dict(RunConfig, {"mixed_precision": "fp8"})


def test_yaml_round_trip(tmp_path):
    cfg = build_config(SFTConfig, presets=PRESETS, preset="ivison")
    path = save_yaml(cfg, tmp_path / "config.yaml")
    assert from_dict(SFTConfig, load_yaml(path)) == cfg
    assert to_dict(cfg)["optim"]["learning_rate"] == 2e-5


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config(SFTConfig, presets=PRESETS, preset="nope")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: prefalign" in out and command in out


def test_bad_flag_value_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sft", "--optim.learning_rate", "fast"])
    assert exc.value.code != 0


def test_unknown_command(capsys):
    assert main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err
