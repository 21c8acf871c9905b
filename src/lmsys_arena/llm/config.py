"""The options of the ``llm`` family (``family: llm``): format, model (lora, head, aux), train, infer.

Importing this module imports no torch, so configs are checked and printed on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmsys_arena.curves import REPORT_TO_HELP, ReportTo
from lmsys_arena.options import RunOptions
from lmsys_arena.schema import OptionError, option

Dtype = Literal["bf16", "fp16", "fp32"]


@dataclass
class Shares:
    prompt: float = option(0.2, "the prompt's share of a round that does not fit")
    a: float = option(0.4, "response A's share")
    b: float = option(0.4, "response B's share (equal to a: format(swap(x)) mirrors format(x))")

    def __post_init__(self):
        if min(self.prompt, self.a, self.b) < 0 or self.prompt + self.a + self.b <= 0:
            raise OptionError("prompt", f"shares must be non-negative with a positive sum, got {self}")


@dataclass
class Labels:
    prompt: str = option("\n\n## Prompt\n", "text before each prompt turn")
    a: str = option("\n\n## Response A\n", "text before each response-A turn")
    b: str = option("\n\n## Response B\n", "text before each response-B turn")


@dataclass
class FormatConfig:
    max_len: int = option(1024, "tokens per battle in all (template included)")
    template: Literal["plain", "judge"] = option(
        "plain",
        "plain: instruction + ## Prompt / ## Response A / ## Response B headers; judge: an MT-bench-style judge "
        "prompt whose last tokens open the verdict, 'Verdict: [[' (next token A, B or C: llm/format.py)",
    )
    keep: Literal["newest", "oldest"] = option("newest", "which rounds survive when not all fit")
    truncation_side: Literal["right", "left"] = option("right", "right: keep a cut text's start; left: its end")
    shares: Shares = option(factory=Shares, help="how the first round that does not fit is split (water-filling)")
    instruction: str = option(
        "Which response better answers the prompt: A, B, or is it a tie?",
        "the instruction at the start of the user turn (template: plain)",
    )
    labels: Labels = option(factory=Labels, help="the segment headers (template: plain)")
    min_split: int = option(32, "a round is split only if at least this many of its text tokens fit; else dropped")
    chars_per_token: float = option(8.0, "texts are cut to max_len x this many characters before tokenizing")


@dataclass
class LoraOptions:
    r: int = option(16, "LoRA rank")
    alpha: int = option(32, "LoRA alpha (scale alpha / r)")
    dropout: float = option(0.05, "LoRA dropout")
    target_modules: str | list[str] = option("all-linear", "modules with adapters: a list of names or all-linear")
    layers: list[int] | None = option(None, "decoder layers with adapters (null: all)")
    init: bool | str = option(
        True, "peft init_lora_weights: true, pissa, pissa_niter_4, ... (PiSSA is saved as plain LoRA)"
    )
    rslora: bool = option(False, "rank-stabilised scaling alpha / sqrt(r)")


@dataclass
class HeadOptions:
    layers: int = option(1, "Linear layers (1: a linear probe, 3: a 3-layer MLP); the last starts at zero")
    hidden: int = option(0, "hidden width (0: the backbone's hidden size)")
    dropout: float = option(0.0, "dropout before and between the layers")
    norm: bool = option(True, "LayerNorm on the pooled hidden state first")
    init: Literal["zero", "verdict"] = option(
        "zero",
        "the last layer's start: zero (uniform predictions) or verdict (the backbone's output-embedding rows of "
        "the verdict tokens A, B, C: the LM's own next-token judgement; needs layers: 1 and norm: false)",
    )

    def __post_init__(self):
        if self.init == "verdict" and (self.layers != 1 or self.norm):
            raise OptionError(
                "init",
                f"verdict reproduces the LM's next-token logits only as one Linear layer on the pooled state the "
                f"LM head sees: set model.head.layers: 1 and model.head.norm: false (got layers: {self.layers}, "
                f"norm: {str(self.norm).lower()})",
            )


@dataclass
class AuxOptions:
    features: str | list[str] | None = option(
        None, "battle features added as side inputs: null, all, or names / fnmatch patterns (lr_*)"
    )
    hidden: int = option(64, "hidden width of the aux MLP")
    dropout: float = option(0.0, "dropout in the aux MLP")
    source_bias: bool = option(
        False, "a learned logit offset for EXTRA rows, started at the log ratio of the sources' priors"
    )
    source_input: bool = option(
        False, "is_extra is also an input of the aux MLP (the feature rule may differ by source)"
    )


@dataclass
class ModelConfig:
    dtype: Dtype = option("bf16", "weights and autocast dtype (the CPU always runs fp32)")
    quant: Literal["4bit", "8bit"] | None = option(
        None, "bitsandbytes weights: 4bit (QLoRA NF4 + double quant) or 8bit; CUDA only"
    )
    attn: Literal["sdpa", "eager", "flash_attention_2"] = option("sdpa", "attention implementation")
    softcap: bool = option(False, "keep Gemma-2's attention logit soft-capping (needs attn: eager)")
    grad_ckpt: bool = option(False, "gradient checkpointing")
    compile: bool | Literal["cudagraphs"] = option(
        False,
        "torch.compile each decoder layer (dynamic shapes); cudagraphs: also replay each layer as a CUDA graph "
        "in training (static shapes: pair with train.pad_multiple = format.max_len)",
    )
    kernels: Literal["none", "liger"] = option(
        "none",
        "fused kernels patched into the loaded backbone: none, or liger (liger-kernel's RMSNorm, GeGLU/SwiGLU and "
        "rotary Triton kernels; CUDA + Triton + the kernels extra, Gemma-2/3, Llama, Qwen2, ...; refused elsewhere)",
    )
    init_seed: int | None = option(
        0,
        "seed of the LoRA and head initialisation, the same in every fold so that fold adapters start alike and "
        "can be merged (make merge); null: each fold's training seed",
    )
    lora: LoraOptions = option(factory=LoraOptions, help="the LoRA adapters")
    head: HeadOptions = option(factory=HeadOptions, help="the classification head on the last real token")
    aux: AuxOptions = option(factory=AuxOptions, help="side inputs whose logits are added to the text head's (AuxHead)")

    @property
    def uses_aux(self) -> bool:
        return bool(self.aux.features) or bool(self.aux.source_bias)

    @property
    def aux_features(self) -> list[str]:
        """The battle-feature columns the aux head reads (``aux.features`` resolved)."""
        return aux_feature_names(self.aux.features)


def aux_feature_names(spec) -> list[str]:
    """``model.aux.features``: null (none), ``all`` or a list of names / fnmatch patterns (``lr_*``)
    of :func:`lmsys_arena.features.feature_names`, kept in that order."""
    import fnmatch

    from lmsys_arena.features import feature_names

    if not spec:
        return []
    names = feature_names()
    if spec == "all":
        return names
    pats = [spec] if isinstance(spec, str) else list(spec)
    unmatched = [p for p in pats if not fnmatch.filter(names, p)]
    if unmatched:
        raise ValueError(f"model.aux.features: {unmatched} match no feature (see features.feature_names())")
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]


@dataclass
class DistillOptions:
    teacher: str | None = option(
        None,
        "a run (any family, a blend too) whose predictions the student also fits: its OOF for train rows, "
        "`make pseudo`'s scores for other rows (docs/llm.md#distillation); a model name without a run of its own "
        "means that model's run on the same DATA (<name>-<data folder>); null: off",
    )
    weight: float = option(1.0, "weight of the KL term: loss = CE + weight * T^2 * KL(teacher_T || student_T)")
    temperature: float = option(1.0, "softmax temperature T of teacher and student in the KL term")

    def __post_init__(self):
        if self.weight < 0:
            raise OptionError("weight", f"must be >= 0, got {self.weight}")
        if self.temperature <= 0:
            raise OptionError("temperature", f"must be > 0, got {self.temperature}")


@dataclass
class TrainConfig:
    epochs: float = option(1.0, "passes over the fold's training rows (fractions allowed)")
    batch_size: int = option(16, "rows per optimizer step, all GPUs together")
    micro_batch: int = option(4, "rows per forward pass on one GPU (at most)")
    micro_tokens: int = option(
        0, "padded tokens per forward pass (0: off; rows x longest, both orders with swap: both)"
    )
    lr: float = option(2e-4, "LoRA learning rate")
    head_lr: float = option(1e-3, "learning rate of the head and the aux head")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup: float = option(0.05, "warmup, as a fraction of the steps")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", "learning-rate schedule after warmup")
    max_grad_norm: float = option(1.0, "gradient clipping (0: off)")
    swap: Literal["none", "random", "both"] = option(
        "random", "A/B swap augmentation: none, each row swapped with p=0.5, or both orders"
    )
    rdrop: float = option(0.0, "weight of the symmetric KL between two dropout passes (0: off)")
    ema: float = option(0.0, "EMA decay of the trainable weights, used for the final model (0: off)")
    group_by_length: bool = option(True, "length-grouped batches (less padding)")
    pad_multiple: int = option(1, "pad each micro-batch's length up to a multiple of this (cudagraphs: format.max_len)")
    strategy: Literal["ddp", "fsdp"] = option(
        "ddp", "several GPUs: ddp (a copy per GPU) or fsdp (FSDP2, weights sharded)"
    )
    label_smoothing: float = option(0.0, "cross-entropy label smoothing")
    text_loss: float = option(
        0.0,
        "weight of a cross-entropy on the text head's logits alone (with model.aux; "
        "without it the text head may learn no A/B preference)",
    )
    distill: DistillOptions = option(factory=DistillOptions, help="a KL term towards a teacher run's predictions")
    checkpoint_every: int = option(200, "optimizer steps between resumable checkpoints (ckpt.pt)")
    log_every: int = option(50, "optimizer steps between log lines (loss, lr, tokens/s)")
    report_to: ReportTo = option(
        "none",
        REPORT_TO_HELP + ": train/loss, train/lr, train/head_lr, train/tokens_per_s every log_every steps, "
        "valid/logloss at the end",
    )

    def __post_init__(self):
        if self.text_loss < 0:
            raise OptionError("text_loss", f"must be >= 0, got {self.text_loss}")


@dataclass
class InferConfig:
    max_tokens: int = option(65536, "padded tokens per scoring batch")
    max_rows: int = option(256, "rows per scoring batch (at most)")
    workers: int = option(0, "processes, one per GPU, when not under torchrun (0: every visible GPU)")
    dtype: Dtype | None = option(None, "model.dtype for inference (fp16 on T4s)")
    quant: Literal["4bit", "8bit"] | None = option(None, "model.quant for inference")
    compile: bool | Literal["cudagraphs"] | None = option(
        None, "model.compile for inference (null: model.compile, with plain compilation instead of cudagraphs)"
    )


@dataclass
class LLMConfig(RunOptions):
    """A decoder backbone + LoRA + a head (``family: llm``)."""

    backbone: str = option("", "a local HF folder, a .gguf file, pypi:<package> or tiny (llm/backbones.py)")
    zero_shot: bool = option(
        False,
        "no training: the untrained backbone's next-token log-probabilities of the verdict tokens are the logits "
        "(needs format.template: judge; `make judge`, llm/judge.py); lora, head, aux and train are unused",
    )
    format: FormatConfig = option(factory=FormatConfig, help="battle -> tokens (llm/format.py)")
    model: ModelConfig = option(
        factory=ModelConfig, help="backbone precision, compile, LoRA, heads (llm/model.py, heads.py, compile.py)"
    )
    train: TrainConfig = option(factory=TrainConfig, help="the training loop (llm/train.py)")
    infer: InferConfig = option(factory=InferConfig, help="scoring (llm/infer.py)")

    def __post_init__(self):
        if not self.backbone:
            raise OptionError(
                "backbone",
                "an llm config needs a backbone (HF folder, .gguf, pypi:<package> or tiny); "
                "set it with BACKBONE=... / --set backbone=...",
            )
        if self.zero_shot and self.format.template != "judge":
            raise OptionError(
                "zero_shot", "reads the verdict the judge prompt asks for: set format.template: judge (make judge does)"
            )
        try:  # patterns that match no feature fail here, before any data is read
            self.model.aux_features  # noqa: B018
        except ValueError as e:
            raise OptionError("model.aux.features", str(e).split(": ", 1)[-1]) from None
