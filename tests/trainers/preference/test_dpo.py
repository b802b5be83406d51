"""The offline preference trainer (DPO, RRHF, PRO) end to end on a tiny random model."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from prefalign.config import ConfigError, from_dict
from prefalign.data.schema import PreferencePair, RankedResponses, user_prompt
from prefalign.models.logprobs import sequence_logprobs
from prefalign.trainers.preference.batches import (
    PACKED,
    SHARED_PROMPT,
    collate_group,
    collate_rankings,
    collate_shared_prompt,
    encode_rankings,
    length_sorted_groups,
    pack_rows,
)
from prefalign.trainers.preference.dpo import load_training_records, run_dpo
from prefalign.trainers.preference.dpo_config import DPOConfig
from prefalign.trainers.preference.logprobs import choose_layout, ranking_logps, response_logps

LOG2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n, offset=0):
    """Chosen answers are lowercase words, rejected ones digits; lengths vary so padding and sorting matter."""
    out = []
    for i in range(offset, offset + n):
        prompt = user_prompt(f"question {i}: " + "tell me " * (i % 4))
        out.append(PreferencePair(prompt, "yes indeed " * (1 + i % 3), "0123 " * (1 + (i * 7) % 5)))
    return out


def _varied_pairs(n):
    """Pairs of very different lengths (2 to 80 response tokens), so that short ones can share a row."""
    return [
        PreferencePair(user_prompt(f"q{i}"), "yes " * (1 + (i * 5) % 20), "0123 " * (1 + (i * 3) % 16))
        for i in range(n)
    ]


def _config(tmp_path, name, **overrides):
    base = {
        "model": {"name_or_path": "tiny-random"},
        "data": {"max_length": 96},
        "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": 1.0},
        "optim": {"learning_rate": 3e-3, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / name), "progress": False, "tensorboard": False},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return from_dict(DPOConfig, base)


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    return load_file(str(path / "model" / "model.safetensors"))


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


# ----------------------------------------------------------------------------- batches


def test_response_logps_equals_the_full_logits_computation(tiny):
    model, tok = tiny
    encoded, _ = encode_rankings(tok, _pairs(5), max_length=64, max_prompt_length=40)
    batch = collate_rankings(encoded, tok.pad_token_id)
    fast = response_logps(model, batch)
    slow = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-5)
    # rows k*B + b: ranking_logps puts chosen in column 0 and rejected in column 1
    torch.testing.assert_close(ranking_logps(model, batch), slow.view(2, 5).T, atol=1e-4, rtol=1e-5)
    fast.sum().backward()
    assert model.get_output_embeddings().weight.grad is not None


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_rows_give_each_response_its_own_context(attention):
    """One row per example (prompt once, then K responses under a block mask) = one row per response, values and
    gradients."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefalign.models.tiny import build_byte_tokenizer

    tok = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        pad_token_id=tok.pad_token_id,
        attn_implementation=attention,
    )  # grouped-query attention
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    rankings = [
        RankedResponses(
            user_prompt("hi " * i), ["yes " * (i + 1), "no way " * (3 - i % 3), "maybe" * i], [2.0, 1.0, 0.0]
        )
        for i in range(1, 6)
    ]
    encoded, _ = encode_rankings(tok, rankings, max_length=64, max_prompt_length=32)
    assert choose_layout(model, True) == PACKED and choose_layout(model, True, pack=False) == SHARED_PROMPT
    assert choose_layout(model, False) not in (PACKED, SHARED_PROMPT)
    rows = ranking_logps(model, collate_rankings(encoded, tok.pad_token_id))
    rows.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    shared_batch = collate_shared_prompt(encoded, tok.pad_token_id)
    shared = ranking_logps(model, shared_batch)
    shared.sum().backward()
    torch.testing.assert_close(shared, rows, atol=1e-4, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], atol=1e-4, rtol=1e-3)
    assert shared_batch["input_ids"].shape[0] == 5 and int(shared_batch["token_mask"].sum()) == sum(
        e.shared_length for e in encoded
    )
    # packed: several examples to a row, each masked off from the others, in any order within its row
    model.zero_grad()
    packed_batch = collate_shared_prompt(encoded, tok.pad_token_id, rows=[[3, 0], [1, 4, 2]])
    packed = ranking_logps(model, packed_batch)
    packed.sum().backward()
    torch.testing.assert_close(packed, rows, atol=1e-4, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], atol=1e-4, rtol=1e-3)
    assert packed_batch["input_ids"].shape[0] == 2
    assert int(packed_batch["token_mask"].sum()) == sum(e.shared_length for e in encoded)


