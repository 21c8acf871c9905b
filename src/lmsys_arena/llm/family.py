"""The ``llm`` model family for the runner: ``fit_fold`` and ``predict`` (swap-TTA inside).

    make folds train infer MODEL=tiny                       # CPU smoke run, about a minute
    make train MODEL=gemma3-270m DATA=... EXTRA=... ONLY_FOLDS=0
    make train MODEL=gemma2-9b-it BACKBONE=/path/to/hf-folder GPUS=2   # DDP through torchrun
    make infer MODEL=gemma3-270m                            # one process per visible GPU

Its options are :class:`llm.config.LLMConfig`: ``backbone``, ``tta`` and the sections ``format``,
``model`` (``lora``, ``head``, ``aux``), ``train`` and ``infer``.
Each fold folder gets ``adapter/`` (peft), ``head.pt``, ``llm_meta.json`` and, while training,
``ckpt.pt`` (resume point), and with ``train.report_to`` its training curves (:mod:`lmsys_arena.curves`:
train loss, learning rates, tokens/s per log step, the validation log loss at the end). ``predict`` returns
NaN logits for rows not reached before ``LMSYS_DEADLINE`` (see infer.py). The family protocol's kernel
hooks (``kernel_assets``, ``bundle_assets``, ``prepare_for_kernel``) are :mod:`llm.kaggle`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lmsys_arena import curves, dist
from lmsys_arena.llm.backbones import DTYPES, check_quant, load_tokenizer, resolve_backbone
from lmsys_arena.llm.compile import compile_layers, compile_mode
from lmsys_arena.llm.config import LLMConfig, ModelConfig
from lmsys_arena.llm.format import BattleEncoder, lengths
from lmsys_arena.llm.fsdp import full_state
from lmsys_arena.llm.fused import check_kernels
from lmsys_arena.llm.infer import score_ddp, score_local, score_multi_gpu

# the family protocol's kernel hooks (families.Family): backbone source, bundling, the kernel's config
from lmsys_arena.llm.kaggle import bundle_assets, kernel_assets, prepare_for_kernel  # noqa: F401
from lmsys_arena.llm.model import build_model, describe
from lmsys_arena.llm.side_inputs import aux_matrix
from lmsys_arena.llm.train import CKPT, Trainer, check_one_pass_per_step
from lmsys_arena.llm.trained import load_trained, read_meta, save_trained, write_meta
from lmsys_arena.llm.training_targets import fit_targets
from lmsys_arena.schema import build
from lmsys_arena.swap import combine_tta

log = logging.getLogger(__name__)
DONE = "train_done"


def options(cfg: dict) -> LLMConfig:
    return build(LLMConfig, cfg)


def _backbone(lc: LLMConfig, rank: int) -> Path:
    """Rank 0 converts/creates the cached backbone folder first; the others then read it."""
    if rank == 0:
        path = resolve_backbone(lc.backbone)
    dist.barrier()
    if rank != 0:
        path = resolve_backbone(lc.backbone)
    return path


def preflight(cfg: dict) -> None:
    """What fold 0 would refuse when it builds its model, refused before the run folder is written: liger kernels,
    bitsandbytes weights or CUDA-graph training with several passes a step where they cannot run, and a
    distillation teacher run that does not exist."""
    lc = options(cfg)
    if not lc.zero_shot and lc.train.distill.teacher and lc.train.distill.weight > 0:
        from lmsys_arena.teacher import teacher_run

        teacher_run(lc.train.distill.teacher)
    _, world, local = dist.init()
    device = _device(local)
    mcfg = _model_cfg(lc, device, for_infer=False)
    check_kernels(mcfg.kernels, device)
    check_quant(mcfg, device)
    if not lc.zero_shot and compile_mode(mcfg.compile, device, training=True) == "cudagraphs":
        check_one_pass_per_step(lc.train, world)


def _device(local: int) -> torch.device:
    """This process's GPU (its local rank's), else the CPU."""
    return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")


def _setup(cfg: dict, for_infer: bool):
    """This process's (options, rank, world size, device, backbone folder, encoder, model options)."""
    lc = options(cfg)
    rank, world, local = dist.init()
    device = _device(local)
    path = _backbone(lc, rank)
    enc = BattleEncoder(load_tokenizer(path), lc.format)
    return lc, rank, world, device, path, enc, _model_cfg(lc, device, for_infer)


