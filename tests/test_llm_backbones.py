"""Other decoder families than the default Gemma-2 load from a local Hugging Face folder and run the
whole fold (train -> OOF -> reload -> predict): tiny random-init Llama (no pad token: the EOS stands
in), Qwen2 (with a chat template: the battle is wrapped in it) and Gemma-3 (text), built in code.

    .venv/bin/python -m pytest tests/test_llm_backbones.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmsys_arena.config import load_config
from lmsys_arena.data import Competition
from lmsys_arena.llm.backbones import load_tokenizer, tiny_tokenizer
from lmsys_arena.llm.batching import collate
from lmsys_arena.llm.config import FormatConfig
from lmsys_arena.llm.format import BattleEncoder
from lmsys_arena.llm.heads import make_head
from lmsys_arena.llm.model import PreferenceModel
from lmsys_arena.metrics import softmax
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runner import train_run

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FAMILIES = ["llama", "qwen2", "gemma3"]


def _config(family: str, vocab: int):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    kw = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    if family == "gemma3":
        return Gemma3TextConfig(**kw, sliding_window=512, query_pre_attn_scalar=16)
    return {"llama": LlamaConfig, "qwen2": Qwen2Config}[family](**kw)


def _backbone_folder(root: Path, family: str) -> Path:
    from transformers import AutoModel

    out = root / f"tiny-{family}"
    tok = tiny_tokenizer()
    if family == "llama":
        tok.pad_token = None  # many base models ship without one
    if family == "qwen2":
        tok.chat_template = CHATML
    torch.manual_seed(0)
    AutoModel.from_config(_config(family, len(tiny_tokenizer()))).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_competition):
    """60 real sample rows in 2 folds, and one backbone folder per family."""
    root = tmp_path_factory.mktemp("backbones")
    d, folds = small_competition(root, 60)
    return {
        "spec": RunSpec(data=str(d), folds_file=str(folds), seed=42),
        "folders": {f: _backbone_folder(root, f) for f in FAMILIES},
    }


def test_tokenizer_fallbacks(setup):
    llama = load_tokenizer(setup["folders"]["llama"])
    assert llama.pad_token == llama.eos_token == "<eos>"
    qwen = load_tokenizer(setup["folders"]["qwen2"])
    ids = BattleEncoder(qwen, FormatConfig(max_len=256)).encode(
        pd.DataFrame({"id": ["x"], "prompt": [["hi?"]], "response_a": [["hello"]], "response_b": [["hey"]]}), both=False
    )[0]
    text = qwen.decode(ids)
    assert text.startswith("<bos><|im_start|>user\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("family", FAMILIES)
def test_pooled_logits_equal_under_left_and_right_padding(setup, family):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = PreferenceModel(
        AutoModel.from_pretrained(setup["folders"][family], attn_implementation="sdpa"),
        make_head(64, layers=2, hidden=32),
    ).eval()
    torch.nn.init.normal_(model.head[-1].weight)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(10, 260, size=n).astype(np.int32) for n in (7, 23, 15, 3)]
    with torch.no_grad():
        right, left = model(*collate(seqs, 0, "right")), model(*collate(seqs, 0, "left"))
        alone = torch.cat([model(*collate([s], 0)) for s in seqs])
    torch.testing.assert_close(right, left, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_fold_trains_and_the_reloaded_adapter_reproduces_the_oof(setup, family, workdir):
    from lmsys_arena.llm import family as llm

    c = load_config(
        "tiny",
        {
            "backbone": str(setup["folders"][family]),
            "format.max_len": 384,
            "train.batch_size": 16,
            "train.micro_batch": 8,
            "model.lora.target_modules": "all-linear",
            "model.aux.features": None,
            "model.aux.source_bias": False,
        },
    )
    m = train_run(c, f"runs/{family}", setup["spec"], only_folds=[0])
    oof = pd.read_parquet(f"runs/{family}/oof.parquet")
    assert np.isfinite(oof[PROB_COLS].to_numpy()).all() and 0 < m["oof_logloss"] < 2
    assert (workdir / f"runs/{family}/fold0/adapter/adapter_config.json").exists()
    va = Competition(Path(setup["spec"].data)).train().set_index("id").loc[oof["id"]].reset_index()
    again = softmax(llm.predict(c, va, workdir / f"runs/{family}/fold0"))
    np.testing.assert_allclose(again, oof[PROB_COLS].to_numpy(), atol=1e-5)
