"""The heads on a backbone's pooled hidden state (:class:`lmsys_arena.llm.model.PreferenceModel` runs them).

* the text head (:func:`make_head`): an MLP from the last real token's hidden state to 3 logits (A, B, tie);
  ``model.head.init: verdict`` starts a one-layer head from the LM head's rows of the verdict tokens
  (:func:`verdict_rows`, :func:`init_verdict`), with the backbone's final logit soft-cap (:class:`SoftCap`), so
  that the untrained model's logits are the LM's next-token logits of A, B and C at the last token;
* the aux head (:class:`AuxHead`, ``model.aux``): side inputs (battle features, the row's source) whose
  logits are added to the text head's;
* :class:`MeanOf`: several fold heads read as one (a merged run that keeps its folds' heads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmsys_arena.llm.config import ModelConfig

# ---------------------------------------------------------------- the text head


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


# ---------------------------------------------------------------- the aux head


class AuxHead(nn.Module):
    """Side inputs added to the text head's logits (a product of experts, in fp32).

    Its input row is ``[battle features (n_features), is_extra]`` (``llm.side_inputs.aux_matrix``):

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


class MeanOf(nn.Module):
    """The mean of its members' outputs. A merged run keeps every fold's text head and aux head
    (``make merge HEADS=keep``): one backbone pass, each fold's heads read it, their logits are averaged,
    where an element-wise mean of the heads' weights would average through LayerNorm and GELU."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def make_aux(mcfg: ModelConfig) -> AuxHead | None:
    if not mcfg.uses_aux:
        return None
    a = mcfg.aux
    return AuxHead(len(mcfg.aux_features), a.hidden or 64, a.dropout, a.source_bias, a.source_input)