def _model_cfg(lc: LLMConfig, device: torch.device, for_infer: bool) -> ModelConfig:
    d = {}
    if for_infer:
        d.update({k: v for k, v in (("dtype", lc.infer.dtype), ("quant", lc.infer.quant)) if v})
        if lc.infer.compile is not None:
            d["compile"] = lc.infer.compile
        elif lc.model.compile == "cudagraphs":  # a GPU training mode: plain compilation on a GPU, none on a CPU
            d["compile"] = compile_mode(lc.model.compile, device, training=False) is not None
    dtype = d.get("dtype", lc.model.dtype)
    if device.type == "cpu" and dtype != "fp32":
        log.info("CPU: running in fp32 instead of %s", dtype)
        d["dtype"] = "fp32"
    return dataclasses.replace(lc.model, **d)


def _encode(enc: BattleEncoder, df: pd.DataFrame, what: str, both: bool = True):
    t0 = time.time()
    out = enc.encode(df, both=both)
    fwd = out[0] if both else out
    L = lengths(fwd)
    log.info(
        "%s: tokenized %d rows in %.1fs (mean %.0f, max %d tokens; %.1f%% at max_len %d)",
        what,
        len(df),
        time.time() - t0,
        L.mean() if len(L) else 0,
        L.max() if len(L) else 0,
        100 * (L >= enc.cfg.max_len).mean() if len(L) else 0,
        enc.cfg.max_len,
    )
    return out


def fit_fold(cfg: dict, train: pd.DataFrame, valid: pd.DataFrame, fold_dir: Path, seed: int) -> np.ndarray:
    if options(cfg).zero_shot:  # the untrained judge (make judge): nothing to train
        from lmsys_arena.llm import judge

        return judge.fit_fold(cfg, train, valid, fold_dir, seed)
    fold_dir, report_to = Path(fold_dir), options(cfg).train.report_to
    fresh = not (fold_dir / DONE).exists() and not (fold_dir / CKPT).exists()  # else the curves go on
    # opened first: a missing writer library fails before the model is built
    with curves.Curves(report_to, fold_dir, fresh=fresh, enabled=dist.is_main_process(), config=cfg) as writer:
        return _fit_fold(cfg, train, valid, fold_dir, seed, writer)