def test_empty_responses_are_reported_and_skipped(tiny):
    _, tok = tiny
    records = _pairs(3) + [PreferencePair(user_prompt("q"), "   ", "no"), PreferencePair(user_prompt("q"), "yes", "")]
    encoded, report = encode_rankings(tok, records, max_length=64)
    assert [e.source_index for e in encoded] == [0, 1, 2]
    assert report.counts == {"empty chosen response": 1, "empty rejected response": 1}
    assert report.to_dict()["by_reason"] == {"empty chosen response": 1, "empty rejected response": 1}


def test_a_sample_cut_at_the_length_limit_gets_no_eos(tiny):
    _, tok = tiny
    pair = PreferencePair(user_prompt("q"), "abc", "de", {"rejected_truncated": True})
    (enc,), _ = encode_rankings(tok, [pair], max_length=64)
    assert enc.sequences[0].input_ids[-1] == tok.eos_token_id
    assert enc.sequences[1].input_ids[-1] != tok.eos_token_id
    assert enc.sequences[1].response_length == 2


def test_length_sorted_groups_cover_each_index_once_within_the_caps(tiny):
    _, tok = tiny
    encoded, _ = encode_rankings(tok, _pairs(11), max_length=96)
    groups = length_sorted_groups(encoded, list(range(11)), max_examples=3, max_tokens=600)
    assert sorted(i for g in groups for i in g) == list(range(11))
    widths = [max(encoded[i].max_length for i in g) for g in groups]
    assert widths == sorted(widths, reverse=True)
    for g in groups:
        assert len(g) <= 3
        assert len(g) == 1 or 2 * len(g) * max(encoded[i].max_length for i in g) <= 600


def test_pack_rows_is_first_fit_decreasing_within_the_capacity():
    assert pack_rows([5, 9, 3, 4, 1], 9) == [[1], [0, 3], [2, 4]]
    assert pack_rows([7, 7, 7], 10) == [[0], [1], [2]]
    assert pack_rows([12, 3], 10) == [[0], [1]]  # wider than the capacity: a row of its own


def test_packed_groups_cover_each_index_once_with_fewer_padded_positions(tiny):
    _, tok = tiny
    encoded, _ = encode_rankings(tok, _varied_pairs(13), max_length=96)
    indices = list(range(13))
    groups = length_sorted_groups(encoded, indices, max_examples=3, layout=PACKED)
    assert sorted(i for g in groups for i in g) == indices
    longest = max(e.shared_length for e in encoded)
    positions = 0
    for g in groups:
        assert len(g.rows) <= 3 and sorted(p for row in g.rows for p in row) == list(range(len(g)))
        assert all(sum(encoded[g[p]].shared_length for p in row) <= longest for row in g.rows)
        batch = collate_group(PACKED, encoded, g, tok.pad_token_id)
        assert int(batch["token_mask"].sum()) == sum(encoded[i].shared_length for i in g)
        positions += batch["token_mask"].numel()
    unpacked = sum(
        collate_group(SHARED_PROMPT, encoded, g, tok.pad_token_id)["token_mask"].numel()
        for g in length_sorted_groups(encoded, indices, max_examples=3, layout=SHARED_PROMPT)
    )
    assert positions < unpacked
    capped = length_sorted_groups(encoded, indices, max_examples=8, max_tokens=2 * longest, layout=PACKED)
    assert all(len(g.rows) <= 2 for g in capped)


# ----------------------------------------------------------------------------- the trainer


def test_loss_is_log2_at_init_and_one_step_raises_the_margin(tmp_path):
    pairs = _pairs(8)
    results = run_dpo(_config(tmp_path, "one"), (pairs, pairs))  # held-out = the training batch
    (row,) = _rows(tmp_path / "one")
    assert row["loss"] == pytest.approx(LOG2, abs=1e-5)
    assert row["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    for key in (
        "loss",
        "rewards/accuracy",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margin",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in row and f"eval/{key}" in results
    assert results["eval/rewards/margin"] > 0.0
    assert results["eval/loss"] < LOG2
    assert results["eval/rewards/chosen"] > results["eval/rewards/rejected"]


def test_dpo_learns_the_preference_on_held_out_pairs(tmp_path):
    cfg = _config(tmp_path, "learn", batch={"epochs": 3.0})
    results = run_dpo(cfg, (_pairs(32), _pairs(16, offset=100)))
    assert results["eval/rewards/accuracy"] >= 0.9
    assert results["eval/loss"] < 0.5 * LOG2


def test_cached_and_on_the_fly_reference_train_alike(tmp_path):
    pairs = _pairs(16)
    run_dpo(_config(tmp_path, "cached", batch={"epochs": 2.0}), (pairs, []))
    run_dpo(_config(tmp_path, "fly", batch={"epochs": 2.0}, reference="on_the_fly"), (pairs, []))
    a, b = _rows(tmp_path / "cached"), _rows(tmp_path / "fly")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)
    assert _max_diff(_weights(tmp_path / "cached"), _weights(tmp_path / "fly")) < 1e-4


