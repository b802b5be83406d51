"""Run folders and what a run leaves in them: refusals, overwrite, max_steps, model card, adapter,
dropped rows, the tokenisation cache, unknown model names, trackers and progress lines."""

from __future__ import annotations

import json
import os
import stat

import pytest

from prefalign.cli import main
from prefalign.config import from_dict
from prefalign.data.schema import SFTExample, user_prompt
from prefalign.trainers.sft import SFTConfig, run_sft

pytestmark = pytest.mark.usefixtures("one_thread")


def _examples(n):
    return [SFTExample(user_prompt(f"say {i % 5}"), f"number {i % 5} ok") for i in range(n)]


def _config(tmp_path, name="run", **overrides):
    base = {
        "model": {"name_or_path": "tiny-random"},
        "data": {"max_length": 48},
        "batch": {"global_batch_size": 4, "micro_batch_size": 4, "epochs": 1.0},
        "optim": {"learning_rate": 1e-3, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / name), "progress": False, "tensorboard": False},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return from_dict(SFTConfig, base)


def _steps(folder):
    return [json.loads(x)["step"] for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_new_run_into_a_used_folder_stops_unless_overwrite(tmp_path):
    run_sft(_config(tmp_path, run={"save_every": 1}), (_examples(8), []))
    folder = tmp_path / "run"
    assert (folder / "checkpoints" / "step-00000001").exists()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"already holds a run \(config.yaml, checkpoints, metrics.jsonl"):
        run_sft(_config(tmp_path), (_examples(8), []))
    run_sft(_config(tmp_path, run={"overwrite": True}), (_examples(4), []))
    assert _steps(folder) == [1]
    assert sorted(p.name for p in (folder / "checkpoints").glob("step-*")) == ["step-00000001"]
    assert (folder / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_resume_refuses_changed_settings_naming_them_unless_allowed(tmp_path):
    run_sft(_config(tmp_path, batch={"max_steps": 2}, run={"save_every": 1}), (_examples(8), []))
    changed = {"learning_rate": 5e-3}
    with pytest.raises(ValueError) as info:
        run_sft(
            _config(tmp_path, optim=changed, batch={"max_steps": 4}, run={"resume": True, "progress": True}),
            (_examples(8), []),
        )
    message = str(info.value)
    assert "optim.learning_rate: 0.001 -> 0.005" in message and "batch.max_steps: 2 -> 4" in message
    assert "run.progress" not in message and "--run.allow_changes True" in message
    results = run_sft(
        _config(tmp_path, optim=changed, batch={"max_steps": 4}, run={"resume": True, "allow_changes": True}),
        (_examples(8), []),
    )
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and results["steps"] == 4
    assert rows[2]["lr"] == pytest.approx(5e-3 * (1 - 3 / 4))  # the new peak and the new length are in use
    assert rows[0]["lr"] == pytest.approx(1e-3 * (1 - 1 / 2))  # the first invocation's schedule


def test_max_steps_sets_the_step_count_beyond_one_epoch(tmp_path):
    results = run_sft(_config(tmp_path, batch={"max_steps": 5}), (_examples(8), []))
    assert results["steps"] == 5 and _steps(tmp_path / "run") == [1, 2, 3, 4, 5]


def test_cli_run_with_bad_rows_writes_dropped_rows_counts_and_a_model_card(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "sft.jsonl"
    good = [json.dumps({"prompt": f"say {i}", "completion": f"number {i}"}).encode() for i in range(9)]
    data.write_bytes(b"\n".join([*good[:4], b'{"prompt": "\xff", "completion": "x"}', *good[4:], b'{"prompt": "y"}']))
    out = tmp_path / "cli"

    def argv(folder):
        return [
            *("sft", "--model.name_or_path", "tiny-random", "--data.source", str(data), "--data.eval_size", "1"),
            *("--batch.global_batch_size", "4", "--batch.micro_batch_size", "4", "--run.output_dir", str(folder)),
            *("--run.tensorboard", "False", "--run.progress", "False"),
        ]

    assert main(argv(out)) == 0
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert [(d["line"], d["field"]) for d in dropped] == [(5, "prompt"), (11, "response")]
    assert dropped[0]["reason"].startswith("not valid UTF-8")
    results = json.loads((out / "results.json").read_text())
    assert (results["kept_rows"], results["dropped_rows"]) == (9, 2)
    assert results["dropped_by_reason"] == {"not valid UTF-8": 1, "missing field": 1}
    card = (out / "model" / "README.md").read_text()
    assert "- base model: `tiny-random`" in card and f"--data.source {data}" in card
    assert f"- source: `{data}`" in card and "rows kept: 9, dropped as malformed: 2" in card
    assert f"| steps | {results['steps']} |" in card
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "model").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "results.json").stat().st_mode) == 0o666 & ~umask
    assert not results["tokenized_from_cache"]
    # a second run on the same data reads the tokens back instead of tokenising again
    import prefalign.trainers.sft as sft

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(sft, "encode_example", no_tokenising)
    assert main(argv(tmp_path / "again")) == 0
    assert json.loads((tmp_path / "again" / "results.json").read_text())["tokenized_from_cache"]