def _fit_fold(cfg: dict, train, valid, fold_dir: Path, seed: int, writer: curves.Curves) -> np.ndarray:
    lc, rank, world, device, path, enc, mcfg = _setup(cfg, for_infer=False)
    names = mcfg.aux_features
    if (fold_dir / DONE).exists():
        log.info("%s: adapter already trained, scoring the validation rows", fold_dir)
        model = load_trained(path, mcfg, fold_dir, device)
        steps = (read_meta(fold_dir) or {}).get("steps")
    else:
        targets = fit_targets(lc.train, train, f"{fold_dir.name} train")  # soft targets, weights, distillation
        fwd, rev = _encode(enc, train, f"{fold_dir.name} train")
        aux = aux_matrix(mcfg, train)
        model = build_model(path, mcfg, device, seed if mcfg.init_seed is None else mcfg.init_seed)
        if model.aux is not None:
            model.aux.set_stats(torch.from_numpy(np.concatenate(aux)))
            model.aux.set_source_prior(train["label"].to_numpy(), aux[0][:, -1] > 0)
            log.info(
                "aux head: %d battle features%s",
                len(names),
                f", source bias for {int(aux[0][:, -1].sum())} extra rows" if mcfg.aux.source_bias else "",
            )
        log.info("model %s on %s (%s): %s", path, device, mcfg.dtype, describe(model))
        pissa_init = _save_pissa_init(model, mcfg, fold_dir, rank)
        dist.barrier()
        trainer = Trainer(model, lc.train, device, DTYPES[mcfg.dtype], enc.tok.pad_token_id, fold_dir, seed)
        trainer.curves = writer
        t0 = time.time()
        steps = trainer.fit(fwd, rev, train["label"].to_numpy(), aux=aux, targets=targets)
        log.info("%s: trained in %.1fs", fold_dir.name, time.time() - t0)
        if getattr(model, "cudagraphs", False):  # scoring batches vary in shape: plain compilation there
            compile_layers(model)
        full = full_state(trainer.params) if trainer.fsdp else None  # FSDP: gathered on every rank
        if rank == 0:
            save_trained(model, fold_dir, pissa_init, full=full)
            write_meta(
                fold_dir,
                {
                    "backbone": lc.backbone,
                    "backbone_dir": str(path),
                    "rows": len(train),
                    "train_seconds": round(time.time() - t0, 1),
                    "steps": steps,
                    "seed": seed,
                    "aux_features": names,
                },
            )
            (fold_dir / DONE).write_text("ok\n")
            (fold_dir / CKPT).unlink(missing_ok=True)
        dist.barrier()
        if trainer.fsdp:  # score with a whole copy per rank: ranks score different rows
            del model, trainer
            model = load_trained(path, mcfg, fold_dir, device)  # scored in the training precision, as with DDP
    if not len(valid):  # a full-data refit: no validation rows
        return np.zeros((0, 3))
    aux_valid = aux_matrix(mcfg, valid)
    logits, raw = _score(
        model, enc, valid, lc, device, DTYPES[mcfg.dtype], world, f"{fold_dir.name} valid", raw=True, aux=aux_valid
    )
    if rank == 0:  # both orders' raw logits, for no-TTA scores and analysis
        raw.update(_aux_logits(model, aux_valid, device))
        _check_text_path(raw, fold_dir.name, lc.train.text_loss)
        np.savez(fold_dir / "valid_raw.npz", id=valid["id"].to_numpy().astype(str), **raw)
        _log_valid_loss(writer, valid, logits, steps)
    return logits


def _log_valid_loss(writer: curves.Curves, valid: pd.DataFrame, logits: np.ndarray, steps: int | None) -> None:
    """``valid/logloss`` of the fold's validation rows (as scored: swap-TTA) at the training's last step."""
    if not writer.active or steps is None:
        return
    from lmsys_arena.metrics import log_loss, softmax

    ok = np.isfinite(logits).all(axis=1)
    if ok.any():
        writer.log({"valid/logloss": log_loss(valid["label"].to_numpy()[ok], softmax(logits[ok]))}, steps)


TEXT_COLLAPSED = 0.2  # order consistency of the text head below which fit_fold warns


def _aux_logits(model, aux: tuple[np.ndarray, np.ndarray] | None, device) -> dict[str, np.ndarray]:
    """The aux head's share of the validation logits in both orders (``aux_ab``, ``aux_ba``): the
    model's logits minus these are its text head's."""
    if aux is None or getattr(model, "aux", None) is None:
        return {}
    with torch.no_grad():
        return {
            k: model.aux(torch.from_numpy(a).to(device)).float().cpu().numpy()
            for k, a in zip(("aux_ab", "aux_ba"), aux)
        }