def test_micro_batching_and_token_caps_do_not_change_the_run(tmp_path):
    pairs = _varied_pairs(16)
    run_dpo(_config(tmp_path, "whole", batch={"epochs": 2.0}, pack_examples=False), (pairs, []))
    run_dpo(
        _config(
            tmp_path,
            "split",
            batch={"epochs": 2.0, "micro_batch_size": 3},
            max_tokens_per_micro_batch=400,
            pack_examples=False,
        ),
        (pairs, []),
    )
    a, b = _rows(tmp_path / "whole"), _rows(tmp_path / "split")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)
    assert [r["rewards/margin"] for r in a] == pytest.approx([r["rewards/margin"] for r in b], abs=1e-5)
    assert b[0]["perf/padding"] < a[0]["perf/padding"]  # sorted micro-batches waste fewer positions
    assert _max_diff(_weights(tmp_path / "whole"), _weights(tmp_path / "split")) < 1e-4
    # several pairs to a row: the same run on fewer padded positions
    run_dpo(_config(tmp_path, "packed", batch={"epochs": 2.0, "micro_batch_size": 3}), (pairs, []))
    d = _rows(tmp_path / "packed")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in d], abs=1e-5)
    assert d[0]["perf/padding"] < b[0]["perf/padding"]
    assert _max_diff(_weights(tmp_path / "whole"), _weights(tmp_path / "packed")) < 1e-4
    run_dpo(_config(tmp_path, "rows", batch={"epochs": 2.0}, share_prompt=False), (pairs, []))
    c = _rows(tmp_path / "rows")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in c], abs=1e-5)
    assert (
        a[0]["perf/tokens_per_second"] * a[0]["perf/step_seconds"]
        < c[0]["perf/tokens_per_second"] * c[0]["perf/step_seconds"]
    )


@pytest.mark.parametrize("loss", ["rrhf", "pro"])
def test_ranking_losses_train_on_lists_of_three(tmp_path, loss):
    rankings = [
        RankedResponses(user_prompt(f"q{i}"), ["good answer", "ok 12", "9999 0000 1111"], [2.0, 1.0, 0.0])
        for i in range(16)
    ]
    results = run_dpo(_config(tmp_path, loss, loss=loss, batch={"epochs": 2.0}), (rankings, rankings[:8]))
    rows = _rows(tmp_path / loss)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert {"rank_loss", "sft_loss", "rank/accuracy", "logps/chosen"} <= set(rows[0])
    assert "eval/rewards/accuracy" in results and results["eval/rank/accuracy"] == 1.0


def test_dpo_refuses_rankings_of_three(tmp_path):
    rankings = [RankedResponses(user_prompt(f"q{i}"), ["a", "b", "c"]) for i in range(8)]
    with pytest.raises(ValueError, match="DPO takes pairs"):
        run_dpo(_config(tmp_path, "three"), (rankings, []))


def test_resume_after_an_interruption_continues_exactly(tmp_path, monkeypatch):
    from prefalign.trainers.logging import MetricLogger

    pairs = _pairs(16)
    run_dpo(_config(tmp_path, "full", batch={"epochs": 3.0}), (pairs, pairs[:4]))
    original_log = MetricLogger.log

    def killed_at_step_4(self, step, metrics, **kw):
        if step == 4:  # step 4's update is done but neither logged nor saved: the run dies here
            raise KeyboardInterrupt
        return original_log(self, step, metrics, **kw)

    monkeypatch.setattr(MetricLogger, "log", killed_at_step_4)
    part = _config(tmp_path, "part", batch={"epochs": 3.0}, run={"save_every": 3})
    with pytest.raises(KeyboardInterrupt):
        run_dpo(part, (pairs, pairs[:4]))
    monkeypatch.setattr(MetricLogger, "log", original_log)
    resumed = _config(tmp_path, "part", batch={"epochs": 3.0}, run={"save_every": 3, "resume": True})
    results = run_dpo(resumed, (pairs, pairs[:4]))
    assert _max_diff(_weights(tmp_path / "full"), _weights(tmp_path / "part")) == 0.0
    full, part_rows = _rows(tmp_path / "full"), _rows(tmp_path / "part")
    assert [r["step"] for r in part_rows] == list(range(1, 7))
    assert [r["loss"] for r in part_rows] == [r["loss"] for r in full]
    assert (
        results["eval/rewards/margin"]
        == json.loads((tmp_path / "full" / "results.json").read_text())["eval/rewards/margin"]
    )


