"""Battle formatting and the token-budget allocator (no model, no peft).

.venv/bin/python -m pytest tests/test_llm_format.py
"""

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.data import load_battles
from lmsys_arena.llm.backbones import tiny_tokenizer
from lmsys_arena.llm.config import FormatConfig
from lmsys_arena.llm.format import BattleEncoder, allocate, template_pieces, waterfill
from lmsys_arena.schema import build
from lmsys_arena.swap import swap_battles


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def battle(prompts, a, b):
    return pd.DataFrame({"id": ["x"], "prompt": [prompts], "response_a": [a], "response_b": [b], "label": [0]})


def decode(tok, ids):
    return tok.decode(list(ids))


def test_waterfill_gives_short_segments_all_and_splits_the_rest():
    assert waterfill((10, 500, 500), (0.2, 0.4, 0.4), 210) == [10, 100, 100]
    assert waterfill((500, 500, 500), (0.2, 0.4, 0.4), 100) == [20, 40, 40]
    assert waterfill((500, 30, 500), (0.2, 0.4, 0.4), 100) == [23, 30, 46]
    assert waterfill((5, 5, 5), (1, 1, 1), 100) == [5, 5, 5]
    a = waterfill((50, 7, 300), (0.2, 0.4, 0.4), 101)
    b = waterfill((50, 300, 7), (0.2, 0.4, 0.4), 101)
    assert a == [b[0], b[2], b[1]]  # mirror symmetry


def test_allocate_keeps_whole_rounds_newest_or_oldest_first():
    rounds = [(10, 10, 10), (10, 10, 10), (10, 10, 10)]
    cfg = FormatConfig(keep="newest", min_split=8)
    # label cost 2 per round -> 32 per round; 16 left for the oldest round: 14 text tokens split 0.2/0.4/0.4
    assert allocate(rounds, 80, 2, cfg) == [[2, 5, 5], [10, 10, 10], [10, 10, 10]]
    # 6 left: fewer than min_split text tokens -> the round is dropped, not shredded
    assert allocate(rounds, 70, 2, cfg) == [[0, 0, 0], [10, 10, 10], [10, 10, 10]]
    assert allocate(rounds, 80, 2, FormatConfig(keep="oldest", min_split=8)) == [[10, 10, 10], [10, 10, 10], [2, 5, 5]]
    assert allocate([(100, 300, 300)], 102, 2, cfg) == [[20, 40, 40]]
    assert allocate(rounds, 200, 2, cfg) == [[10, 10, 10]] * 3


def test_template_falls_back_to_gemma_turns(tok):
    before, after = template_pieces(tok)
    assert before == "<bos><start_of_turn>user\n" and after == "<end_of_turn>\n<start_of_turn>model\n"


def test_short_battle_fits_whole_and_reads_back(tok):
    enc = BattleEncoder(tok, FormatConfig(max_len=256))
    ids = enc.encode(battle(["hi?"], ["hello"], ["hey"]))[0]
    text = decode(tok, ids)
    assert text.startswith("<bos><start_of_turn>user\n")
    assert text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert "## Prompt\nhi?\n\n## Response A\nhello\n\n## Response B\nhey" in text
    assert len(ids) <= 256


@pytest.mark.parametrize("side", ["right", "left"])
def test_overflow_truncates_each_segment_on_the_chosen_side(tok, side):
    enc = BattleEncoder(tok, FormatConfig(max_len=200, truncation_side=side))
    a, b = "A" * 50 + "a" * 300, "B" * 50 + "b" * 300
    ids = enc.encode(battle(["p" * 10], [a], [b]))[0]
    text = decode(tok, ids)
    assert len(ids) <= 200 and len(ids) >= 196  # at most 2 tokens left unused
    body_a = text.split("## Response A\n")[1].split("\n\n## Response B")[0]
    body_b = text.split("## Response B\n")[1].split("<end_of_turn>")[0]
    assert len(body_a) == len(body_b)  # equal shares, symmetric
    assert "p" * 10 in text  # the short prompt is kept whole
    if side == "right":
        assert body_a.startswith("A" * 20) and body_b.startswith("B" * 20)
    else:
        assert set(body_a) == {"a"} and set(body_b) == {"b"}


def test_multi_turn_keeps_newest_rounds_in_order(tok):
    prompts = [f"q{i}" + "x" * 60 for i in range(4)]
    a = [f"a{i}" + "y" * 60 for i in range(4)]
    b = [f"b{i}" + "z" * 60 for i in range(4)]
    enc = BattleEncoder(tok, FormatConfig(max_len=480, keep="newest"))
    text = decode(tok, enc.encode(battle(prompts, a, b))[0])
    assert text.count("## Prompt") == 2
    assert "q3" in text and "b3" in text and "q0" not in text
    assert text.index("q2") < text.index("q3")  # chronological order
    enc = BattleEncoder(tok, FormatConfig(max_len=480, keep="oldest"))
    text = decode(tok, enc.encode(battle(prompts, a, b))[0])
    assert "q0" in text and "q3" not in text and text.index("q0") < text.index("q1")


