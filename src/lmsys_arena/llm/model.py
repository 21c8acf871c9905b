"""The trainable model on a backbone (:mod:`lmsys_arena.llm.backbones`): heads, LoRA, compilation,
and the fold's saved adapter + head.

* heads: the backbone's decoder (``AutoModel``, no LM head) plus an MLP head on the hidden state of
  the last real token, found from the attention mask so left and right padding give the same result
  (position ids are derived from the mask too); an optional :class:`AuxHead` on side inputs;
  ``model.head.init: verdict`` starts a one-layer head from the LM head's rows of the verdict tokens
  (:func:`verdict_rows`, with the backbone's final logit soft-cap: :class:`SoftCap`), so that the untrained
  model's logits are the LM's next-token logits of A, B and C at the last token;
* LoRA / QLoRA / PiSSA adapters (peft) for training, merged for inference;
* regional ``torch.compile`` of the decoder layers (``model.compile``);
* ``fold_dir/adapter/`` (peft), ``head.pt`` and ``llm_meta.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmsys_arena.llm.backbones import atomic_dir, hidden_size_of, load_backbone
from lmsys_arena.llm.config import ModelConfig

log = logging.getLogger(__name__)

HEAD_FILE = "head.pt"
ADAPTER_DIR = "adapter"
META_FILE = "llm_meta.json"


# ---------------------------------------------------------------- heads


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token, for left or right padding alike."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    idx = (pos * mask.long()).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


class SoftCap(nn.Module):
    """``cap * tanh(x / cap)``: Gemma-2's final logit soft-capping (``final_logit_softcapping``), which its LM
    head applies after the output embedding; a verdict-initialised head ends with it (no parameters)."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = float(cap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.cap) * self.cap

    def extra_repr(self) -> str:
        return f"cap={self.cap:g}"


def make_head(
    hidden_size: int,
    layers: int = 1,
    hidden: int = 0,
    dropout: float = 0.0,
    norm: bool = True,
    init: str = "zero",
    softcap: float | None = None,
) -> nn.Sequential:
    """Optional LayerNorm (decoder hidden states are large: Gemma-3's pooled norm is ~100), then
    ``layers`` Linear layers (GELU + dropout between): 1 = a linear probe, 3 = a 3-layer MLP.
    The last layer starts at zero, so training starts from uniform predictions (loss ln 3); ``init:
    verdict`` heads get their start from :func:`init_verdict` once built. ``softcap``: a :class:`SoftCap`
    after the last layer (the verdict head of a backbone that soft-caps its LM logits)."""
    width = hidden or hidden_size
    mods: list[nn.Module] = [nn.LayerNorm(hidden_size)] if norm else []
    mods += [nn.Dropout(dropout)] if dropout else []
    d = hidden_size
    for _ in range(layers - 1):
        mods += [nn.Linear(d, width), nn.GELU()] + ([nn.Dropout(dropout)] if dropout else [])
        d = width
    last = nn.Linear(d, 3)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    mods.append(last)
    if softcap:
        mods.append(SoftCap(softcap))
    return nn.Sequential(*mods)


def head_softcap(backbone: nn.Module, init: str) -> float | None:
    """The soft-cap a head of ``model.head.init`` ends with: the backbone's ``final_logit_softcapping``
    (Gemma-2: 30) for a verdict head, none otherwise (Gemma-3, Llama, Qwen have none)."""
    if init != "verdict":
        return None
    cfg = backbone.config
    return getattr(getattr(cfg, "text_config", None) or cfg, "final_logit_softcapping", None) or None


def output_embedding(backbone: nn.Module, path: Path | str | None = None) -> torch.Tensor:
    """The LM head's weight ``(vocab, hidden)`` of the decoder ``backbone`` (an ``AutoModel``, no LM head):
    its input embedding when the weights are tied (Gemma, Qwen2.5 up to 3B), else ``lm_head.weight`` read
    from the safetensors files of ``path`` (default: the folder the backbone was loaded from)."""
    cfg = backbone.config
    tied = getattr(cfg, "tie_word_embeddings", None)
    if tied is None:
        tied = getattr(getattr(cfg, "text_config", None), "tie_word_embeddings", True)
    if tied:
        return backbone.get_input_embeddings().weight
    from safetensors import safe_open

    folder = Path(path or getattr(backbone, "name_or_path", "") or ".")
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            key = next((k for k in st.keys() if k == "lm_head.weight" or k.endswith(".lm_head.weight")), None)
            if key is not None:
                return st.get_tensor(key)
    raise ValueError(
        f"{folder}: the backbone's output embedding is not tied to its input embedding and no lm_head.weight is "
        "in its *.safetensors files: model.head.init: verdict and zero_shot need the LM head"
    )