def test_stop_after_steps_then_resume_equals_one_run(tmp_path):
    pairs = _pairs(16)
    run_dpo(_config(tmp_path, "full", batch={"epochs": 2.0}, reference="on_the_fly"), (pairs, []))
    stopped = run_dpo(
        _config(tmp_path, "part", batch={"epochs": 2.0}, reference="on_the_fly", stop_after_steps=2), (pairs, [])
    )
    assert stopped["completed"] is False and stopped["stopped_at_step"] == 2
    run_dpo(_config(tmp_path, "part", batch={"epochs": 2.0}, reference="on_the_fly", run={"resume": True}), (pairs, []))
    assert _max_diff(_weights(tmp_path / "full"), _weights(tmp_path / "part")) == 0.0


def test_sft_first_trains_on_chosen_then_starts_dpo_from_it(tmp_path):
    pairs = _pairs(16)
    cfg = _config(
        tmp_path,
        "sft-dpo",
        sft_first={
            "enabled": True,
            "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": 2.0},
            "optim": {"learning_rate": 3e-3, "warmup_ratio": 0.0},
        },
    )
    results = run_dpo(cfg, (pairs, pairs[:4]))
    sft_dir = tmp_path / "sft-dpo" / "sft"
    assert (sft_dir / "model" / "config.json").exists()
    assert json.loads((sft_dir / "results.json").read_text())["train_examples"] == 16
    # the SFT model is the reference: DPO starts at log 2 and its chosen responses are already likely
    first = _rows(tmp_path / "sft-dpo")[0]
    assert first["loss"] == pytest.approx(LOG2, abs=1e-5)
    assert results["completed"] and results["model_dir"].endswith("sft-dpo/model")


SAFE_ROWS = [
    # both safe / mixed / both unsafe, in the upstream PKU-SafeRLHF format
    {
        "prompt": "p1",
        "response_0": "a1",
        "response_1": "b1",
        "is_response_0_safe": True,
        "is_response_1_safe": True,
        "better_response_id": 1,
        "safer_response_id": 0,
    },
    {
        "prompt": "p2",
        "response_0": "a2",
        "response_1": "b2",
        "is_response_0_safe": True,
        "is_response_1_safe": False,
        "better_response_id": 1,
        "safer_response_id": 0,
    },
    {
        "prompt": "p3",
        "response_0": "a3",
        "response_1": "b3",
        "is_response_0_safe": False,
        "is_response_1_safe": False,
        "better_response_id": 0,
        "safer_response_id": 1,
    },
]


def test_dual_safe_and_dual_unsafe_filters_reach_the_adapter(tmp_path):
    path = tmp_path / "safe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SAFE_ROWS * 4))
    data = {"source": "safe-rlhf", "path": str(path), "eval_size": 0.0}
    train, _, _ = load_training_records(_config(tmp_path, "all", data=data))
    assert sorted({p.metadata["category"] for p in train}) == ["dual_safe", "dual_unsafe", "mixed"]
    train, _, report = load_training_records(_config(tmp_path, "f", data=data, drop_dual_unsafe=True))
    assert {p.metadata["category"] for p in train} == {"dual_safe", "mixed"} and report.total_skipped == 4
    train, _, _ = load_training_records(_config(tmp_path, "g", data=data, drop_dual_safe=True, drop_dual_unsafe=True))
    assert {p.metadata["category"] for p in train} == {"mixed"}
    with pytest.raises(ConfigError, match="safe-rlhf"):
        load_training_records(_config(tmp_path, "h", drop_dual_unsafe=True))


def test_sft_safe_uses_only_safe_responses(tmp_path):
    from prefalign.trainers.preference.dpo import sft_examples

    path = tmp_path / "safe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SAFE_ROWS))
    train, _, _ = load_training_records(
        _config(tmp_path, "s", data={"source": "safe-rlhf", "path": str(path), "eval_size": 0.0})
    )
    assert sorted(e.response for e in sft_examples(train)) == ["a1", "a2", "b1"]


def test_lora_reference_is_the_base_model_with_adapters_off(tmp_path):
    pairs = _pairs(16)
    lora = {
        "name_or_path": "tiny-random",
        "lora": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj", "gate_proj"],
    }
    run_dpo(_config(tmp_path, "cached", model=lora, batch={"epochs": 2.0}), (pairs, pairs[:4]))
    results = run_dpo(
        _config(tmp_path, "fly", model=lora, batch={"epochs": 2.0}, reference="on_the_fly"), (pairs, pairs[:4])
    )
    a, b = _rows(tmp_path / "cached"), _rows(tmp_path / "fly")
    assert a[0]["loss"] == pytest.approx(LOG2, abs=1e-6)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)
    assert results["eval/rewards/margin"] > 0.0
    merged = _weights(tmp_path / "fly")
    assert not any("lora" in k for k in merged)  # saved merged: a plain model folder