def test_swapped_order_mirrors_and_matches_swap_battles(tok, sample_dir):
    df = load_battles(sample_dir / "train.csv").head(60)
    enc = BattleEncoder(tok, FormatConfig(max_len=160))
    fwd, rev = enc.encode(df, both=True)
    rev2 = enc.encode(swap_battles(df))
    assert all(np.array_equal(x, y) for x, y in zip(rev, rev2))
    assert all(len(x) <= 160 for x in fwd)
    # the swapped sequence is the forward one with the two responses exchanged
    tail = "<end_of_turn>\n<start_of_turn>model\n"
    for x, y in zip(fwd, rev):
        ax, bx = decode(tok, x).removesuffix(tail).split("## Response A\n")[-1].split("\n\n## Response B\n")
        ay, by = decode(tok, y).removesuffix(tail).split("## Response A\n")[-1].split("\n\n## Response B\n")
        assert (ax, bx) == (by, ay)


def test_too_small_max_len_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="max_len"):
        BattleEncoder(tok, FormatConfig(max_len=20))
    with pytest.raises(ValueError, match="format.truncation_side must be one of 'right', 'left', got 'middle'"):
        build(FormatConfig, {"truncation_side": "middle"}, prefix="format.")


# ---------------------------------------------------------------- format.template: judge

JUDGE_TAIL = "<end_of_turn>\n<start_of_turn>model\nVerdict: [["


def judge_bodies(text: str) -> tuple[str, str]:
    """The (A, B) answer bodies of the last round of a judge-format text."""
    a = text.split("[The Start of Assistant A's Answer]\n")[-1].split("\n[The End of Assistant A's Answer]")[0]
    b = text.split("[The Start of Assistant B's Answer]\n")[-1].split("\n[The End of Assistant B's Answer]")[0]
    return a, b


def test_judge_template_frames_the_battle_and_ends_at_the_verdict(tok):
    from lmsys_arena.llm.format import JUDGE_INSTRUCTION

    enc = BattleEncoder(tok, FormatConfig(max_len=1024, template="judge"))
    ids = enc.encode(battle(["hi?", "and?"], ["hello", "more"], ["hey", "less"]))[0]
    text = decode(tok, ids)
    assert text.startswith("<bos><start_of_turn>user\n" + JUDGE_INSTRUCTION)
    assert text.endswith(JUDGE_TAIL)  # the last token opens the verdict: the pooled token predicts A / B / C
    rounds = (
        "\n\n[User Question]\n{p}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]"
        "\n\n[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
    )
    body = rounds.format(p="hi?", a="hello", b="hey") + rounds.format(p="and?", a="more", b="less")
    assert text == "<bos><start_of_turn>user\n" + JUDGE_INSTRUCTION + body + JUDGE_TAIL  # multi-turn kept, in order
    assert "## Response A" not in text  # format.labels are the plain template's


def test_judge_template_keeps_the_budget_and_the_mirror_symmetry(tok, sample_dir):
    df = load_battles(sample_dir / "train.csv").head(60)
    enc = BattleEncoder(tok, FormatConfig(max_len=900, template="judge"))
    fwd, rev = enc.encode(df, both=True)
    rev2 = enc.encode(swap_battles(df))
    assert all(np.array_equal(x, y) for x, y in zip(rev, rev2))
    assert all(len(x) <= 900 for x in fwd) and max(len(x) for x in fwd) >= 890  # long rows are cut (water-filling)
    for x, y in zip(fwd, rev):
        tx, ty = decode(tok, x), decode(tok, y)
        assert tx.endswith(JUDGE_TAIL) and ty.endswith(JUDGE_TAIL)
        assert judge_bodies(tx) == judge_bodies(ty)[::-1]
        assert tx.count("[User Question]") == ty.count("[User Question]")


def test_judge_template_needs_room_for_its_instruction(tok):
    BattleEncoder(tok, FormatConfig(max_len=192))  # the plain template fits
    with pytest.raises(ValueError, match="format.max_len=192 leaves no room"):
        BattleEncoder(tok, FormatConfig(max_len=192, template="judge"))


def test_plain_template_is_unchanged_by_the_judge_option(tok):
    enc = BattleEncoder(tok, FormatConfig(max_len=256))
    assert enc.close_ids == [[], [], []]
    assert decode(tok, enc.tail) == "<end_of_turn>\n<start_of_turn>model\n"


def test_verdict_tokens_are_single_tokens(tok):
    from lmsys_arena.llm.format import VERDICT_TOKENS, verdict_token_ids

    ids = verdict_token_ids(tok)
    assert [tok.decode([i]) for i in ids] == list(VERDICT_TOKENS) == ["A", "B", "C"]

    class Split:  # a tokenizer that writes "C" as two tokens
        def __call__(self, s, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in s] + ([0] if s == "C" else [])}

    with pytest.raises(ValueError, match="distinct single tokens"):
        verdict_token_ids(Split())
