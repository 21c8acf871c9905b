"""Hand-built battle features for the GBDT family: lengths, markdown, style, refusals, similarity.

    python -m lmsys_arena train --model xgb          # builds (or reuses) the features per fold
    python -c "from lmsys_arena.features import feature_names; print(*feature_names(), sep='\\n')"

Everything is stateless (regex counts and bag-of-words cosine similarity, in polars), so
nothing is fitted on labels and test rows get exactly the same transform. Features are cached
per row under ``cache/features/<spec-hash>/<shard-hash>.parquet``, keyed by a hash of each row's
texts: a fold's train rows, its valid rows and the test rows all reuse earlier work, and a
changed row is recomputed on its own.

Column naming defines the A/B swap (:func:`lmsys_arena.swap.swap_features`):

    a_<x> / b_<x>      the same quantity for response A / B        -> exchanged
    diff_<x>, lr_<x>   a - b and log1p(a) - log1p(b)               -> negated
    anything else      prompt features and symmetric pair features -> unchanged
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FEATURE_VERSION = "2"
CHUNK_ROWS = 4096

# per-text counts: name -> regex (Rust regex syntax, counted with polars str.count_matches)
_REFUSAL = (
    r"(?i)\b(?:i cannot|i can ?not|i can'?t|i'?m unable|i am unable|i'?m not able|i am not able|i won'?t|"
    r"as an ai|language model|not appropriate|inappropriate|unethical|against (?:my|the) (?:guidelines|policy)|"
    r"i do(?: not|n'?t) have (?:access|the ability|personal))"
)
COUNT_PATTERNS: dict[str, str] = {
    "words": r"\S+",
    "lines": r"\n",
    "paragraphs": r"\n[ \t]*\n",
    "sentences": r"[.!?]+(?:\s|$)",
    "headers": r"(?m)^[ \t]*#{1,6}[ \t]",
    "bold": r"\*\*[^*\n]+\*\*",
    "italic": r"(?:^|[^*])\*[^*\n]+\*(?:[^*]|$)",
    "bullets": r"(?m)^[ \t]*[-*+•][ \t]",
    "numbered": r"(?m)^[ \t]*\d+[.)][ \t]",
    "table_rows": r"(?m)^[ \t]*\|.*\|[ \t]*$",
    "code_fences": r"```",
    "inline_code": r"`[^`\n]+`",
    "links": r"https?://",
    "digits": r"\d",
    "punct": r"[[:punct:]]",
    "upper": r"\p{Lu}",
    "non_ascii": r"[^\x00-\x7F]",
    "questions": r"\?",
    "exclaims": r"!",
    "colons": r":",
    "newline_runs": r"\n{3,}",
    "refusal": _REFUSAL,
    "apology": r"(?i)\b(?:sorry|apologi[sz]e|apologies|unfortunately)\b",
    "hedge": r"(?i)\b(?:however|although|it depends|may|might|generally|typically|note that)\b",
    "eager": r"(?i)\b(?:certainly|sure|of course|absolutely|happy to|glad to|great question)\b",
    "closing": r"(?i)\b(?:i hope this helps|let me know|feel free|in summary|in conclusion|overall)\b",
    "first_person": r"(?i)\b(?:i|i'm|me|my)\b",
    "second_person": r"(?i)\b(?:you|your|you're)\b",
    "quotes": r"[\"“”]",
    "latex": r"\$[^$\n]+\$|\\\(|\\\[",
    "ellipsis": r"\.\.\.|…",
}
# per-text 0/1 flags
FLAG_PATTERNS: dict[str, str] = {
    "starts_refusal": r"(?i)^\s*(?:i'?m sorry|i apologi|sorry|i cannot|i can'?t|as an ai|unfortunately)",
    "ends_question": r"\?\s*$",
    "ends_open": r"[^.!?)\]`*\"'\s]\s*$",  # likely truncated: does not end like a sentence
    "has_code": r"```",
    "has_table": r"(?m)^[ \t]*\|.*\|[ \t]*$",
}
# counts with log-ratio and difference features
PAIR_COUNTS = ["chars", "unique_words", *COUNT_PATTERNS]
# per-side ratios (difference only)
RATIOS = [
    "chars_per_word",
    "words_per_sentence",
    "lexical_diversity",
    "punct_rate",
    "digit_rate",
    "upper_rate",
    "newline_rate",
    "non_ascii_rate",
    "markdown_rate",
    "len_vs_prompt",
    "sim_prompt",
]
PROMPT_COUNTS = ["chars", "words", "lines", "questions", "digits", "code_fences", "non_ascii", "sentences", "bullets"]


def feature_names() -> list[str]:
    """The stable, ordered list of feature columns :func:`build_features` returns."""
    side = [*PAIR_COUNTS, *FLAG_PATTERNS, "empty", *RATIOS]
    names = [f"{s}_{x}" for s in ("a", "b") for x in side]
    names += [f"diff_{x}" for x in [*PAIR_COUNTS, *RATIOS]]
    names += [f"lr_{x}" for x in PAIR_COUNTS]
    names += [f"p_{x}" for x in PROMPT_COUNTS]
    names += [
        "turns",
        "sim_ab",
        "identical",
        "n_empty",
        "sum_log_chars",
        "abs_lr_chars",
        "abs_lr_words",
        "abs_diff_sim_prompt",
    ]
    return names


FEATURE_NAMES = feature_names()


# ---------------------------------------------------------------------------------------- computing


def _joined(col: pd.Series) -> list[str]:
    return ["\n\n".join(turns) for turns in col]


def _side_frame(texts: list[str]):
    """Raw per-text quantities (counts, flags) as a polars frame."""
    import polars as pl

    s = pl.Series("t", texts, dtype=pl.String)
    t = pl.col("t")
    exprs = [
        t.str.len_chars().alias("chars"),
        t.str.to_lowercase().str.extract_all(r"\w+").list.n_unique().alias("unique_words"),
    ]
    exprs += [t.str.count_matches(p).alias(n) for n, p in COUNT_PATTERNS.items()]
    exprs += [t.str.contains(p).alias(n) for n, p in FLAG_PATTERNS.items()]
    exprs += [(t.str.strip_chars().str.len_chars() == 0).alias("empty")]
    return pl.DataFrame(s).select(exprs).cast(pl.Float32).to_pandas()


def _bag(texts: list[str]):
    """Sublinear word counts, one row per (text, word): columns r (text index), w, x = log1p(count)."""
    import polars as pl

    return (
        pl.DataFrame({"t": texts}, schema={"t": pl.String})
        .with_row_index("r")
        .select("r", pl.col("t").str.to_lowercase().str.extract_all(r"\w+").alias("w"))
        .explode("w")
        .drop_nulls()
        .group_by("r", "w")
        .len()
        .select("r", "w", pl.col("len").cast(pl.Float64).log1p().alias("x"))
    )


def _cosine(X, Y, n: int) -> np.ndarray:
    """Row-wise cosine similarity of two bags from :func:`_bag` (0 where a text has no words)."""
    import polars as pl

    norm = [B.group_by("r").agg((pl.col("x") ** 2).sum().sqrt().alias(f"n{i}")) for i, B in enumerate((X, Y))]
    d = (
        X.join(Y, on=["r", "w"])
        .group_by("r")
        .agg((pl.col("x") * pl.col("x_right")).sum().alias("d"))
        .join(norm[0], on="r")
        .join(norm[1], on="r")
    )
    out = np.zeros(n, dtype=np.float32)
    out[d["r"].to_numpy()] = (d["d"] / (d["n0"] * d["n1"])).to_numpy()
    return np.clip(out, 0, 1)


def _compute(df: pd.DataFrame) -> pd.DataFrame:
    """Features for ``df`` (no cache)."""
    p_txt, a_txt, b_txt = _joined(df["prompt"]), _joined(df["response_a"]), _joined(df["response_b"])
    P, A, B = _side_frame(p_txt), _side_frame(a_txt), _side_frame(b_txt)
    n = len(df)
    bp, ba, bb = _bag(p_txt), _bag(a_txt), _bag(b_txt)
    sim = {"a": _cosine(ba, bp, n), "b": _cosine(bb, bp, n)}
    out: dict[str, np.ndarray] = {}
    for s, S in (("a", A), ("b", B)):
        for c in [*PAIR_COUNTS, *FLAG_PATTERNS, "empty"]:
            out[f"{s}_{c}"] = S[c].to_numpy()
        for c, v in _ratios(S, P, sim[s]).items():
            out[f"{s}_{c}"] = v
    for c in [*PAIR_COUNTS, *RATIOS]:
        out[f"diff_{c}"] = out[f"a_{c}"] - out[f"b_{c}"]
    for c in PAIR_COUNTS:
        out[f"lr_{c}"] = np.log1p(out[f"a_{c}"]) - np.log1p(out[f"b_{c}"])
    for c in PROMPT_COUNTS:
        out[f"p_{c}"] = P[c].to_numpy()
    out["turns"] = df["prompt"].map(len).to_numpy()
    out["sim_ab"] = _cosine(ba, bb, n)
    out["identical"] = np.asarray(a_txt, dtype=object) == np.asarray(b_txt, dtype=object)
    out["n_empty"] = out["a_empty"] + out["b_empty"]
    out["sum_log_chars"] = np.log1p(out["a_chars"]) + np.log1p(out["b_chars"])
    out["abs_lr_chars"] = np.abs(out["lr_chars"])
    out["abs_lr_words"] = np.abs(out["lr_words"])
    out["abs_diff_sim_prompt"] = np.abs(out["diff_sim_prompt"])
    frame = pd.DataFrame({n: np.asarray(out[n], dtype=np.float32) for n in FEATURE_NAMES})
    return frame


def _ratios(S: pd.DataFrame, P: pd.DataFrame, sim_prompt: np.ndarray) -> dict[str, np.ndarray]:
    chars, words = S["chars"].to_numpy(), S["words"].to_numpy()
    c1, w1 = np.maximum(chars, 1), np.maximum(words, 1)
    markdown = S["headers"] + S["bold"] + S["bullets"] + S["numbered"] + S["table_rows"] + S["code_fences"]
    return {
        "chars_per_word": chars / w1,
        "words_per_sentence": words / np.maximum(S["sentences"].to_numpy(), 1),
        "lexical_diversity": S["unique_words"].to_numpy() / w1,
        "punct_rate": S["punct"].to_numpy() / c1,
        "digit_rate": S["digits"].to_numpy() / c1,
        "upper_rate": S["upper"].to_numpy() / c1,
        "newline_rate": S["lines"].to_numpy() / c1 * 100,
        "non_ascii_rate": S["non_ascii"].to_numpy() / c1,
        "markdown_rate": markdown.to_numpy() / np.maximum(S["lines"].to_numpy() + 1, 1),
        "len_vs_prompt": np.log1p(chars) - np.log1p(P["chars"].to_numpy()),
        "sim_prompt": sim_prompt,
    }


# ---------------------------------------------------------------------------------------- caching


def spec_hash() -> str:
    """Changes whenever the feature definitions change (invalidates the whole cache)."""
    spec = repr((FEATURE_VERSION, COUNT_PATTERNS, FLAG_PATTERNS, FEATURE_NAMES))
    return hashlib.sha1(spec.encode()).hexdigest()[:12]


def row_hashes(df: pd.DataFrame) -> np.ndarray:
    """One 16-hex-digit hash per row of its prompt and both responses (all turns)."""
    out = []
    for p, a, b in zip(df["prompt"], df["response_a"], df["response_b"]):
        h = hashlib.blake2b(digest_size=8)
        for turns in (p, a, b):
            h.update("\x1e".join(turns).encode("utf-8", "surrogatepass"))
            h.update(b"\x1f\x1f")
        out.append(h.hexdigest())
    return np.asarray(out, dtype=object)


def log_cache_use(what: str, missing: np.ndarray, cache: Path, t0: float) -> None:
    """One log line: how many rows came from the cache and how many were computed."""
    hits, misses = int((~missing).sum()), int(missing.sum())
    log.info("%s: %d rows, %d from cache %s (hit), %d computed (miss), %.1fs", what, len(missing), hits, cache,
             misses, time.time() - t0)  # fmt: skip


def default_cache_dir() -> Path:
    return Path(os.environ.get("LMSYS_CACHE", "cache")) / "features"


def _read_cache(cache: Path, wanted: set[str]) -> pd.DataFrame:
    parts = []
    for shard in sorted(cache.glob("*.parquet")):
        hashes = pd.read_parquet(shard, columns=["row_hash"])["row_hash"]
        if hashes.isin(wanted).any():
            part = pd.read_parquet(shard)
            parts.append(part[part["row_hash"].isin(wanted)])
    if not parts:
        return pd.DataFrame(columns=["row_hash", *FEATURE_NAMES])
    return pd.concat(parts, ignore_index=True).drop_duplicates("row_hash")


def build_features(
    df: pd.DataFrame, *, cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = True
) -> pd.DataFrame:
    """The :data:`FEATURE_NAMES` frame for ``df`` (row-aligned, index 0..n-1), using the cache.

    Rows whose texts were seen before (same :func:`spec_hash`) are read back; the others are
    computed in chunks with a progress bar and written as one new shard (atomically).
    """
    from lmsys_arena.io import write_parquet

    t0 = time.time()
    keys = row_hashes(df)
    if not use_cache:
        return _compute_chunked(df, progress)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache / spec_hash()
    known = _read_cache(cache, set(keys)) if cache.exists() else pd.DataFrame(columns=["row_hash"])
    missing = ~pd.Series(keys).isin(set(known["row_hash"])).to_numpy()
    if missing.any():
        todo = df[missing].reset_index(drop=True)
        new = _compute_chunked(todo, progress)
        new.insert(0, "row_hash", keys[missing])
        new = new.drop_duplicates("row_hash")
        shard = hashlib.sha1("".join(sorted(new["row_hash"])).encode()).hexdigest()[:16]
        write_parquet(cache / f"{shard}.parquet", new)
        known = pd.concat([known, new], ignore_index=True) if len(known) else new
    log_cache_use("features", missing, cache, t0)
    X = known.set_index("row_hash").loc[keys, FEATURE_NAMES].to_numpy(np.float32)
    return pd.DataFrame(X, columns=FEATURE_NAMES)  # one block: callers add columns


def _compute_chunked(df: pd.DataFrame, progress: bool) -> pd.DataFrame:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(df), unit="rows", desc="features", disable=not progress or len(df) == 0, mininterval=2) as bar:
        for start in range(0, len(df), CHUNK_ROWS):
            chunk = df.iloc[start : start + CHUNK_ROWS]
            parts.append(_compute(chunk))
            bar.update(len(chunk))
    if not parts:
        return pd.DataFrame({n: np.zeros(0, dtype=np.float32) for n in FEATURE_NAMES})
    return pd.concat(parts, ignore_index=True)
