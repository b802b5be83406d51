"""LoRA adapters, merged saving, bf16 autocast, and the encoder reward-model backbone."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.config import from_dict
from prefalign.data.schema import SFTExample, user_prompt
from prefalign.models.load import MINILM, ModelConfig, load_causal_lm, load_reward_model, load_tokenizer, save_model
from prefalign.trainers.sft import SFTConfig, run_sft


def test_lora_trains_only_adapters_and_saves_merged(tmp_path, tiny):
    _, tok = tiny
    model = load_causal_lm(
        ModelConfig(name_or_path="tiny-random", lora=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable < total / 5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # make the adapters matter
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    path = save_model(model, tok, tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(path)
    assert not any("lora" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
    assert hasattr(model, "peft_config")  # the training model itself is unchanged


@pytest.mark.parametrize("precision", ["bf16"])
def test_sft_runs_under_cpu_autocast(tmp_path, precision):
    cfg = from_dict(
        SFTConfig,
        {
            "model": {"name_or_path": "tiny-random"},
            "data": {"max_length": 48},
            "batch": {"global_batch_size": 4, "micro_batch_size": 4},
            "run": {"output_dir": str(tmp_path), "mixed_precision": precision, "progress": False, "tensorboard": False},
        },
    )
    results = run_sft(cfg, ([SFTExample(user_prompt("a"), "b")] * 8, [SFTExample(user_prompt("a"), "b")]))
    assert results["steps"] == 2 and results["eval/loss"] > 0


def test_fp16_on_cpu_is_refused(tmp_path):
    cfg = from_dict(
        SFTConfig,
        {"model": {"name_or_path": "tiny-random"}, "run": {"output_dir": str(tmp_path), "mixed_precision": "fp16"}},
    )
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        run_sft(cfg, ([SFTExample(user_prompt("a"), "b")] * 8, []))


@pytest.mark.real_model
def test_minilm_encoder_reward_model():
    from prefalign.data.collate import collate_pairs
    from prefalign.data.tokenize import encode_pair
    from prefalign.models.heads import sequence_scores

    cfg = ModelConfig(name_or_path=MINILM)
    tok = load_tokenizer(cfg)
    model = load_reward_model(cfg)
    pair = encode_pair(tok, user_prompt("How do I bake bread?"), "Mix flour, water and yeast, then bake.", "No.", 64)
    assert pair.chosen.input_ids[0] == tok.cls_token_id and pair.chosen.input_ids[-1] == tok.sep_token_id
    batch = collate_pairs([pair], tok.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    margins = []
    for _ in range(3):
        scores = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
        margins.append(float((scores[0] - scores[1]).detach()))
        (-torch.nn.functional.logsigmoid(scores[0] - scores[1])).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert margins[-1] > margins[0]
