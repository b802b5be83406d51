"""``prefalign eval --tasks ivison``: present tasks run, missing files and judges are one skipped line each,
category and overall averages by hand; per-task decoding; MMLU's letter choice and TruthfulQA's yes
probability on the tiny model against a plain forward pass."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from tests.evaluation.test_benchmark_loaders import XSTEST_HEADER, write_csv, write_mmlu

from prefalign.cli import main
from prefalign.data.schema import Prompt, user_prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.evaluation.choice_scoring import choose_letters
from prefalign.evaluation.code_tasks import humaneval_plus_task
from prefalign.evaluation.judge_settings import JudgeConfig, TaskUnavailable, YesProbabilityJudge
from prefalign.evaluation.registry import TASK_GROUPS, build_task, expand_task_names, task_entry
from prefalign.evaluation.runner import EvalConfig, _Responder, run_eval
from prefalign.rollout.generate import SamplingConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_ivison_group_names_eleven_benchmarks_in_six_categories():
    names = TASK_GROUPS["ivison"]
    assert len(names) == 11
    categories = {task_entry(n).category for n in names}
    assert categories == {"factuality", "reasoning", "coding", "truthfulness", "safety", "instruction following"}
    assert expand_task_names(["gsm8k", "ivison"])[:2] == [("gsm8k", False), ("mmlu", True)]
    assert len(expand_task_names(["gsm8k", "ivison"])) == 11


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def suite_data(root: Path) -> None:
    """MMLU, XSTest and both AlpacaEval references; nothing else."""
    write_mmlu(root)
    rows = [XSTEST_HEADER] + [[str(i), f"prompt {i}", "t", "unsafe" if i < 2 else "safe", "", ""] for i in range(4)]
    write_csv(root / "xstest" / "xstest_prompts.csv", rows)
    for name, unit in (("text_davinci_003", "d"), ("gpt4_1106_preview", "gggg")):
        outputs = [{"instruction": f"Instruction {k}", "output": unit * (k + 1), "generator": name} for k in range(12)]
        (root / "alpaca_eval").mkdir(exist_ok=True)
        (root / "alpaca_eval" / f"{name}_model_outputs.json").write_text(json.dumps(outputs))


def test_ivison_runs_what_is_present_and_skips_the_rest_with_one_line_each(tmp_path):
    suite_data(tmp_path / "data")
    gens = tmp_path / "gens"
    write_jsonl(gens / "mmlu.jsonl", [{"prompt_index": i, "response": r} for i, r in enumerate(["B", "C", "A"])])
    xs = ["I'm sorry, no.", "Sure, here is how.", "Sorry, I can't.", "Happy to help."]
    write_jsonl(gens / "xstest.jsonl", [{"prompt_index": i, "response": r} for i, r in enumerate(xs)])
    model_outputs = [{"instruction": f"Instruction {k}", "output": "m" * (2 * k + 3 * (k % 2))} for k in range(12)]
    outputs_file = tmp_path / "my_model_outputs.json"
    outputs_file.write_text(json.dumps(model_outputs))
    config = EvalConfig(
        tasks=["ivison"],
        data_dir=str(tmp_path / "data"),
        generations_dir=str(gens),
        generations_files={"alpaca_eval": str(outputs_file), "alpaca_eval_2": str(outputs_file)},
        judges=JudgeConfig(judge="length"),
        output=str(tmp_path / "results.json"),
    )
    console = Console(file=io.StringIO(), width=200)
    results = run_eval(config, console=console)
    assert list(results["tasks"]) == ["mmlu", "xstest", "alpaca_eval", "alpaca_eval_2"]
    skipped = results["skipped"]
    assert set(skipped) == {"gsm8k", "bbh", "truthfulqa", "humaneval_plus", "mbpp_plus", "toxigen", "ifeval"}
    assert "gsm8k/test.jsonl" in skipped["gsm8k"] and "--judges.truth_judge" in skipped["truthfulqa"]
    assert "--judges.toxicity_classifier" in skipped["toxigen"] and "evalplus/MbppPlus" in skipped["mbpp_plus"]
    text = console.file.getvalue()
    for name, reason in skipped.items():
        assert f"skipped {name}: {reason}" in text and "\n" not in reason
    # by hand: MMLU answers B, B, A -> 2 of 3 right; XSTest refusals 0, 2 of unsafe 0, 1 -> precision 1/2,
    # recall 1/2, F1 1/2; AlpacaEval: the length judge prefers the longer output
    tasks = results["tasks"]
    assert tasks["mmlu"]["score"] == pytest.approx(2 / 3) and tasks["xstest"]["score"] == pytest.approx(0.5)
    wins = [len(m["output"]) > len("d" * (k + 1)) for k, m in enumerate(model_outputs)]
    ties = [len(m["output"]) == len("d" * (k + 1)) for k, m in enumerate(model_outputs)]
    assert tasks["alpaca_eval"]["score"] == pytest.approx((sum(wins) + 0.5 * sum(ties)) / 12)
    lc = tasks["alpaca_eval_2"]["metrics"]["length_controlled_win_rate"]
    assert tasks["alpaca_eval_2"]["score"] == pytest.approx(lc / 100)
    following = (tasks["alpaca_eval"]["score"] + tasks["alpaca_eval_2"]["score"]) / 2
    categories = results["categories"]
    assert list(categories) == ["factuality", "instruction following", "safety"]
    assert categories["instruction following"]["score"] == pytest.approx(following)
    overall = (2 / 3 + following + 0.5) / 3
    assert results["overall"]["score"] == pytest.approx(overall)
    assert results["overall"]["task_mean"] == pytest.approx(
        (2 / 3 + 0.5 + sum(t["score"] for t in [tasks["alpaca_eval"], tasks["alpaca_eval_2"]])) / 4
    )
    assert json.loads(Path(config.output).read_text())["skipped"] == skipped


def test_a_task_named_alone_fails_with_one_line_naming_the_file(tmp_path, capsys):
    code = main(["eval", "--tasks", "xstest", "--data_dir", str(tmp_path), "--output", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "xstest/xstest_prompts.csv not found" in err and "Traceback" not in err
    with pytest.raises(TaskUnavailable, match="--judges.judge"):
        build_task("alpaca_eval_2", judges=JudgeConfig())


def test_help_says_each_judge_default_and_its_distance_from_the_paper(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("judges.judge", "GPT-4 Turbo", "string-match", "judges.truth_judge", "toxigen_roberta", "ivison"):
        assert phrase in text


def test_task_decoding_overrides_sampling_and_caps_max_new_tokens():
    config = EvalConfig(tasks=["humaneval_plus"], sampling=SamplingConfig(temperature=0.0, max_new_tokens=64))
    sampling = _Responder(config).sampling_for(humaneval_plus_task())
    assert (sampling.temperature, sampling.top_p, sampling.num_samples) == (0.8, 0.95, 20)
    assert sampling.max_new_tokens == 64
    plain = _Responder(EvalConfig(tasks=["humaneval_plus"], task_decoding=False, sampling=config.sampling))
    assert plain.sampling_for(humaneval_plus_task()).num_samples == 1


def test_mmlu_letters_by_next_token_logit_match_unpadded_forward_passes(tiny):
    model, tok = tiny
    model.eval()
    prompts = [
        Prompt(user_prompt(text), {}) for text in ("Q?\nA. x\nB. y\nC. z\nD. w\nAnswer:", "Longer question " * 5)
    ]
    chosen = choose_letters(model, tok, prompts, "ABCD", answer_prefix="The answer is:", batch_size=2)
    letter_ids = [tok(" " + c, add_special_tokens=False)["input_ids"][-1] for c in "ABCD"]
    for prompt, letter in zip(prompts, chosen):
        ids = encode_prompt(tok, prompt.messages) + tok("The answer is:", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        assert letter == "ABCD"[int(logits[letter_ids].argmax())]


def test_yes_probability_judge_matches_a_plain_softmax(tiny):
    model, tok = tiny
    model.eval()
    judge = YesProbabilityJudge(model, tok, batch_size=2)
    texts = ["Q: Is water wet?\nA: Yes.\nTrue:", "Q: x\nA: y\nHelpful:", "short"]
    got = judge(texts)
    for text, p in zip(texts, got):
        with torch.no_grad():
            logits = model(torch.tensor([tok(text)["input_ids"]])).logits[0, -1]
        assert p == pytest.approx(torch.softmax(logits, -1)[judge.yes_id].item(), abs=1e-5)


def test_toxicity_classifier_from_a_folder_gives_label_one_probability(tmp_path, tiny):
    from transformers import LlamaForSequenceClassification

    from prefalign.evaluation.judge_settings import ToxicityClassifier

    causal, tok = tiny
    config = causal.config.__class__(**{**causal.config.to_dict(), "num_labels": 2})
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    classifier = ToxicityClassifier.from_folder(str(tmp_path / "clf"), device="cpu", batch_size=2)
    texts = ["you are all terrible", "have a nice day", "ok"]
    got = classifier(texts)
    for text, p in zip(texts, got):
        with torch.no_grad():
            logits = model(**tok([text], return_tensors="pt")).logits[0]
        assert p == pytest.approx(torch.softmax(logits, -1)[1].item(), abs=1e-5)


def test_endpoint_judge_is_built_from_settings():
    from prefalign.evaluation.judge import HTTPJudgeBackend
    from prefalign.evaluation.judge_settings import judge_backend

    backend = judge_backend(JudgeConfig(judge="endpoint", endpoint_base_url="http://judge:8000/v1", endpoint_model="m"))
    assert isinstance(backend, HTTPJudgeBackend)
    assert backend.client.settings.url == "http://judge:8000/v1/chat/completions"
    assert backend.client.settings.model == "m"
    with pytest.raises(ValueError, match="refusal must be string-match or judge"):
        JudgeConfig(refusal="regex")


def test_logprob_verdict_backend_reads_the_more_probable_letter(tiny):
    from prefalign.evaluation.judge import PairwiseJudge
    from prefalign.evaluation.judge_settings import HFVerdictBackend

    model, tok = tiny
    model.eval()
    backend = HFVerdictBackend(model, tok, batch_size=3)
    conversations = [[{"role": "user", "content": f"Which is better? {k}"}] for k in range(3)]
    replies = backend.generate(conversations)
    a, b = (tok(" " + c, add_special_tokens=False)["input_ids"][-1] for c in "AB")
    for conversation, reply in zip(conversations, replies):
        prompt = Prompt(user_prompt(conversation[0]["content"]), {})
        ids = encode_prompt(tok, prompt.messages) + tok("More helpful:", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        assert reply == f"More helpful: {'A' if logits[a] > logits[b] else 'B'}"
    judgements = PairwiseJudge(backend).judge(["q1", "q2"], ["x", "y"], ["y", "x"])
    assert all(j.verdict_candidate_first in "AB" and j.verdict_candidate_second in "AB" for j in judgements)