def _check_text_path(raw: dict[str, np.ndarray], fold: str, text_loss: float = 0.0) -> float | None:
    """Log the text head's order consistency (metrics.order_consistency) on the validation rows and
    warn when the text path has collapsed: its A/B margin no longer depends on which response comes
    first (seen on real data with a too high LoRA lr, and with an aux head but no ``train.text_loss`` at
    any lr, and at some seeds with it on a weak text signal; with an aux head the fold's loss hides it).
    Returns the consistency (None without swap-TTA logits)."""
    from lmsys_arena.metrics import order_consistency

    if len(raw.get("ba", ())) == 0:
        return None
    ab, ba = raw["ab"] - raw.get("aux_ab", 0.0), raw["ba"] - raw.get("aux_ba", 0.0)
    c = order_consistency(ab, ba)
    log.info("%s: text head order consistency %.3f (1: A/B margin follows the responses)", fold, c)
    if c < TEXT_COLLAPSED:
        has_aux = "aux_ab" in raw
        if has_aux and text_loss > 0:
            advice = (
                f"train.text_loss is already {text_loss:g}: the text signal is weak for this backbone on these "
                "rows (gemma3-270m on the shared sample: at 2 seeds of 3, docs/results.md); compare the fold loss with "
                "benchmarks/aux_head_alone.py, try another seed, a larger backbone or a higher "
                "train.text_loss"
            )
        elif has_aux:
            advice = "set train.text_loss (gemma3-270m: 1.0)"
        else:
            advice = "lower the LoRA lr (gemma3-270m collapsed at train.lr >= 5e-4, docs/llm.md)"
        log.warning(
            "%s: the text head learned no A/B preference: its A/B margin ignores which response comes "
            "first (order consistency %.3f < %.1f), so the fold's A/B predictions come from the aux head "
            "alone (without one they are constant). With pretrained weights: %s; a random-init backbone "
            "(tiny) shows it too.",
            fold,
            c,
            TEXT_COLLAPSED,
            advice,
            extra={"once": True},  # the fold's own value is logged above; the advice once per run
        )
    return c


def _save_pissa_init(model, mcfg: ModelConfig, fold_dir: Path, rank: int) -> Path | None:
    init = str(mcfg.lora.init)
    if not init.startswith("pissa"):
        return None
    path = fold_dir / "pissa_init"
    if rank == 0:
        pc = model.backbone.peft_config["default"]
        pc.init_lora_weights = True
        model.backbone.save_pretrained(path)
        pc.init_lora_weights = mcfg.lora.init
    return path


def _inputs(enc: BattleEncoder, df: pd.DataFrame, tta: bool, desc: str, aux: tuple[np.ndarray, np.ndarray] | None):
    """What is scored: the rows' A|B sequences, then (with swap-TTA) their B|A ones, and the side-input
    rows aligned with them (None without an aux head)."""
    if not tta:
        return _encode(enc, df, desc, both=False), None if aux is None else aux[0]
    fwd, rev = _encode(enc, df, desc)
    return fwd + rev, None if aux is None else np.concatenate(aux)


def _combine(logits: np.ndarray, n: int, tta: bool) -> np.ndarray:
    """Logits of ``_inputs`` -> the rows' logits (swap-TTA where both orders were scored)."""
    return combine_tta(logits[:n].astype(np.float64), logits[n:].astype(np.float64) if tta else None)


def _score(model, enc, df, lc: LLMConfig, device, dtype, world: int, desc: str, raw: bool = False, aux=None):
    seqs, side = _inputs(enc, df, lc.tta, desc, aux)
    score = score_ddp if world > 1 else score_local
    logits = score(model, seqs, enc.tok.pad_token_id, lc.infer, device, dtype, desc=desc, aux=side)
    n = len(df)
    out = _combine(logits, n, lc.tta)
    return (out, {"ab": logits[:n], "ba": logits[n:]}) if raw else out


def refit_config(cfg: dict, fold_dirs: list[Path]) -> dict:
    """A full-data refit keeps the folds' schedule: the same epochs (so about k/(k-1) times their steps)."""
    rows = [m.get("rows") for m in map(read_meta, fold_dirs) if m]
    log.info("refit: %s epochs as the folds (fold train rows %s)", options(cfg).train.epochs, rows)
    return cfg


