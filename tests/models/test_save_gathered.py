"""``save_model`` with a gathered state dict (what ZeRO-3 / FSDP give at the end of a run)."""

import torch
from safetensors.torch import load_file

from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer, save_model


def test_the_gathered_weights_are_written_not_the_models_own(tmp_path):
    model = load_causal_lm(ModelConfig(name_or_path="tiny-random"), seed=0)
    tok = load_tokenizer(ModelConfig(name_or_path="tiny-random"))
    gathered = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    save_model(model, tok, tmp_path / "model", state_dict=gathered)
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert saved and all(torch.all(v == 0.5) for v in saved.values())
    assert not torch.all(model.model.embed_tokens.weight == 0.5)  # the model itself is left alone


def test_a_sharded_lora_model_is_saved_as_its_adapter(tmp_path):
    cfg = ModelConfig(name_or_path="tiny-random", lora=True)
    model = load_causal_lm(cfg, seed=0)
    tok = load_tokenizer(cfg)
    save_model(model, tok, tmp_path / "model", state_dict=model.state_dict())
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "model" / "model.safetensors").exists()
    assert "adapter alone" in (tmp_path / "model" / "README.md").read_text()
