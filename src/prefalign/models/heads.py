"""Reading scalar heads: one score per sequence (reward model) or per token (value model).

The score of a sequence is read at its **last real token**, found from the attention mask, so it
is right whatever the padding side and whether or not the pad id equals the EOS id (SmolLM2's do:
reading "the last non-pad token" by id would skip a real EOS). Encoder backbones (BERT) are read
at the [CLS] position through the model's own pooler and classifier.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from prefalign.models.load import scalar_head


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last 1 in each row of a (B, T) mask; works for left and right padding."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, T), got shape {tuple(attention_mask.shape)}")
    if not bool((attention_mask.sum(dim=1) > 0).all()):
        raise ValueError("a row of the attention mask is all zeros: an empty sequence cannot be scored")
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


def _is_encoder(model: PreTrainedModel) -> bool:
    return not getattr(model.config, "is_decoder", False) and model.config.model_type in {
        "bert",
        "roberta",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
    }


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def hidden_states(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) last hidden states of the backbone under a scalar head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    out = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=_position_ids(attention_mask), use_cache=False
    )
    return out.last_hidden_state


def sequence_scores(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) reward-model scores: the head applied at each sequence's last real token."""
    if _is_encoder(model):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)
    hidden = hidden_states(model, input_ids, attention_mask)  # (B, T, H)
    index = last_real_index(attention_mask)  # (B,)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]  # (B, H)
    head = scalar_head(model)
    return head(last.to(head.weight.dtype)).squeeze(-1).float()


def token_values(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) value-model outputs: the head applied at every position (a decoder backbone)."""
    hidden = hidden_states(model, input_ids, attention_mask)  # (B, T, H)
    head = scalar_head(model)
    return head(hidden.to(head.weight.dtype)).squeeze(-1).float()