def merge_models(
    cfg: dict, fold_dirs: list[Path], out_dir: Path, method: str, rank: int | None, heads: str = "keep"
) -> dict:
    """The derive hook: one adapter + the heads from the fold models (llm.merge)."""
    from lmsys_arena.llm.merge import merge_folds

    return merge_folds(fold_dirs, out_dir, method=method, rank=rank, heads=heads)


def export_model(cfg: dict, model_dir: Path, out_dir: Path, dtype: str) -> dict:
    """The derive hook: the adapter merged into the backbone's weights, saved in ``dtype`` (llm.export)."""
    from lmsys_arena.llm.export import export_merged

    return export_merged(cfg, model_dir, out_dir, dtype=dtype)


def exported_config(cfg: dict, out_dir: Path, dtype: str, quant: str | None) -> dict:
    """An exported run's config: its backbone is the merged folder; ``quant`` is how a kernel loads it."""
    from lmsys_arena.config import apply_overrides

    cfg = {**cfg, "backbone": str(Path(out_dir) / "backbone")}
    return apply_overrides(cfg, {"infer.quant": quant} if quant else {})


def golden_features(cfg: dict, df: pd.DataFrame) -> pd.DataFrame:
    """What the model reads of ``df``: the A|B token count and a checksum of the token ids (a changed format
    or tokenizer), then the aux head's side inputs."""
    lc = options(cfg)
    enc = BattleEncoder(load_tokenizer(resolve_backbone(lc.backbone)), lc.format)
    seqs = enc.encode(df, both=False)
    cols = {
        "tokens": lengths(seqs).astype(np.float64),
        "token_checksum": [float(np.asarray(s, dtype=np.int64) @ (np.arange(len(s)) % 7 + 1)) for s in seqs],
    }
    aux = aux_matrix(lc.model, df)
    if aux is not None:
        cols.update({f"aux{k}": aux[0][:, k].astype(np.float64) for k in range(aux[0].shape[1])})
    return pd.DataFrame(cols)


def _load_for_worker(path: str, m: ModelConfig, fold_dir: str, device: torch.device):
    model = load_trained(Path(path), m, Path(fold_dir), device)
    return model, load_tokenizer(Path(path)).pad_token_id, DTYPES[m.dtype]


def predict(cfg: dict, df: pd.DataFrame, fold_dir: Path) -> np.ndarray:
    """Logits (n, 3) for ``df`` with the fold's adapter; swap-TTA when ``cfg['tta']``; NaN rows for
    rows not reached before the deadline. Uses DDP ranks under torchrun, else one process per GPU."""
    if options(cfg).zero_shot:
        from lmsys_arena.llm import judge

        return judge.predict(cfg, df, fold_dir)
    lc, rank, world, device, path, enc, mcfg = _setup(cfg, for_infer=True)
    n_gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    workers = min(lc.infer.workers or n_gpus, n_gpus)
    desc = f"{Path(fold_dir).name} predict"
    names = mcfg.aux_features
    meta = read_meta(fold_dir)
    trained_on = meta.get("aux_features", []) if meta is not None else names
    if trained_on != names:
        raise ValueError(
            f"{fold_dir} was trained on {len(trained_on)} aux features, this code builds {len(names)} "
            f"(features.FEATURE_VERSION changed?); retrain the run"
        )
    aux = aux_matrix(mcfg, df)
    if world == 1 and workers > 1:
        load_fn = functools.partial(_load_for_worker, str(path), mcfg, str(fold_dir))
        seqs, side = _inputs(enc, df, lc.tta, desc, aux)
        logits = score_multi_gpu(load_fn, seqs, lc.infer, workers, desc=desc, aux=side)
        return _combine(logits, len(df), lc.tta)
    model = load_trained(path, mcfg, Path(fold_dir), device)
    return _score(model, enc, df, lc, device, DTYPES[mcfg.dtype], world, desc, aux=aux)