def test_the_lora_adapter_is_saved_beside_the_merged_weights(tmp_path):
    from peft import PeftModel

    from prefalign.models.load import ModelConfig, load_causal_lm, save_model
    from prefalign.models.tiny import build_byte_tokenizer, build_tiny_llama

    model = load_causal_lm(ModelConfig(name_or_path="tiny-random", lora=True, lora_target_modules=["all-linear"]))
    names = {n for n, _ in model.named_modules() if n.endswith("lora_A")}
    assert any("mlp" in n for n in names) and any("self_attn" in n for n in names)
    folder = save_model(model, build_byte_tokenizer(), tmp_path / "model")
    assert (folder / "adapter" / "adapter_config.json").exists()
    assert (folder / "adapter" / "adapter_model.safetensors").exists()
    assert "adapter/" in (folder / "README.md").read_text()
    tok = build_byte_tokenizer()
    base = build_tiny_llama(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, seed=0)
    PeftModel.from_pretrained(base, str(folder / "adapter"))


def test_an_unknown_model_name_is_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(8)))
    argv = ["sft", "--model.name_or_path", "no-such-model", "--data.source", str(data)]
    assert main([*argv, "--run.output_dir", str(tmp_path / "o"), "--run.progress", "False"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("prefalign sft: error: model 'no-such-model' not found (no such folder, and HF_HUB_OFF")
    assert "smollm2-135m-instruct, minilm-l6-v2, tiny-random" in err[0] and len(err) == 2
    assert "Traceback" not in "\n".join(err)


def test_trackers_are_checked_and_progress_in_a_file_is_plain_lines(tmp_path, monkeypatch):
    from prefalign.trainers import logging as log
    from prefalign.trainers.common import RunConfig

    with pytest.raises(ValueError, match="unknown tracker 'tensorbored'"):
        RunConfig(report_to="tensorbored")
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(ValueError, match=r"tracker 'wandb' is not installed \(pip install wandb\)"):
        RunConfig(report_to="tensorboard,wandb")
    assert RunConfig(report_to="tensorboard", tensorboard=False).trackers() == []
    assert RunConfig(report_to="none").trackers() == []
    from rich.console import Console

    path = tmp_path / "log.txt"
    with open(path, "w") as fh:
        monkeypatch.setattr(log, "console", Console(file=fh, soft_wrap=True))
        logger = log.MetricLogger(
            tmp_path, is_main=True, total_steps=40, description="sft " + "x" * 90, tensorboard=False
        )
        for step in range(1, 41):
            logger.log(step, {"loss": 1.0 / step}, show=("loss",))
        logger.close()
        list(log.phase_progress(range(10), 10, "reference log-probs"))
    lines = path.read_text().splitlines()
    steps = [line for line in lines if line.startswith("sft ")]
    assert len(steps) == 20 and all(len(line) > 100 for line in steps)  # every 2nd step, never wrapped
    assert steps[-1].startswith("sft " + "x" * 90 + ": 40/40 (100%)  loss=0.025")
    phase = [line.split(": ")[1].split()[0] for line in lines if line.startswith("reference")]
    assert phase == [f"{i}/10" for i in range(1, 11)]


def test_metrics_reach_accelerate_trackers(tmp_path, monkeypatch):
    """The plumbing to accelerate's trackers (init_trackers with the settings, accelerator.log per logged step,
    end_training at the end), checked with a recording GeneralTracker: no real tracker (wandb, mlflow, ...) is
    installed here, and accelerate's own tracker classes are accelerate's to test."""
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    import prefalign.trainers.session as session

    class Recording(GeneralTracker):
        name = "recording"
        requires_logging_directory = False

        def __init__(self):
            super().__init__()
            self.configs, self.logs, self.finished = [], [], False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.configs.append(dict(values))

        def log(self, values, step=None, **kwargs):
            self.logs.append((step, dict(values)))

        def finish(self):
            self.finished = True

    recording = Recording()
    monkeypatch.setattr(session, "make_accelerator", lambda run: Accelerator(cpu=True, log_with=[recording]))
    run_sft(_config(tmp_path, batch={"max_steps": 2}), (_examples(8), []))
    assert recording.configs[0]["optim.learning_rate"] == 1e-3 and recording.configs[0]["data.max_length"] == 48
    assert [step for step, _ in recording.logs] == [1, 2] and "loss" in recording.logs[0][1]
    assert recording.finished
    assert _steps(tmp_path / "run") == [1, 2]  # metrics.jsonl as always


def test_config_differences_ignore_free_fields_and_new_fields_at_their_default():
    from prefalign.trainers.run_folder import config_differences

    saved = {"optim": {"learning_rate": 1e-5}, "run": {"progress": True, "seed": 0}, "stop_after_steps": 3}
    current = {
        "optim": {"learning_rate": 1e-5},
        "run": {"progress": False, "seed": 1},
        "stop_after_steps": 9,
        "data": {"split": "train"},
    }
    defaults = {"data": {"split": "train"}}
    assert config_differences(saved, current, defaults) == [("run.seed", 0, 1)]
    changed_new_field = {**current, "data": {"split": "test"}}
    assert ("data.split", "<absent>", "test") in config_differences(saved, changed_new_field, defaults)


def test_a_hub_model_id_that_cannot_be_loaded_is_one_line(monkeypatch):
    """No hub is reachable here: with HF_HUB_OFFLINE unset the id goes to from_pretrained (a stand-in that fails as
    transformers does without a network), and its error becomes one line naming the id."""
    from prefalign.models.load import ModelNotFound, from_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    class Auto:
        @staticmethod
        def from_pretrained(name, **kwargs):
            calls.append(name)
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nCheck your connection")

    with pytest.raises(ModelNotFound) as info:
        from_pretrained(Auto, "someone/model", dtype=None)
    assert calls == ["someone/model"]
    assert str(info.value).startswith("model 'someone/model' not found (not loadable from the hub: We couldn't")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelNotFound, match="no such folder, and HF_HUB_OFFLINE is set"):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        from_pretrained(Auto, "someone/model")
    assert calls == ["someone/model"]  # offline: never tried


def test_max_steps_is_the_step_count():
    from prefalign.trainers.common import BatchPlan

    plan = BatchPlan(num_examples=8, global_batch_size=4, seed=0, epochs=1.0, max_steps=5)
    assert plan.total_steps == 5 and sorted(plan.step_indices(2) + plan.step_indices(3)) == list(range(8))
    assert BatchPlan(num_examples=8, global_batch_size=4, seed=0, epochs=1.5).total_steps == 3


def _tiny_flags(folder):
    return [
        *("--model.name_or_path", "tiny-random", "--data.max_length", "48", "--run.output_dir", str(folder)),
        *("--batch.global_batch_size", "4", "--batch.micro_batch_size", "4", "--batch.max_steps", "1"),
        *("--run.tensorboard", "False", "--run.progress", "False"),
    ]


def test_commands_train_on_a_dataset_dict_folder_a_csv_and_conversational_parquet(tmp_path, monkeypatch):
    """A tiny model trained end to end from three more kinds of source: SFT from a DatasetDict folder (TRL
    conversational ``messages``) with its test split held out, a reward model from a CSV through --data.columns,
    DPO from Parquet in TRL's implicit-prompt conversational form."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))

    def chat(q, a):
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    rows = [{"messages": chat(f"say {i}", f"number {i}")} for i in range(6)]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:4]), "test": datasets.Dataset.from_list(rows[4:])}
    ).save_to_disk(str(tmp_path / "sft_dd"))
    argv = ["sft", "--data.source", str(tmp_path / "sft_dd"), "--data.eval_split", "test", *_tiny_flags(tmp_path / "s")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert (results["train_examples"], results["eval_examples"], results["kept_rows"]) == (4, 2, 6)

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("question,good,bad\n" + "".join(f"q{i},yes {i},no {i}\n" for i in range(6)))
    columns = ["--data.columns", "prompt", "question", "chosen", "good", "rejected", "bad"]
    assert (
        main(["rm", "--data.source", str(csv_path), "--data.eval_size", "2", *columns, *_tiny_flags(tmp_path / "r")])
        == 0
    )
    assert json.loads((tmp_path / "r" / "results.json").read_text())["eval_pairs"] == 2

    pairs = [{"chosen": chat(f"q{i}", f"yes {i}"), "rejected": chat(f"q{i}", f"no {i}")} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(pairs), tmp_path / "pairs.parquet")
    argv = [
        "dpo",
        "--data.source",
        str(tmp_path / "pairs.parquet"),
        "--data.eval_size",
        "2",
        *_tiny_flags(tmp_path / "d"),
    ]
    assert main(argv) == 0
    assert (tmp_path / "d" / "model" / "README.md").exists()
