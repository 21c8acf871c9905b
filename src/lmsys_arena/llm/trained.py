"""A trained fold on disk: ``fold_dir/adapter/`` (peft), ``head.pt`` (text head + aux head) and
``llm_meta.json``; :func:`save_trained` writes them, :func:`load_trained` builds the scoring model from them
(or from an export: the adapter merged into its own backbone, :mod:`lmsys_arena.llm.export`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from lmsys_arena.llm.backbones import atomic_dir, hidden_size_of, load_backbone
from lmsys_arena.llm.compile import compile_layers, compile_mode
from lmsys_arena.llm.config import ModelConfig
from lmsys_arena.llm.heads import AuxHead, MeanOf, head_softcap, make_aux, make_head
from lmsys_arena.llm.model import PreferenceModel, lora_input_cast

HEAD_FILE = "head.pt"
ADAPTER_DIR = "adapter"
META_FILE = "llm_meta.json"
MERGED_MARKER = "merged_adapter.json"  # in a backbone folder with an adapter merged in (llm.export.export_merged)
HEAD_MEMBERS = "head_members"  # llm_meta.json of a merge that kept its K folds' heads (llm.merge, heads=keep)


def member_prefix(k: int) -> str:
    """Where fold ``k``'s head state sits in a kept-heads ``head.pt``."""
    return f"members.{k}."


# ---------------------------------------------------------------- saving


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
            _save_gathered_adapter(model.backbone, full, Path(tmp))
    with atomic_path(fold_dir / HEAD_FILE) as tmp:
        torch.save(_head_state(model, full or {}), tmp)


def _save_gathered_adapter(backbone: nn.Module, full: dict[str, torch.Tensor], folder: Path) -> None:
    """The peft adapter folder of the gathered weights ``full`` (keys of the whole model: ``backbone.`` ...),
    as ``save_pretrained`` writes it."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    sd = {k[len("backbone.") :]: v for k, v in full.items() if k.startswith("backbone.")}
    save_file(
        {k: v.contiguous() for k, v in get_peft_model_state_dict(backbone, state_dict=sd).items()},
        str(folder / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    backbone.peft_config["default"].save_pretrained(folder)


def _head_state(model: PreferenceModel, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``head.pt``'s state on the CPU: the text head's weights, the aux head's under ``aux.``; a gathered
    weight of ``full`` replaces the model's own (sharded) one."""
    state = {k: full.get(f"head.{k}", v).detach().cpu() for k, v in model.head.state_dict().items()}
    if model.aux is not None:
        state.update({f"aux.{k}": full.get(f"aux.{k}", v).detach().cpu() for k, v in model.aux.state_dict().items()})
    return state


# ---------------------------------------------------------------- loading


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
        backbone = _load_adapted_backbone(path, fold_dir, mcfg, device)
    head, aux = _load_heads(backbone, mcfg, fold_dir)
    model = PreferenceModel(backbone, head.to(device), aux.to(device) if aux is not None else None)
    if compile_mode(mcfg.compile, device, training=False):
        compile_layers(model)
    return model.eval()


def _load_adapted_backbone(path: Path, fold_dir: Path, mcfg: ModelConfig, device: torch.device) -> nn.Module:
    """The stock backbone + the fold's adapter, merged into the weights unless they are quantised
    (peft cannot merge into k-bit weights: the adapter then runs beside them)."""
    from peft import PeftModel

    backbone = load_backbone(path, mcfg, device)
    backbone = PeftModel.from_pretrained(backbone, fold_dir / ADAPTER_DIR, is_trainable=False)
    if not mcfg.quant:
        backbone = backbone.merge_and_unload()
    lora_input_cast(backbone, False)
    return backbone


def _load_heads(backbone: nn.Module, mcfg: ModelConfig, fold_dir: Path) -> tuple[nn.Module, nn.Module | None]:
    """The text head and aux head (None without ``model.aux``) of ``head.pt`` (aux weights under ``aux.``),
    on the CPU. A merged run that kept its folds' heads (``llm_meta.json`` ``head_members: K``, the
    state of fold ``k`` under ``members.k.``): each head a :class:`MeanOf` the K folds' heads."""
    state = torch.load(fold_dir / HEAD_FILE, map_location="cpu", weights_only=True)
    k = (read_meta(fold_dir) or {}).get(HEAD_MEMBERS)
    if not k:
        return _heads_from_state(backbone, mcfg, state)
    prefixes = [member_prefix(i) for i in range(k)]
    stray = sorted(key for key in state if not key.startswith(tuple(prefixes)))
    if stray:
        raise ValueError(f"{fold_dir / HEAD_FILE}: keys {stray[:3]} are outside the {k} head members of llm_meta.json")
    parts = [{key[len(p) :]: v for key, v in state.items() if key.startswith(p)} for p in prefixes]
    heads, auxes = zip(*(_heads_from_state(backbone, mcfg, part) for part in parts))
    return MeanOf(list(heads)), None if auxes[0] is None else MeanOf(list(auxes))


def _heads_from_state(backbone: nn.Module, mcfg: ModelConfig, state: dict) -> tuple[nn.Sequential, AuxHead | None]:
    head = make_head(
        hidden_size_of(backbone), **dataclasses.asdict(mcfg.head), softcap=head_softcap(backbone, mcfg.head.init)
    )
    head.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux.")})
    aux = make_aux(mcfg)
    if aux is not None:
        aux.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("aux.")})
    return head, aux


# ---------------------------------------------------------------- llm_meta.json


def write_meta(fold_dir: Path, meta: dict) -> None:
    from lmsys_arena.io import write_json

    write_json(fold_dir / META_FILE, meta)


def read_meta(fold_dir: Path) -> dict | None:
    """The fold's ``llm_meta.json`` (None where it has none)."""
    path = Path(fold_dir) / META_FILE
    return json.loads(path.read_text()) if path.exists() else None