def verdict_rows(backbone: nn.Module, tokenizer, path: Path | str | None = None) -> torch.Tensor:
    """The LM head's rows of the verdict tokens (A wins, B wins, tie: ``format.VERDICT_TOKENS``), ``(3, hidden)``
    float32 on the CPU."""
    from lmsys_arena.llm.format import verdict_token_ids

    ids = torch.as_tensor(verdict_token_ids(tokenizer))
    weight = output_embedding(backbone, path)
    return weight.detach()[ids.to(weight.device)].float().cpu()


def init_verdict(head: nn.Sequential, rows: torch.Tensor) -> None:
    """Start a one-layer head from ``rows`` (:func:`verdict_rows`), bias zero: on the pooled final-norm state
    its logits are then the LM's next-token logits of the verdict tokens (soft-capped as the LM caps them)."""
    linears = [m for m in head if isinstance(m, nn.Linear)]
    if len(linears) != 1 or any(isinstance(m, nn.LayerNorm) for m in head):
        raise ValueError("model.head.init: verdict needs model.head.layers: 1 and model.head.norm: false")
    with torch.no_grad():
        linears[0].weight.copy_(rows.to(linears[0].weight))
        linears[0].bias.zero_()


class AuxHead(nn.Module):
    """Side inputs added to the text head's logits (a product of experts, in fp32).

    Its input row is ``[battle features (n_features), is_extra]`` (``llm.family.aux_matrix``):

    * features: ``sign(x) * log1p(|x|)`` of hand-built battle features (lengths, markdown, refusals,
      ... from :mod:`lmsys_arena.features`), standardised with the fold's training statistics
      (buffers, saved with the head), clipped to +-5, through a small MLP whose last layer starts
      at zero. The text model cannot see how long a response truncated at ``max_len`` was; this can.
    * ``source_bias``: a learned logit offset for external train-only rows (``EXTRA=``, other class
      balance, e.g. 22% ties vs 3%), so they do not move the predicted priors of competition rows
      (validation and test rows have ``is_extra = 0``).
    * ``source_input``: ``is_extra`` is also an input of the MLP, so how the features map to the labels
      may differ between the sources (as the GBDT's ``is_extra`` feature lets its trees do), e.g. when
      ties follow a length rule in one source and not in the other.
    """

    def __init__(
        self,
        n_features: int,
        hidden: int = 64,
        dropout: float = 0.0,
        source_bias: bool = False,
        source_input: bool = False,
    ):
        super().__init__()
        self.n_features = n_features
        self.source_input = bool(source_input and n_features)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = None
        if n_features:
            last = nn.Linear(hidden, 3)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.net = nn.Sequential(
                nn.Linear(n_features + self.source_input, hidden),
                nn.GELU(),
                *([nn.Dropout(dropout)] if dropout else []),
                last,
            )
        self.source = nn.Parameter(torch.zeros(3)) if source_bias else None

    def set_stats(self, rows: torch.Tensor) -> None:
        """Standardisation from training rows ``(n, n_features + 1)`` (both A/B orders: symmetric)."""
        x = rows[:, : self.n_features].double()
        self.mean.copy_(x.mean(0).float())
        self.std.copy_(x.std(0).clamp_min(1e-6).float() if len(x) > 1 else torch.ones(self.n_features))

    def set_source_prior(self, labels, extra) -> None:
        """Start ``source_bias`` at the log ratio of the two sources' label priors (training rows; A and B
        pooled, as random swaps make them equal). Adam moves a bias by about its lr per step, so from zero
        it could not reach the ~2 logits between 3% and 22% ties within one fold's schedule."""
        if self.source is None:
            return
        labels, extra = np.asarray(labels), np.asarray(extra, dtype=bool)
        if extra.all() or not extra.any():
            return

        def log_prior(y):
            tie = (np.sum(y == 2) + 1) / (len(y) + 2)  # add-one smoothing
            return np.log([(1 - tie) / 2, (1 - tie) / 2, tie])

        with torch.no_grad():
            prior = log_prior(labels[extra]) - log_prior(labels[~extra])
            self.source.copy_(torch.as_tensor(prior, dtype=torch.float32))

    def forward(self, aux: torch.Tensor) -> torch.Tensor:
        aux = aux.float()
        out = torch.zeros(aux.shape[0], 3, device=aux.device)
        if self.net is not None:
            x = ((aux[:, : self.n_features] - self.mean) / self.std).clamp(-5, 5)
            if self.source_input:
                x = torch.cat([x, aux[:, self.n_features : self.n_features + 1]], 1)
            out = out + self.net(x)
        if self.source is not None:
            out = out + aux[:, self.n_features : self.n_features + 1] * self.source
        return out


