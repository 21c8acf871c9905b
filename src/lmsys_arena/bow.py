"""Hashed bag-of-words vectors of the two responses (word 1-2-grams), for the GBDT's text score.

Stateless (a murmurhash HashingVectorizer, stable across versions), cached per row like the features
(``cache/features/bow-<spec-hash>/``, keyed by :func:`features.row_hashes`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.features import CHUNK_ROWS, FEATURE_VERSION, _joined, default_cache_dir, log_cache_use, row_hashes

log = logging.getLogger(__name__)

BOW_FEATURES = 2**18


def bow_spec_hash() -> str:
    return hashlib.sha1(repr(("bow", FEATURE_VERSION, BOW_FEATURES, "word1-2 log1p l2")).encode()).hexdigest()[:12]


def _bow(texts: list[str]):
    """Stateless hashed word 1-2-gram vectors (murmurhash, stable across versions), log1p counts, L2 rows."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.preprocessing import normalize

    hv = HashingVectorizer(
        n_features=BOW_FEATURES,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm=None,
        token_pattern=r"(?u)\b\w+\b",
        dtype=np.float32,
    )
    m = hv.transform(texts)
    m.data = np.log1p(m.data)
    return normalize(m).astype(np.float32).tocsr()


def _csr_to_arrow(m):
    import pyarrow as pa

    return (
        pa.ListArray.from_arrays(pa.array(m.indptr.astype(np.int32)), pa.array(m.indices.astype(np.int32))),
        pa.ListArray.from_arrays(pa.array(m.indptr.astype(np.int32)), pa.array(m.data.astype(np.float32))),
    )


def _arrow_to_csr(idx, val, n_rows: int):
    import scipy.sparse as sp

    idx, val = idx.combine_chunks(), val.combine_chunks()
    off = idx.offsets.to_numpy()
    cols = idx.values.to_numpy()[off[0] : off[-1]]
    data = val.values.to_numpy()[off[0] : off[-1]]
    return sp.csr_matrix((data, cols, off - off[0]), shape=(n_rows, BOW_FEATURES))


def build_bow(df: pd.DataFrame, *, cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = True):
    """Hashed bag-of-words matrices (A, B) of the responses, row-aligned with ``df``; cached per row
    like :func:`build_features` (``cache/features/bow-<spec>/``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from tqdm.auto import tqdm

    from lmsys_arena.io import atomic_path

    t0 = time.time()
    keys = row_hashes(df)
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"bow-{bow_spec_hash()}"
    tables = []
    if use_cache and cache.exists():
        wanted = pa.array(sorted(set(keys)))
        for shard in sorted(cache.glob("*.parquet")):
            t = pq.read_table(shard)
            t = t.filter(pc.is_in(t["row_hash"], value_set=wanted))
            if t.num_rows:
                tables.append(t)
    have = set().union(*(t["row_hash"].to_pylist() for t in tables)) if tables else set()
    missing = np.array([k not in have for k in keys], dtype=bool)
    if missing.any():
        todo = df[missing]
        parts = {"a": [], "b": []}
        with tqdm(total=len(todo), unit="rows", desc="bag of words", disable=not progress, mininterval=2) as bar:
            for start in range(0, len(todo), CHUNK_ROWS):
                chunk = todo.iloc[start : start + CHUNK_ROWS]
                parts["a"].append(_bow(_joined(chunk["response_a"])))
                parts["b"].append(_bow(_joined(chunk["response_b"])))
                bar.update(len(chunk))
        a_idx, a_val = _csr_to_arrow(sp.vstack(parts["a"]).tocsr())
        b_idx, b_val = _csr_to_arrow(sp.vstack(parts["b"]).tocsr())
        new = pa.table(
            {"row_hash": pa.array(list(keys[missing])), "a_idx": a_idx, "a_val": a_val, "b_idx": b_idx, "b_val": b_val}
        )
        if use_cache:
            shard = hashlib.sha1("".join(sorted(keys[missing])).encode()).hexdigest()[:16]
            cache.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache / f"{shard}.parquet") as tmp:
                pq.write_table(new, tmp)
        tables.append(new)
    table = pa.concat_tables(tables)
    n = table.num_rows
    A = _arrow_to_csr(table["a_idx"], table["a_val"], n)
    B = _arrow_to_csr(table["b_idx"], table["b_val"], n)
    pos = pd.Series(np.arange(n), index=table["row_hash"].to_pylist())
    pos = pos[~pos.index.duplicated()].loc[keys].to_numpy()
    log_cache_use("bag of words", missing, cache, t0)
    return A[pos], B[pos]
