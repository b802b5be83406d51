"""Multiple-choice answers by next-token probability, as open-instruct scores MMLU (Ivison et al., 2024, App. D).

For each prompt, the chat-templated prompt is followed by ``answer_prefix`` (e.g. "The answer is:") and
the answer is the choice letter whose token (the last token of ``" " + letter``) has the highest
next-token logit. Nothing is generated, so the choice is always one of the letters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefalign.data.schema import Prompt
from prefalign.data.tokenize import encode_prompt


def letter_token_ids(tokenizer, letters: Sequence[str]) -> list[int]:
    """The token id of each ``" " + letter`` (its last token), as open-instruct picks them."""
    ids = [tokenizer(" " + letter, add_special_tokens=False)["input_ids"][-1] for letter in letters]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the tokenizer maps the choices {list(letters)} to the same token")
    return ids


@torch.no_grad()
def choose_letters(
    model, tokenizer, prompts: Sequence[Prompt], letters: Sequence[str], *, answer_prefix: str = "", batch_size: int = 8
) -> list[str]:
    """The most probable letter for each prompt (see the module docstring)."""
    choice_ids = torch.tensor(letter_token_ids(tokenizer, letters))
    prefix = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"] if answer_prefix else []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training, out = model.training, []
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [encode_prompt(tokenizer, p.messages) + prefix for p in prompts[start : start + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)  # (B, T) left-padded
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1]  # (B, V)
            best = logits[:, choice_ids.to(device)].argmax(dim=-1)  # (B,)
            out.extend(letters[i] for i in best.tolist())
    finally:
        model.train(was_training)
    return out