class PreferenceModel(nn.Module):
    """Decoder backbone -> last real token -> MLP head -> 3 logits (A, B, tie), plus the optional
    AuxHead's logits from side inputs; heads run in fp32."""

    def __init__(self, backbone: nn.Module, head: nn.Module, aux: AuxHead | None = None):
        super().__init__()
        self.backbone, self.head, self.aux = backbone, head, aux

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        right_padded: bool = False,
        aux: torch.Tensor | None = None,
        with_text: bool = False,
    ):
        """``right_padded=True`` (what ``batching.collate`` makes): padding only at the ends, so causal
        attention alone keeps it away from real tokens. The backbone then gets no padding mask and
        sdpa can take its flash kernel (is_causal) instead of a masked one; the logits are the same.
        ``with_text=True``: returns ``(logits, text head's logits)`` (``train.text_loss``)."""
        if right_padded:
            out = self.backbone(input_ids=input_ids, use_cache=False)
        else:
            out = self.backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids(attention_mask),
                use_cache=False,
            )
        pooled = last_token_pool(out.last_hidden_state, attention_mask)
        text = logits = self.head(pooled.float())
        if self.aux is not None:
            if aux is None:
                raise ValueError("this model has an aux head (model.aux): pass the aux rows")
            logits = text + self.aux(aux)
        return (logits, text) if with_text else logits


def make_aux(mcfg: ModelConfig) -> AuxHead | None:
    if not mcfg.uses_aux:
        return None
    a = mcfg.aux
    return AuxHead(len(mcfg.aux_features), a.hidden or 64, a.dropout, a.source_bias, a.source_input)


# ---------------------------------------------------------------- LoRA


def lora_config(lcfg, inference: bool = False):
    from peft import LoraConfig

    return LoraConfig(
        r=lcfg.r,
        lora_alpha=lcfg.alpha,
        lora_dropout=lcfg.dropout,
        target_modules=lcfg.target_modules,
        layers_to_transform=lcfg.layers,
        init_lora_weights=lcfg.init,
        use_rslora=lcfg.rslora,
        bias="none",
        inference_mode=inference,
    )


def build_model(path: Path, mcfg: ModelConfig, device: torch.device, seed: int) -> PreferenceModel:
    """Backbone with fresh LoRA adapters (trainable) and a fresh head, for training."""
    torch.manual_seed(seed)
    return for_training(load_backbone(path, mcfg, device), mcfg, device, path=path)


