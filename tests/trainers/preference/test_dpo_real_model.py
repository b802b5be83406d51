"""DPO on SmolLM2-135M-Instruct and real HH-RLHF pairs: the fast log-probs, log 2 at init, one step raises the margin.

The held-out accuracy figure comes from the longer run of ``recipes/dpo_hh_smollm2.yaml``.
"""

import json
import math

import pytest
import torch

from prefalign.config import from_dict
from prefalign.data.sources import load_preference_data
from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.models.logprobs import sequence_logprobs
from prefalign.trainers.preference.batches import collate_rankings, collate_shared_prompt, encode_rankings
from prefalign.trainers.preference.dpo import run_dpo
from prefalign.trainers.preference.dpo_config import DPOConfig
from prefalign.trainers.preference.logprobs import ranking_logps, response_logps

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def hh_pairs():
    pairs, _ = load_preference_data("hh-rlhf", limit=4, seed=1)
    return pairs


def test_fast_logps_on_smollm2_match_the_full_computation(hh_pairs):
    cfg = ModelConfig(name_or_path="smollm2-135m-instruct")
    model, tok = load_causal_lm(cfg).eval(), load_tokenizer(cfg)
    encoded, report = encode_rankings(tok, hh_pairs[:2], max_length=128)
    assert report.total == 0
    batch = collate_rankings(encoded, tok.pad_token_id)
    with torch.no_grad():
        fast = response_logps(model, batch)
        slow = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        shared = ranking_logps(model, collate_shared_prompt(encoded, tok.pad_token_id))  # (B, K), prompt computed once
    torch.testing.assert_close(fast, slow, atol=2e-3, rtol=1e-5)
    torch.testing.assert_close(shared, slow.view(2, 2).T, atol=2e-3, rtol=1e-5)


def test_one_dpo_step_on_smollm2_starts_at_log2_and_raises_the_margin(tmp_path, hh_pairs):
    cfg = from_dict(
        DPOConfig,
        {
            "model": {"name_or_path": "smollm2-135m-instruct"},
            "data": {"max_length": 128},
            "batch": {"global_batch_size": 4, "micro_batch_size": 4, "epochs": 1.0},
            "optim": {"learning_rate": 1e-5, "warmup_ratio": 0.0},
            "eval_micro_batch_size": 4,
            "run": {"output_dir": str(tmp_path / "smol"), "progress": False, "tensorboard": False},
        },
    )
    results = run_dpo(cfg, (hh_pairs, hh_pairs))  # held-out = the training batch
    first = (tmp_path / "smol" / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(first)["loss"] == pytest.approx(math.log(2.0), abs=1e-4)
    assert results["eval/rewards/margin"] > 0.0 and results["eval/loss"] < math.log(2.0)
