"""The evaluation runner: task registry, end-to-end runs on a tiny model, re-scoring saved
generations, category arithmetic, comparison of two runs, malformed generations files."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from prefalign.cli import main
from prefalign.data.schema import DataError, Prompt, user_prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.evaluation.base import Task
from prefalign.evaluation.compare import compare_results, comparison_table, load_results
from prefalign.evaluation.generations import Generations, read_generations, write_generations
from prefalign.evaluation.registry import build_task, list_tasks, register_task, task_entry, task_names, unregister_task
from prefalign.evaluation.runner import EvalConfig, run_eval, summarize
from prefalign.models.load import ModelConfig
from prefalign.models.tiny import tiny_model_and_tokenizer
from prefalign.paths import default_data_dir
from prefalign.rollout.generate import SamplingConfig, generate


class CharTask:
    """A synthetic task: prompt i asks for text; a response scores 1 if it holds one of ``chars``.

    ``score`` is the share of such responses; ``mean_length`` is an extra metric, so that the
    runner is seen to keep every metric of ``aggregate``.
    """

    def __init__(self, name: str, category: str, chars: str, num_prompts: int = 5):
        self.name, self.category, self.chars, self.num_prompts = name, category, chars, num_prompts

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        n = self.num_prompts if limit is None else min(limit, self.num_prompts)
        return [Prompt(user_prompt(f"Write line {i} of a poem."), {"id": f"{self.name}-{i}"}) for i in range(n)]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        return [{"reward": float(any(c in r for c in self.chars)), "length": len(r)} for r in responses]

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        return {
            "score": sum(r["reward"] for r in results) / len(results),
            "mean_length": sum(r["length"] for r in results) / len(results),
        }


def by_hand(task: CharTask, responses: Sequence[str]) -> float:
    return sum(any(c in r for c in task.chars) for r in responses) / len(responses)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=160)


def console_text(console: Console) -> str:
    return console.file.getvalue()


SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=8, num_samples=2)


def make_tasks() -> list[CharTask]:
    return [
        CharTask("vowels", "reasoning", "aeiou"),
        CharTask("digits", "reasoning", "0123456789"),
        CharTask("upper", "coding", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ]


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """One sampled run of three synthetic tasks (two categories) on the tiny model."""
    out = tmp_path_factory.mktemp("model_run")
    model, tok = tiny_model_and_tokenizer(seed=0)
    config = EvalConfig(
        model=ModelConfig(name_or_path="tiny-random"),
        tasks=["vowels", "digits", "upper"],
        limit=4,
        sampling=SAMPLING,
        micro_batch_size=8,
        output=str(out / "results.json"),
        seed=7,
    )
    console = quiet()
    results = run_eval(config, make_tasks(), model=model, tokenizer=tok, console=console)
    return config, results, (model, tok), console


# -- registry ---------------------------------------------------------------------------------


def test_registry_names_categories_and_aliases(tmp_path, monkeypatch):
    categories = {e.name: e.category for e in list_tasks()}
    assert {k: categories[k] for k in ("gsm8k", "ifeval", "humaneval", "mbpp", "apps", "code_contests")} == {
        "gsm8k": "reasoning",
        "ifeval": "instruction following",
        "humaneval": "coding",
        "mbpp": "coding",
        "apps": "coding",
        "code_contests": "coding",
    }
    assert (
        task_names().index("gsm8k") < task_names().index("humaneval") < task_names().index("ifeval")
    )  # Ivison et al.'s order
    assert task_entry("CodeContests").name == task_entry("code-contests").name == "code_contests"
    with pytest.raises(ValueError, match="unknown evaluation task 'nope'.*gsm8k"):
        build_task("nope")
    with pytest.raises(ValueError, match="task 'gsm8k': bad options"):
        build_task("gsm8k", colour="blue")
    assert build_task("gsm8k", instruction="Answer after ####.").instruction == "Answer after ####."
    # a task file is only needed when prompts are asked for, and the error names the expected file
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path))
    apps = build_task("apps")
    assert apps.category == "coding"
    with pytest.raises(FileNotFoundError, match="apps/test.jsonl"):
        apps.prompts(2)


def test_register_custom_task_checks_protocol_and_category():
    try:
        register_task(
            "synthetic_vowels", "reasoning", lambda **kw: CharTask("synthetic_vowels", "reasoning", "aeiou", **kw)
        )
        task = build_task("synthetic-vowels", num_prompts=3)
        assert isinstance(task, Task) and len(task.prompts()) == 3
        with pytest.raises(ValueError, match="already registered"):
            register_task("synthetic_vowels", "reasoning", lambda: task)
        register_task(
            "synthetic_vowels", "coding", lambda: CharTask("synthetic_vowels", "reasoning", "a"), replace=True
        )
        with pytest.raises(ValueError, match="registered under 'coding' but reports category 'reasoning'"):
            build_task("synthetic_vowels")
        register_task("synthetic_vowels", "coding", lambda: object(), replace=True)
        with pytest.raises(TypeError, match="lacks the Task protocol"):
            build_task("synthetic_vowels")
    finally:
        unregister_task("synthetic_vowels")
    assert "synthetic_vowels" not in task_names()


# -- arithmetic -------------------------------------------------------------------------------


def test_summarize_category_and_overall_averages_by_hand():
    entries = {
        "a": {"category": "reasoning", "score": 0.2},
        "b": {"category": "reasoning", "score": 0.6},
        "c": {"category": "coding", "score": 0.9},
        "d": {"category": "safety", "score": 0.3},
    }
    summary = summarize(entries)
    assert summary["categories"]["reasoning"] == {"score": pytest.approx(0.4), "tasks": ["a", "b"]}
    assert summary["categories"]["coding"]["score"] == pytest.approx(0.9)
    assert list(summary["categories"]) == ["reasoning", "coding", "safety"]
    assert summary["overall"]["score"] == pytest.approx((0.4 + 0.9 + 0.3) / 3)
    assert summary["overall"]["task_mean"] == pytest.approx((0.2 + 0.6 + 0.9 + 0.3) / 4)
    assert (summary["overall"]["num_tasks"], summary["overall"]["num_categories"]) == (4, 3)


# -- end to end on the tiny model -----------------------------------------------------------


def test_run_on_tiny_model_samples_through_rollout_and_scores_by_hand(model_run):
    config, results, (model, tok), console = model_run
    written = json.loads(Path(config.output).read_text())
    assert written["tasks"] == json.loads(json.dumps(results["tasks"]))
    assert set(written) >= {"tasks", "categories", "overall", "model", "config", "seconds"}
    assert written["model"] == "tiny-random" and written["config"]["limit"] == 4
    for task in make_tasks():
        entry = written["tasks"][task.name]
        assert (entry["num_prompts"], entry["num_responses"], entry["category"]) == (4, 8, task.category)
        lines = [json.loads(line) for line in Path(entry["generations"]).read_text().splitlines()]
        assert [(r["prompt_index"], r["sample"]) for r in lines] == [(i, s) for i in range(4) for s in range(2)]
        prompts = task.prompts(4)
        assert [r["id"] for r in lines] == [prompts[r["prompt_index"]].metadata["id"] for r in lines]
        responses = [r["response"] for r in lines]
        if (
            task.name == "vowels"
        ):  # the saved responses are what rollout.generate samples with the run's seed and micro-batch size
            rollout = generate(
                model, tok, [encode_prompt(tok, p.messages) for p in prompts], SAMPLING, 8, generator_seed=7
            )
            assert responses == rollout.response_texts
            assert [r["truncated"] for r in lines] == rollout.truncated.tolist()
        assert entry["truncated_rate"] == pytest.approx(sum(r["truncated"] for r in lines) / 8)
        assert entry["score"] == pytest.approx(by_hand(task, responses))
        assert entry["metrics"]["mean_length"] == pytest.approx(sum(map(len, responses)) / 8)
        assert [r["result"]["reward"] for r in lines] == [float(any(c in t for c in task.chars)) for t in responses]
    scores = {t: written["tasks"][t]["score"] for t in ("vowels", "digits", "upper")}
    assert written["categories"]["reasoning"]["score"] == pytest.approx((scores["vowels"] + scores["digits"]) / 2)
    assert written["categories"]["coding"]["score"] == pytest.approx(scores["upper"])
    assert written["overall"]["score"] == pytest.approx(
        ((scores["vowels"] + scores["digits"]) / 2 + scores["upper"]) / 2
    )
    assert written["overall"]["task_mean"] == pytest.approx(sum(scores.values()) / 3)
    table = console_text(console)
    assert "vowels" in table and "mean of categories" in table and f"{written['overall']['score']:.4f}" in table


def test_rescoring_saved_generations_gives_the_same_numbers(model_run, tmp_path):
    config, results, _, _ = model_run
    again = EvalConfig(
        model=ModelConfig(name_or_path="does-not-exist"),
        tasks=config.tasks,
        limit=4,
        generations_dir=str(config.generations_out()),
        output=str(tmp_path / "rescored.json"),
    )
    rescored = run_eval(again, make_tasks(), console=quiet())  # the model is never loaded
    for name, entry in results["tasks"].items():
        other = rescored["tasks"][name]
        assert (other["score"], other["metrics"], other["num_responses"], other["truncated_rate"]) == (
            entry["score"],
            entry["metrics"],
            entry["num_responses"],
            entry["truncated_rate"],
        )
    assert rescored["categories"] == results["categories"] and rescored["overall"] == results["overall"]
    assert rescored["model"] is None and rescored["generations_dir"] == str(config.generations_out())


def test_compare_prints_both_runs_and_the_difference(model_run, tmp_path):
    config, results, _, _ = model_run
    other = json.loads(Path(config.output).read_text())
    other["tasks"]["vowels"]["score"] -= 0.25
    other["tasks"]["gone"] = {"category": "safety", "score": 0.5}
    other["categories"]["reasoning"]["score"] -= 0.125
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    console = quiet()
    again = EvalConfig(
        tasks=config.tasks,
        limit=4,
        generations_dir=str(config.generations_out()),
        output=str(tmp_path / "r.json"),
        compare=str(other_path),
    )
    rescored = run_eval(again, make_tasks(), console=console)
    comparison = json.loads((tmp_path / "r.json").read_text())["comparison"]
    assert comparison["other"] == str(other_path)
    assert comparison["tasks"]["vowels"]["difference"] == pytest.approx(0.25)
    assert comparison["tasks"]["digits"]["difference"] == pytest.approx(0.0)
    assert comparison["tasks"]["gone"] == {"category": "safety", "this": None, "other": 0.5, "difference": None}
    assert comparison["categories"]["reasoning"]["difference"] == pytest.approx(0.125)
    assert comparison["same_tasks"] is False
    text = console_text(console)
    assert "+0.2500" in text and "+0.1250" in text and "other.json" in text and "gone" in text
    assert rescored["overall"]["score"] == results["overall"]["score"]


def test_compare_results_and_table_by_hand():
    a = {
        "tasks": {"x": {"category": "coding", "score": 0.5}},
        "categories": {"coding": {"score": 0.5}},
        "overall": {"score": 0.5},
    }
    b = {
        "tasks": {"x": {"category": "coding", "score": 0.75}},
        "categories": {"coding": {"score": 0.75}},
        "overall": {"score": 0.75},
    }
    comparison = compare_results(a, b)
    assert comparison["tasks"]["x"] == {"category": "coding", "this": 0.5, "other": 0.75, "difference": -0.25}
    assert comparison["overall"]["difference"] == -0.25 and comparison["same_tasks"] is True
    console = quiet()
    console.print(comparison_table(comparison, labels=("dpo", "ppo")))
    text = console_text(console)
    assert "dpo vs ppo" in text and "-0.2500" in text


def test_bad_compare_file_fails_before_any_generation(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"overall": 1}))
    config = EvalConfig(
        model=ModelConfig(name_or_path="does-not-exist"),
        tasks=["vowels"],
        compare=str(bad),
        output=str(tmp_path / "o.json"),
    )
    with pytest.raises(ValueError, match="bad.json: not a results file"):
        run_eval(config, [CharTask("vowels", "reasoning", "a")], console=quiet())
    with pytest.raises(FileNotFoundError, match="results file not found"):
        load_results(tmp_path / "missing.json")


# -- generations files -------------------------------------------------------------------------


def write_lines(path: Path, rows: Sequence[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


PROMPTS = CharTask("t", "reasoning", "a", num_prompts=3).prompts()


@pytest.mark.parametrize(
    "rows, line, message",
    [
        (
            [{"prompt_index": 0, "response": "a"}, "{not json", {"prompt_index": 1, "response": "b"}],
            2,
            "undecodable JSON",
        ),
        ([{"prompt_index": 0, "response": "a"}, {"prompt_index": 1}], 2, "field 'response': missing"),
        ([{"prompt_index": 0, "response": 3}], 1, "field 'response': missing or not a string"),
        ([{"response": "a"}], 1, "needs 'prompt_index' or 'id'"),
        (
            [{"prompt_index": 0, "response": "a"}, {"prompt_index": 3, "response": "b"}],
            2,
            "3 is out of range: the task has 3 prompts",
        ),
        ([{"prompt_index": "0", "response": "a"}], 1, "field 'prompt_index': must be an integer"),
        ([{"id": "t-9", "response": "a"}], 1, "no task prompt has id 't-9'"),
        ([{"id": "t-1", "prompt_index": 0, "response": "a"}], 1, "id 't-1' is prompt 1, but prompt_index says 0"),
        (
            [{"prompt_index": 0, "prompt": "something else", "response": "a"}],
            1,
            "field 'prompt': differs from the text of task prompt 0",
        ),
        ([{"prompt_index": 0, "response": "a", "truncated": "no"}], 1, "field 'truncated'"),
        (["[1, 2]"], 1, "expected a JSON object"),
    ],
)
def test_malformed_generations_file_names_file_and_line(tmp_path, rows, line, message):
    path = write_lines(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError) as info:
        read_generations(path, PROMPTS)
    assert str(path) in str(info.value) and f"line {line}" in str(info.value) and message in str(info.value)


def test_generations_file_missing_prompts_and_id_rows(tmp_path):
    path = write_lines(
        tmp_path / "t.jsonl", [{"prompt_index": 0, "response": "a"}, {"prompt_index": 2, "response": "c"}]
    )
    with pytest.raises(DataError, match=r"t.jsonl: no response for 1 of the task's 3 prompts \(prompt_index 1\)"):
        read_generations(path, PROMPTS)
    # rows may come in any order and name their prompt by id; samples of a prompt keep their file order
    path = write_lines(
        tmp_path / "ids.jsonl",
        [
            {"id": "t-2", "response": "c"},
            {"id": "t-0", "response": "a1", "truncated": True},
            {"id": "t-1", "response": "b"},
            {"id": "t-0", "response": "a2", "truncated": False},
        ],
    )
    got = read_generations(path, PROMPTS)
    assert (got.prompt_index, got.responses, got.truncated) == ([0, 0, 1, 2], ["a1", "a2", "b", "c"], None)
    # round trip through the writer
    out = write_generations(
        tmp_path / "round.jsonl", PROMPTS, Generations([0, 1, 2], ["x", "y", "z"], [True, False, True])
    )
    again = read_generations(out, PROMPTS)
    assert (again.prompt_index, again.responses, again.truncated) == ([0, 1, 2], ["x", "y", "z"], [True, False, True])


def test_cli_reports_malformed_generations_with_file_and_line(tmp_path, capsys):
    folder = tmp_path / "gens"
    folder.mkdir()
    write_lines(
        folder / "synthetic_cli.jsonl", [{"prompt_index": 0, "response": "a"}, {"prompt_index": 1, "reply": "b"}]
    )
    register_task(
        "synthetic_cli", "reasoning", lambda: CharTask("synthetic_cli", "reasoning", "a", num_prompts=2), replace=True
    )
    try:
        code = main(
            ["eval", "--tasks", "synthetic_cli", "--generations_dir", str(folder), "--output", str(tmp_path / "r.json")]
        )
    finally:
        unregister_task("synthetic_cli")
    assert code == 2
    err = capsys.readouterr().err
    assert "synthetic_cli.jsonl, line 2, field 'response'" in err


# -- real tasks (skipped without the data folder) ------------------------------------------


def _needs(*parts: str) -> None:
    if not default_data_dir().joinpath(*parts).exists():
        pytest.skip(f"{'/'.join(parts)} not found under {default_data_dir()}")


def test_cli_gsm8k_and_ifeval_on_tiny_model(tmp_path, capsys):
    _needs("gsm8k", "test.jsonl")
    _needs("ifeval", "input_data.jsonl")
    out = tmp_path / "results.json"
    assert main(["eval", "--preset", "tiny", "--sampling.max_new_tokens", "8", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["tasks"]) == {"gsm8k", "ifeval"}
    gsm8k, ifeval = results["tasks"]["gsm8k"], results["tasks"]["ifeval"]
    assert gsm8k["category"] == "reasoning" and ifeval["category"] == "instruction following"
    assert gsm8k["num_prompts"] == ifeval["num_prompts"] == 2
    assert gsm8k["metrics"]["accuracy"] == gsm8k["score"] and set(gsm8k["metrics"]) >= {"no_answer_rate", "n"}
    assert ifeval["score"] == ifeval["metrics"]["prompt_level_strict_acc"]
    assert results["categories"] == {
        "reasoning": {"score": gsm8k["score"], "tasks": ["gsm8k"]},
        "instruction following": {"score": ifeval["score"], "tasks": ["ifeval"]},
    }
    assert results["overall"]["score"] == pytest.approx((gsm8k["score"] + ifeval["score"]) / 2)
    lines = (tmp_path / "results-generations" / "gsm8k.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert "overall" in capsys.readouterr().out


def test_humaneval_canonical_solutions_from_a_generations_folder_pass(tmp_path):
    _needs("humaneval", "HumanEval.jsonl.gz")
    task = build_task("humaneval")
    prompts = task.prompts(2)
    folder = tmp_path / "gens"
    write_generations(
        folder / "humaneval.jsonl", prompts, Generations([0, 1], [p.metadata["canonical_solution"] for p in prompts])
    )
    config = EvalConfig(tasks=["humaneval"], limit=2, generations_dir=str(folder), output=str(tmp_path / "r.json"))
    results = run_eval(config, console=quiet())
    assert results["tasks"]["humaneval"]["score"] == 1.0
    assert results["categories"]["coding"]["score"] == 1.0 and "truncated_rate" not in results["tasks"]["humaneval"]


def test_task_paths_and_options_reach_the_task(tmp_path):
    data = tmp_path / "mini_gsm8k.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "answer": f"work\n#### {a}"}) + "\n" for q, a in [("1+1?", 2), ("2+3?", 5)])
    )
    config = EvalConfig(
        tasks=["gsm8k"],
        task_paths={"gsm8k": str(data)},
        task_options={"GSM8K": {"instruction": "Answer after ####."}},
        generations_dir=str(tmp_path / "gens"),
        output=str(tmp_path / "r.json"),
    )
    assert config.options_for("gsm8k") == {"instruction": "Answer after ####.", "path": str(data)}
    prompts = build_task("gsm8k", **config.options_for("gsm8k")).prompts()
    assert prompts[0].messages[-1].content == "1+1?\nAnswer after ####."
    write_generations(tmp_path / "gens" / "gsm8k.jsonl", prompts, Generations([0, 1], ["so #### 2", "so #### 6"]))
    results = run_eval(config, console=quiet())
    assert results["tasks"]["gsm8k"]["score"] == 0.5 and results["overall"]["score"] == 0.5
    with pytest.raises(ValueError, match=r"name tasks that are not run: \['ifeval'\]"):
        EvalConfig(tasks=["gsm8k"], task_paths={"ifeval": "x"})
    with pytest.raises(ValueError, match="a task is named twice"):
        EvalConfig(tasks=["gsm8k", "GSM8K"])


def test_task_options_from_the_command_line_and_from_yaml(tmp_path):
    """--task_options TASK KEY VALUE (one option per task) on the command line; any number, lists included, in
    a YAML; both reach the task factories."""
    import warnings

    from prefalign.cli import parse_config

    config, _ = parse_config("eval", ["--tasks", "mbpp", "gsm8k", "--task_options", "mbpp", "split", "train",
                                      "gsm8k", "split", "train"])  # fmt: skip
    assert config.task_options == {"mbpp": {"split": "train"}, "gsm8k": {"split": "train"}}
    assert config.options_for("gsm8k")["split"] == "train"
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text("tasks: [humaneval]\ntask_options:\n  humaneval: {ks: [1, 10], timeout: 3.0}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning reaches the user
        config, _ = parse_config("eval", ["--config", str(yaml_file)])
    assert config.task_options == {"humaneval": {"ks": [1, 10], "timeout": 3.0}}