def for_training(
    backbone: nn.Module, mcfg: ModelConfig, device: torch.device, path: Path | None = None
) -> PreferenceModel:
    """Loaded backbone -> (k-bit prep / gradient checkpointing) + LoRA + head (+ compiled layers).
    ``path``: the backbone's folder (its tokenizer and LM head for ``model.head.init: verdict``; default:
    the folder it was loaded from)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    rows = None
    if mcfg.head.init == "verdict":  # read before peft wraps the backbone
        from lmsys_arena.llm.backbones import load_tokenizer

        path = Path(path or backbone.name_or_path)
        rows = verdict_rows(backbone, load_tokenizer(path), path)
    softcap = head_softcap(backbone, mcfg.head.init)
    if mcfg.quant:
        backbone = prepare_model_for_kbit_training(
            backbone, use_gradient_checkpointing=mcfg.grad_ckpt, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    elif mcfg.grad_ckpt:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    backbone = get_peft_model(backbone, lora_config(mcfg.lora))
    lora_input_cast(backbone, False)
    head = make_head(hidden_size_of(backbone), **dataclasses.asdict(mcfg.head), softcap=softcap)
    if rows is not None:
        init_verdict(head, rows)
    head = head.to(device)
    aux = make_aux(mcfg)
    model = PreferenceModel(backbone, head, aux.to(device) if aux is not None else None)
    mode = compile_mode(mcfg.compile, device, training=True)
    if mode:
        compile_layers(model, cudagraphs=mode == "cudagraphs")
    return model


def lora_input_cast(backbone: nn.Module, enabled: bool) -> int:
    """peft casts each LoRA layer's input to the adapter dtype (fp32) before ``lora_A``; under autocast
    the matmul casts it straight back to bf16/fp16, so the cast is a wasted full pass over the
    activations (x5 modules x layers, forward and backward) with the same result. Off by default."""
    n = 0
    for m in backbone.modules():
        if hasattr(m, "lora_A") and hasattr(m, "base_layer"):
            m.cast_input_dtype_enabled = enabled
            n += 1
    return n


# ---------------------------------------------------------------- compilation


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated decoder blocks (the largest ``nn.ModuleList`` of the model)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no decoder layer list found to compile")
    return list(max(lists, key=len))


def compile_mode(compile: bool | str, device: torch.device, training: bool) -> str | None:
    """What ``model.compile`` means here: None (eager), "plain" (regional compile, dynamic shapes) or
    "cudagraphs". CUDA graphs are a GPU training mode: CPU runs stay eager, and scoring (batch shapes
    vary) compiles plainly on a GPU whatever the training used."""
    if not compile:
        return None
    if compile == "cudagraphs":
        if device.type != "cuda":
            return None
        return "cudagraphs" if training else "plain"
    return "plain"


def compile_layers(model: nn.Module, cudagraphs: bool = False) -> int:
    """Regional compilation: ``torch.compile`` each decoder layer in place (one compiled graph per
    layer kind, reused by all layers, dynamic batch/sequence sizes). Fuses Gemma's fp32 RMSNorms,
    residual adds, rotary embedding and GELU*up into a few kernels; matmuls and attention stay on
    cuBLAS / flash. Compiles on the first batches (tens of seconds), then runs at full speed.
    ``cudagraphs``: mode reduce-overhead, static shapes, each layer call replays a CUDA graph recorded
    once per input shape (one launch instead of hundreds: steps of small models stop being host-bound);
    every distinct shape compiles anew, so pad to one length (train.pad_multiple = format.max_len)."""
    import torch._dynamo

    layers = decoder_layers(model)
    cfg = torch._dynamo.config  # layer kinds x train/eval x a few shape specialisations; never fall back to eager
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
    mode = "reduce-overhead" if cudagraphs and torch.cuda.is_available() else None
    for layer in layers:  # CUDA-graph trees crash in backward with dynamic shapes (pytorch#105169): static there
        layer.compile(dynamic=mode is None, mode=mode)
    model.cudagraphs = mode is not None  # read by train.Trainer: marks each forward pass as a new step
    log.info(
        "torch.compile: %d decoder layers (%s), dynamic shapes%s",
        len(layers),
        type(layers[0]).__name__,
        ", CUDA graphs" if mode else "",
    )
    return len(layers)


# ---------------------------------------------------------------- a trained fold


def save_trained(
    model: PreferenceModel, fold_dir: Path, pissa_init: Path | None = None, full: dict[str, torch.Tensor] | None = None
) -> None:
    """Adapter (peft folder) + head state dict into ``fold_dir``. PiSSA adapters are converted to
    plain LoRA against the original backbone so inference needs only the stock weights. ``full``:
    the trainable weights gathered from a sharded (FSDP) model (``fsdp.full_state``), written instead
    of the model's own (sharded) ones."""
    from lmsys_arena.io import atomic_path

    with atomic_dir(fold_dir / ADAPTER_DIR) as tmp:
        if full is None:
            kw = {"path_initial_model_for_weight_conversion": str(pissa_init)} if pissa_init else {}
            model.backbone.save_pretrained(tmp, **kw)
        else:  # (fsdp.shard_fsdp refuses PiSSA before training)
            from peft import get_peft_model_state_dict
            from safetensors.torch import save_file

            sd = {k[len("backbone.") :]: v for k, v in full.items() if k.startswith("backbone.")}
            save_file(
                {k: v.contiguous() for k, v in get_peft_model_state_dict(model.backbone, state_dict=sd).items()},
                str(Path(tmp) / "adapter_model.safetensors"),
                metadata={"format": "pt"},
            )
            model.backbone.peft_config["default"].save_pretrained(tmp)
    full = full or {}
    state = {k: full.get(f"head.{k}", v).detach().cpu() for k, v in model.head.state_dict().items()}
    if model.aux is not None:
        state.update({f"aux.{k}": full.get(f"aux.{k}", v).detach().cpu() for k, v in model.aux.state_dict().items()})
    with atomic_path(fold_dir / HEAD_FILE) as tmp:
        torch.save(state, tmp)


