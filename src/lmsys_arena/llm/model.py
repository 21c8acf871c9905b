"""The trainable model on a backbone (:mod:`lmsys_arena.llm.backbones`): :class:`PreferenceModel` and its
LoRA setup for training.

* the backbone's decoder (``AutoModel``, no LM head) plus the heads of :mod:`lmsys_arena.llm.heads` on the
  hidden state of the last real token, found from the attention mask so left and right padding give the same
  result (position ids are derived from the mask too);
* LoRA / QLoRA / PiSSA adapters (peft) for training (:func:`for_training`), with the decoder layers compiled
  by :mod:`lmsys_arena.llm.compile` (``model.compile``);
* a trained fold's files (adapter merged for inference, heads) are :mod:`lmsys_arena.llm.trained`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from lmsys_arena.llm.backbones import hidden_size_of, load_backbone
from lmsys_arena.llm.compile import compile_layers, compile_mode
from lmsys_arena.llm.config import ModelConfig
from lmsys_arena.llm.heads import AuxHead, head_softcap, init_verdict, make_aux, make_head, verdict_rows

# ---------------------------------------------------------------- the model


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token, for left or right padding alike."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    idx = (pos * mask.long()).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


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
    rows = None
    if mcfg.head.init == "verdict":  # read before peft wraps the backbone
        from lmsys_arena.llm.backbones import load_tokenizer

        path = Path(path or backbone.name_or_path)
        rows = verdict_rows(backbone, load_tokenizer(path), path)
    softcap = head_softcap(backbone, mcfg.head.init)
    backbone = with_lora(backbone, mcfg)
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


def with_lora(backbone: nn.Module, mcfg: ModelConfig) -> nn.Module:
    """The backbone prepared for training (k-bit prep for quantised weights, else gradient checkpointing
    where ``model.grad_ckpt``) and wrapped by peft with fresh trainable adapters of ``model.lora``."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if mcfg.quant:
        backbone = prepare_model_for_kbit_training(
            backbone, use_gradient_checkpointing=mcfg.grad_ckpt, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    elif mcfg.grad_ckpt:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    backbone = get_peft_model(backbone, lora_config(mcfg.lora))
    lora_input_cast(backbone, False)
    return backbone


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


def describe(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train / 1e6:.2f}M trainable / {total / 1e6:.1f}M parameters"
