"""Battle -> token ids: the prompt and both responses (all turns) in one chat-formatted sequence.

Layout of ``format.template: plain`` (one user turn of the model's chat template; Gemma's
``<start_of_turn>`` format when the tokenizer has none, e.g. a GGUF tokenizer)::

    <bos><start_of_turn>user\\n{instruction}
    ## Prompt\\n{p1}\\n\\n## Response A\\n{a1}\\n\\n## Response B\\n{b1}   (one block per kept round)
    ...<end_of_turn>\\n<start_of_turn>model\\n

``format.template: judge`` frames the battle as a pairwise judge prompt in the spirit of MT-bench's
(:data:`JUDGE_INSTRUCTION`: impartial, ignore the order and the length), every kept round as
``[User Question]`` / ``[The Start of Assistant A's Answer]`` ... ``[The End of Assistant B's Answer]``
(:data:`JUDGE_LABELS`), and opens the model's turn with ``Verdict: [[`` (:data:`JUDGE_ANSWER`), so the
last token is where the model states its verdict: its next token is one of :data:`VERDICT_TOKENS`
(A, B, or C for a tie). The classifier pools that last token; ``model.head.init: verdict`` starts the
head from those tokens' output-embedding rows, and ``zero_shot`` (``make judge``) reads them untrained.

Every text is tokenized once (one batched call of the fast tokenizer); the A|B and B|A orders are
assembled from the same token lists, so swap-TTA costs no extra tokenization.

Token budget (``max_len`` in all): whole rounds are kept, newest-first (``keep: newest``) or
oldest-first (``keep: oldest``), while they fit; the first round that does not fit is split between
prompt / A / B by ``shares`` (water-filling: a short segment's unused share goes to the others),
and older/newer rounds beyond it are dropped. Kept rounds are always written in chronological
order. ``truncation_side: right`` keeps the start of a cut text, ``left`` keeps its end. With equal
A and B shares the allocation is mirror-symmetric: format(swap(x)) is format(x) with A and B exchanged
(both templates: every segment's header and closing line cost the same in both orders).

    .venv/bin/python -m pytest tests/test_llm_format.py
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lmsys_arena.llm.config import FormatConfig

log = logging.getLogger(__name__)

SENTINEL = "\x00BODY\x00"
GEMMA_TURNS = ("<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n")

# ---- format.template: judge (the verdict tokens are chosen here and nowhere else)
VERDICT_TOKENS = ("A", "B", "C")  # the judge's answer for A wins, B wins, tie (MT-bench's [[A]] / [[B]] / [[C]])
JUDGE_INSTRUCTION = (  # MT-bench's pairwise judge prompt, condensed (the verdict comes first, no explanation)
    "Act as an impartial judge: compare the responses of two AI assistants to the user's questions below and "
    "decide which one follows the instructions and answers them better (helpfulness, relevance, accuracy, "
    "depth, detail). Neither the order of the responses nor their length may influence your decision. Output "
    f'your verdict strictly as "[[{VERDICT_TOKENS[0]}]]" if assistant A is better, "[[{VERDICT_TOKENS[1]}]]" if '
    f'assistant B is better, or "[[{VERDICT_TOKENS[2]}]]" for a tie.'
)
JUDGE_LABELS = (  # (header, closing line) of the prompt, response A and response B of each kept round
    ("\n\n[User Question]\n", ""),
    ("\n\n[The Start of Assistant A's Answer]\n", "\n[The End of Assistant A's Answer]"),
    ("\n\n[The Start of Assistant B's Answer]\n", "\n[The End of Assistant B's Answer]"),
)
JUDGE_ANSWER = "Verdict: [["  # the model's turn starts here: its next token is the verdict


def template_texts(cfg: FormatConfig) -> tuple[str, list[tuple[str, str]], str]:
    """``(instruction, [(header, closing line)] of prompt / A / B, the start of the model's turn)`` of
    ``cfg.template``; ``plain`` takes ``format.instruction`` and ``format.labels``."""
    if cfg.template == "judge":
        return JUDGE_INSTRUCTION, list(JUDGE_LABELS), JUDGE_ANSWER
    return cfg.instruction, [(getattr(cfg.labels, k), "") for k in ("prompt", "a", "b")], ""


def verdict_token_ids(tokenizer) -> list[int]:
    """Token ids of :data:`VERDICT_TOKENS` (A wins, B wins, tie); each must be one token of ``tokenizer``.
    Warns when the tokenizer would not write a verdict after :data:`JUDGE_ANSWER` as that same token."""
    enc = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    ids = [enc(t) for t in VERDICT_TOKENS]
    bad = [t for t, i in zip(VERDICT_TOKENS, ids) if len(i) != 1]
    if bad or len({i[0] for i in ids}) != len(ids):
        raise ValueError(
            f"the verdict tokens {VERDICT_TOKENS} must be distinct single tokens of this tokenizer; "
            f"they encode as {ids} (llm/format.py VERDICT_TOKENS)"
        )
    ids = [i[0] for i in ids]
    answer = enc(JUDGE_ANSWER)
    in_context = [enc(JUDGE_ANSWER + t) for t in VERDICT_TOKENS]
    if any(c != answer + [i] for c, i in zip(in_context, ids)):
        log.warning(
            "this tokenizer merges the verdict with %r (%s): the verdict tokens %s are not exactly the next "
            "token the model would write", JUDGE_ANSWER, in_context, ids,
        )  # fmt: skip
    return ids


def template_pieces(tokenizer) -> tuple[str, str]:
    """(text before the user message, text after it incl. the generation prompt)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        if SENTINEL in text:
            before, after = text.split(SENTINEL)
            if tokenizer.bos_token and not before.startswith(tokenizer.bos_token):
                before = tokenizer.bos_token + before
            return before, after
    bos = tokenizer.bos_token or ""
    return bos + GEMMA_TURNS[0], GEMMA_TURNS[1]


def waterfill(need: tuple[int, int, int], shares: tuple[float, float, float], budget: int) -> list[int]:
    """Split ``budget`` tokens between segments of lengths ``need`` in proportion to ``shares``;
    a segment needing less than its share gets what it needs and the rest is re-split.
    Rounds down (at most 2 tokens unused) so equal shares give equal amounts: mirror symmetry."""
    alloc = [0, 0, 0]
    active = [i for i in range(3) if need[i] > 0 and shares[i] > 0]
    left = max(budget, 0)
    while active:
        tot = sum(shares[i] for i in active)
        quota = {i: left * shares[i] / tot for i in active}
        full = [i for i in active if need[i] <= quota[i]]
        if not full:
            for i in active:
                alloc[i] = int(quota[i])
            break
        for i in full:
            alloc[i] = need[i]
            left -= need[i]
        active = [i for i in active if i not in full]
    return alloc


def allocate(rounds: list[tuple[int, int, int]], budget: int, label_cost: int, cfg: FormatConfig) -> list[list[int]]:
    """Kept token counts per round and segment ([0, 0, 0] = round dropped)."""
    shares = (cfg.shares.prompt, cfg.shares.a, cfg.shares.b)
    out = [[0, 0, 0] for _ in rounds]
    order = range(len(rounds) - 1, -1, -1) if cfg.keep == "newest" else range(len(rounds))
    left = budget
    for r in order:
        cost = label_cost + sum(rounds[r])
        if cost <= left:
            out[r] = list(rounds[r])
            left -= cost
            continue
        first = left == budget  # the first round considered is always kept, split if need be
        if left > label_cost and (first or left - label_cost >= min(cfg.min_split, sum(rounds[r]))):
            out[r] = waterfill(rounds[r], shares, left - label_cost)
        break
    return out


def _cut(ids: list[int], k: int, side: str) -> list[int]:
    if k >= len(ids):
        return ids
    if k <= 0:
        return []
    return ids[:k] if side == "right" else ids[len(ids) - k :]


class BattleEncoder:
    """Tokenizes battles into sequences of at most ``cfg.max_len`` tokens (both A/B orders)."""

    def __init__(self, tokenizer, cfg: FormatConfig):
        self.tok, self.cfg = tokenizer, cfg
        before, after = template_pieces(tokenizer)
        instruction, labels, answer = template_texts(cfg)
        enc = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []  # noqa: E731
        self.head = enc(before) + enc(instruction)
        self.tail = enc(after + answer)  # judge: the model's turn opens with the verdict's lead-in
        self.label_ids = [enc(h) for h, _ in labels]  # each segment's header ...
        self.close_ids = [enc(c) for _, c in labels]  # ... and closing line (plain: none)
        self.label_cost = sum(len(x) for x in self.label_ids + self.close_ids)
        self.budget = cfg.max_len - len(self.head) - len(self.tail)
        if self.budget <= self.label_cost + 3:
            raise ValueError(
                f"format.max_len={cfg.max_len} leaves no room for text "
                f"({len(self.head) + len(self.tail) + self.label_cost} template tokens)"
            )

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        n = int(self.cfg.max_len * self.cfg.chars_per_token)
        right = self.cfg.truncation_side == "right"
        texts = [t if len(t) <= n else (t[:n] if right else t[-n:]) for t in texts]
        return [list(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, df: pd.DataFrame, swap: bool = False, both: bool = False):
        """Token id arrays (int32), one per row; ``swap`` exchanges A and B; ``both`` returns
        (A|B list, B|A list) from one tokenization."""
        texts, spans = [], []
        for p, a, b in zip(df["prompt"], df["response_a"], df["response_b"]):
            start = len(texts)
            for turn in zip(p, a, b):
                texts.extend(t or "" for t in turn)
            spans.append((start, len(texts)))
        ids = self._tokenize(texts) if texts else []
        fwd = [self._assemble(ids, s, e, False) for s, e in spans] if (both or not swap) else None
        rev = [self._assemble(ids, s, e, True) for s, e in spans] if (both or swap) else None
        return (fwd, rev) if both else (rev if swap else fwd)

    def _assemble(self, ids: list[list[int]], start: int, end: int, swap: bool) -> np.ndarray:
        rounds = []
        for i in range(start, end, 3):
            p, a, b = ids[i], ids[i + 1], ids[i + 2]
            rounds.append((p, b, a) if swap else (p, a, b))
        keep = allocate([tuple(len(s) for s in r) for r in rounds], self.budget, self.label_cost, self.cfg)
        out = list(self.head)
        for segs, ks in zip(rounds, keep):
            if not any(ks):
                continue
            for lab, seg, k, close in zip(self.label_ids, segs, ks, self.close_ids):
                out += lab
                out += _cut(seg, k, self.cfg.truncation_side)
                out += close
        out += self.tail
        return np.asarray(out, dtype=np.int32)


def lengths(seqs: list[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
