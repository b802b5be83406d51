"""Pairwise judge: verdict parsing, Xu et al.'s both-orders rule, summaries, and a local HF judge
(a tiny Llama built from a config, made to answer one fixed letter: a maximally position-biased
judge, which the both-orders rule must turn into ties)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from prefalign.data.schema import Message, Prompt
from prefalign.evaluation.judge import (
    DEFAULT_TEMPLATE,
    HFJudgeBackend,
    PairwiseJudge,
    VerdictParseError,
    combine_orders,
    parse_verdict,
    render_query,
    summarize,
)


@pytest.mark.parametrize(
    "reply,verdict",
    [
        ("Comparison: A is more detailed.\nMore helpful: A", "A"),
        ('Comparison: B wins.\nMore helpful: "B"', "B"),
        ("**More harmless:** [B]", "B"),
        ("Comparison: Response A mentions B.\nMore helpful: Response B", "B"),
        ("Both are fine, but overall\nA", "A"),
        ("Preferred: a", "A"),
        ("More helpful: A\nWait, on reflection:\nMore helpful: B", "B"),  # the last labelled verdict
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize(
    "reply", ["", "Both responses are equally good.", "More helpful: neither", "A or B, hard to say"]
)
def test_parse_verdict_rejects_replies_without_a_verdict(reply):
    with pytest.raises(VerdictParseError, match="no 'A'/'B' verdict"):
        parse_verdict(reply)


def test_combine_orders():
    assert combine_orders("A", "B") == "win"  # candidate preferred in both orders
    assert combine_orders("B", "A") == "loss"
    assert combine_orders("A", "A") == combine_orders("B", "B") == "tie"  # position bias -> tie
    assert combine_orders(None, "B") == "tie"


class ScriptedBackend:
    """Prefers the response containing 'GOOD'; records what it was asked."""

    def __init__(self, fixed=None):
        self.fixed, self.seen = fixed, []

    def generate(self, conversations):
        self.seen.extend(conversations)
        replies = []
        for conv in conversations:
            text = conv[-1]["content"]
            a = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
            verdict = self.fixed or ("A" if "GOOD" in a else "B")
            replies.append(f"Comparison: one is better.\nMore helpful: {verdict}")
        return replies


def test_pairwise_judge_wins_ties_losses_and_rates():
    backend = ScriptedBackend()
    judge = PairwiseJudge(backend, system="You are a careful judge.")
    queries = ["q1", "q2", "q3", "q4"]
    candidates = ["GOOD answer", "bad", "GOOD", "bad"]
    baselines = ["bad", "GOOD answer", "GOOD too", "also bad"]
    judgements = judge.judge(queries, candidates, baselines)
    # the last two: the judge says "A" (both GOOD) or "B" (neither) whatever the order -> ties
    assert [j.outcome for j in judgements] == ["win", "loss", "tie", "tie"]
    # both orders were asked, candidate first then second, with the system message
    assert len(backend.seen) == 8 and backend.seen[0][0] == {"role": "system", "content": "You are a careful judge."}
    assert "Response A:\nGOOD answer\n\nResponse B:\nbad" in backend.seen[0][1]["content"]
    assert "Response A:\nbad\n\nResponse B:\nGOOD answer" in backend.seen[1][1]["content"]
    summary = summarize(judgements)
    assert (summary["wins"], summary["ties"], summary["losses"], summary["n"]) == (1, 2, 1, 4)
    assert summary["win_rate"] == 0.25 and summary["tie_rate"] == 0.5 and summary["loss_rate"] == 0.25
    assert summary["unparseable_verdicts"] == 0


def test_position_biased_judge_gives_only_ties():
    judgements = PairwiseJudge(ScriptedBackend(fixed="A")).judge(["q"] * 3, ["GOOD", "x", "y"], ["z", "GOOD", "w"])
    assert summarize(judgements)["tie_rate"] == 1.0


def test_unparseable_replies_raise_or_count_as_ties():
    class Mumbling:
        def generate(self, conversations):
            return ["I cannot decide."] * len(conversations)

    with pytest.raises(VerdictParseError, match=r"comparison 0 \(candidate first\)"):
        PairwiseJudge(Mumbling()).judge(["q"], ["a"], ["b"])
    judgements = PairwiseJudge(Mumbling(), on_unparseable="tie").judge(["q"], ["a"], ["b"])
    assert judgements[0].outcome == "tie" and summarize(judgements)["unparseable_verdicts"] == 2


def test_judge_argument_checks_and_query_rendering():
    with pytest.raises(ValueError, match="lacks the fields"):
        PairwiseJudge(ScriptedBackend(), template="Which is better? {response_a}")
    with pytest.raises(ValueError, match="1 queries, 2 candidates"):
        PairwiseJudge(ScriptedBackend()).judge(["q"], ["a", "b"], ["c"])
    dialogue = Prompt(
        [Message("system", "s"), Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Help?")]
    )
    assert render_query(dialogue) == "User: Hi\n\nAssistant: Hello\n\nUser: Help?"
    assert "{criterion}" in DEFAULT_TEMPLATE and "More {criterion}:" in DEFAULT_TEMPLATE


def _constant_llama_judge(letter: str):
    """A tiny Llama whose greedy output is always ``letter``: all token embeddings are equal, so the
    final hidden state is the same for every input, and only ``letter``'s output row is non-zero."""
    words = ["<pad>", "<eos>", "<unk>", "<|user|>", "<|system|>", "<|assistant|>", "A", "B"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.randn(32).expand(len(words), 32))
        hidden = model.model(input_ids=torch.tensor([[3, 2, 5]])).last_hidden_state[0, -1]  # (hidden,)
        model.lm_head.weight.zero_()
        model.lm_head.weight[words.index(letter)] = hidden
    model.train()  # the backend must switch to eval and back
    return model, tok


def test_hf_judge_backend_runs_greedy_generation_through_the_chat_template():
    model, tok = _constant_llama_judge("A")
    backend = HFJudgeBackend(model, tok, max_new_tokens=1, batch_size=4)
    judgements = PairwiseJudge(backend).judge(
        ["a short query", "another, longer query here"] * 3, ["x", "y", "z"] * 2, ["u", "v", "w"] * 2
    )
    assert all(j.replies == ("A", "A") for j in judgements)
    assert summarize(judgements)["tie_rate"] == 1.0  # always "A": pure position bias -> all ties
    assert model.training and tok.padding_side == "right"
    model_b, tok_b = _constant_llama_judge("B")
    assert HFJudgeBackend(model_b, tok_b, max_new_tokens=1).generate([[{"role": "user", "content": "which?"}]]) == ["B"]
    tok_b.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        HFJudgeBackend(model_b, tok_b)