MERGED_MARKER = "merged_adapter.json"  # in a backbone folder with an adapter merged in (llm.export.export_merged)


def merged_backbone(fold_dir: Path) -> bool:
    """Whether ``fold_dir`` is an export: no ``adapter/``, its adapter merged into its own backbone."""
    fold_dir = Path(fold_dir)
    return not (fold_dir / ADAPTER_DIR).exists() and bool((read_meta(fold_dir) or {}).get("merged_backbone"))


def _load_merged_backbone(path: Path, fold_dir: Path, mcfg: ModelConfig, device: torch.device) -> nn.Module:
    """The exported backbone (no peft); refuses a backbone folder that is not an export (the stock weights
    would silently score without the adapter)."""
    if not (Path(path) / MERGED_MARKER).exists():
        meta = read_meta(fold_dir) or {}
        raise ValueError(
            f"{fold_dir} has its adapter merged into the backbone {meta.get('backbone_dir')}, but the backbone "
            f"given is {path} (no {MERGED_MARKER}: not an export); set backbone to the exported folder"
        )
    return load_backbone(path, mcfg, device)


def load_trained(path: Path, mcfg: ModelConfig, fold_dir: Path, device: torch.device) -> PreferenceModel:
    """Backbone + the fold's adapter (merged when the weights are not quantised) + head, eval mode.
    An export (``llm_meta.json`` ``merged_backbone: true``, no ``adapter/``): ``path`` is the exported
    backbone, loaded as it is, with no peft (quantised at load time if ``mcfg.quant``)."""
    fold_dir = Path(fold_dir)
    if merged_backbone(fold_dir):
        backbone = _load_merged_backbone(path, fold_dir, mcfg, device)
    else:
        from peft import PeftModel

        backbone = load_backbone(path, mcfg, device)
        backbone = PeftModel.from_pretrained(backbone, fold_dir / ADAPTER_DIR, is_trainable=False)
        if not mcfg.quant:
            backbone = backbone.merge_and_unload()
        lora_input_cast(backbone, False)
    head = make_head(
        hidden_size_of(backbone), **dataclasses.asdict(mcfg.head), softcap=head_softcap(backbone, mcfg.head.init)
    )
    state = torch.load(fold_dir / HEAD_FILE, map_location="cpu", weights_only=True)
    head.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux.")})
    aux = make_aux(mcfg)
    if aux is not None:
        aux.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("aux.")})
        aux = aux.to(device)
    model = PreferenceModel(backbone, head.to(device), aux)
    if compile_mode(mcfg.compile, device, training=False):
        compile_layers(model)
    return model.eval()


def describe(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train / 1e6:.2f}M trainable / {total / 1e6:.1f}M parameters"


def write_meta(fold_dir: Path, meta: dict) -> None:
    from lmsys_arena.io import write_json

    write_json(fold_dir / META_FILE, meta)


def read_meta(fold_dir: Path) -> dict | None:
    """The fold's ``llm_meta.json`` (None where it has none)."""
    path = Path(fold_dir) / META_FILE
    return json.loads(path.read_text()) if path.exists() else None
