"""Pooling and padding: the last real token's logits are the same under left and right padding
(no peft import here).

    .venv/bin/python -m pytest tests/test_llm_model.py
"""

import numpy as np
import pytest
import torch

from lmsys_arena.llm.backbones import tiny_config
from lmsys_arena.llm.batching import collate, token_budget_batches
from lmsys_arena.llm.heads import make_head
from lmsys_arena.llm.model import PreferenceModel, last_token_pool


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModel

    torch.manual_seed(0)
    cfg = tiny_config(300, attn_logit_softcapping=None)
    cfg._attn_implementation = "eager"
    m = PreferenceModel(AutoModel.from_config(cfg), make_head(64, layers=2, hidden=32)).eval()
    torch.nn.init.normal_(m.head[-1].weight)  # the last layer starts at zero; make the logits informative
    return m


def test_last_token_pool_finds_last_real_token_for_both_sides():
    h = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_pool(h, right)[:, 0].tolist() == [2.0, 9.0]
    assert last_token_pool(h, left)[:, 0].tolist() == [4.0, 9.0]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_equal_under_left_and_right_padding_and_alone(model, attn):
    model.backbone.config._attn_implementation = attn
    rng = np.random.default_rng(0)
    seqs = [rng.integers(10, 290, size=n).astype(np.int32) for n in (7, 23, 15, 3)]
    with torch.no_grad():
        r = model(*collate(seqs, 0, "right"))
        left = model(*collate(seqs, 0, "left"))
        alone = torch.cat([model(*collate([s], 0)) for s in seqs])
        causal_only = model(*collate(seqs, 0, "right"), right_padded=True)  # no padding mask at all
    assert torch.isfinite(r).all() and torch.isfinite(left).all()
    torch.testing.assert_close(r, left, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r, causal_only, atol=1e-5, rtol=1e-5)


def test_token_budget_batches_cover_rows_once_within_budget():
    lengths = np.array([5, 100, 30, 100, 2, 64, 64, 7])
    batches = token_budget_batches(lengths, max_tokens=200, max_rows=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and len(b) * lengths[b].max() <= 200 or len(b) == 1
    assert lengths[batches[0]].max() == 100  # longest first


def test_head_shapes():
    assert make_head(64, layers=1)(torch.zeros(2, 64)).shape == (2, 3)
    assert make_head(64, layers=3, hidden=16, dropout=0.1)(torch.zeros(2, 64)).shape == (2, 3)
    assert make_head(64)(torch.randn(2, 64)).abs().max() == 0  # starts from uniform predictions


def test_micro_batches_token_budget_and_fixed_rows():
    from lmsys_arena.llm.batching import micro_batches

    rows = np.array([10, 11, 12, 13, 14, 15, 16])
    lengths = np.array([900, 100, 120, 2000, 50, 60, 400])
    fixed = micro_batches(rows, lengths, micro_batch=3, micro_tokens=0)
    assert [len(m) for m in fixed] == [3, 2, 2] and np.concatenate(fixed).tolist() == rows.tolist()
    budget = micro_batches(rows, lengths, micro_batch=4, micro_tokens=1000)
    assert sorted(np.concatenate(budget).tolist()) == rows.tolist()
    for m in budget:
        L = lengths[np.searchsorted(rows, m)]
        assert len(m) <= 4 and (len(m) * L.max() <= 1000 or len(m) == 1)
    assert budget[0].tolist() == [13]  # the 2000-token row alone, first


def test_compiled_layers_give_the_same_logits(model):
    import copy

    from lmsys_arena.llm.compile import compile_layers

    model.backbone.config._attn_implementation = "sdpa"
    compiled = copy.deepcopy(model)
    assert compile_layers(compiled) == 2
    rng = np.random.default_rng(1)
    for sizes in ((7, 23, 15), (40, 9)):  # two shapes: the dynamic graph serves both
        seqs = [rng.integers(10, 290, size=n).astype(np.int32) for n in sizes]
        with torch.no_grad():
            ref = model(*collate(seqs, 0, "right"), right_padded=True)
            out = compiled(*collate(seqs, 0, "right"), right_padded=True)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_aux_source_bias_keeps_competition_priors():
    """Extra rows all ties, competition rows A/B only, nothing else to tell them apart: with the
    source bias the competition rows' tie probability goes to ~0 instead of the pooled ~50%."""
    import torch.nn.functional as F

    from lmsys_arena.llm.heads import AuxHead

    torch.manual_seed(0)
    n = 400
    extra = (torch.arange(n) % 2).float()
    y = torch.where(extra.bool(), torch.full((n,), 2), torch.arange(n) % 4 // 2)  # tie / alternating A, B
    feats = torch.randn(n, 4)
    aux_rows = torch.cat([feats, extra[:, None]], 1)
    for source_bias, want in ((True, (0.0, 0.05)), (False, (0.3, 0.7))):
        aux, bias = AuxHead(4, hidden=8, source_bias=source_bias), torch.zeros(3, requires_grad=True)
        aux.set_stats(aux_rows)
        opt = torch.optim.Adam([*aux.parameters(), bias], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(aux(aux_rows) + bias, y).backward()
            opt.step()
        with torch.no_grad():
            p_tie = torch.softmax(aux(aux_rows[extra == 0]) + bias, -1)[:, 2].mean().item()
        assert want[0] <= p_tie <= want[1], (source_bias, p_tie)


def test_aux_source_prior_starts_at_the_log_ratio_of_tie_rates():
    import numpy as np

    from lmsys_arena.llm.heads import AuxHead

    aux = AuxHead(2, hidden=4, source_bias=True)
    y = np.array([0] * 45 + [1] * 52 + [2] * 3 + [0] * 40 + [1] * 38 + [2] * 22)  # 3% vs 22% ties
    extra = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    aux.set_source_prior(y, extra)
    want_tie = np.log(23 / 102) - np.log(4 / 102)
    want_ab = np.log(79 / 102) - np.log(98 / 102)
    np.testing.assert_allclose(aux.source.detach().numpy(), [want_ab, want_ab, want_tie], rtol=1e-5)
    before = aux.source.detach().clone()
    aux.set_source_prior(y, np.zeros(200, bool))  # one source only: nothing to learn, left as it is
    torch.testing.assert_close(aux.source.detach(), before)
    AuxHead(2, hidden=4).set_source_prior(y, extra)  # no source bias: a no-op


def test_aux_source_input_lets_the_feature_rule_differ_by_source():
    """Competition rows: x0 > 0 -> A else B; extra rows: the reverse. No per-source offset can fit both
    (with the bias alone one source stays near chance); with ``is_extra`` as an MLP input both are learnt."""
    import torch.nn.functional as F

    from lmsys_arena.llm.heads import AuxHead

    torch.manual_seed(0)
    n = 400
    extra = (torch.arange(n) % 2).float()
    feats = torch.randn(n, 1)
    pos = feats[:, 0] > 0
    y = torch.where(extra.bool(), torch.where(pos, 1, 0), torch.where(pos, 0, 1))
    aux_rows = torch.cat([feats, extra[:, None]], 1)
    acc = {}
    for source_input in (False, True):
        aux = AuxHead(1, hidden=16, source_bias=True, source_input=source_input)
        aux.set_stats(aux_rows)
        opt = torch.optim.Adam(aux.parameters(), lr=0.03)
        for _ in range(400):
            opt.zero_grad()
            F.cross_entropy(aux(aux_rows), y).backward()
            opt.step()
        with torch.no_grad():
            hit = aux(aux_rows).argmax(-1) == y
        acc[source_input] = (hit[extra == 0].float().mean().item(), hit[extra == 1].float().mean().item())
    assert min(acc[True]) > 0.95, acc
    assert sum(acc[False]) / 2 < 0.8, acc  # one shared rule: right on one source, about half of the other


def test_text_logits_for_text_loss_are_the_head_alone(model):
    """``with_text=True`` (train.text_loss) returns the text head's logits beside the sum; a loss on them
    trains the backbone side only, never the aux head."""
    import torch.nn.functional as F

    from lmsys_arena.llm.heads import AuxHead

    torch.manual_seed(0)
    aux = AuxHead(3, hidden=8, source_bias=True, source_input=True)
    torch.nn.init.normal_(aux.net[-1].weight)
    m = PreferenceModel(model.backbone, model.head, aux)
    ids = torch.randint(3, 300, (4, 12))
    mask = torch.ones_like(ids)
    rows = torch.cat([torch.randn(4, 3), torch.tensor([[0.0], [1.0], [0.0], [1.0]])], 1)
    logits, text = m(ids, mask, aux=rows, with_text=True)
    torch.testing.assert_close(logits - text, aux(rows))
    torch.testing.assert_close(text, model(ids, mask))
    m.zero_grad()
    F.cross_entropy(text, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in aux.parameters())
    assert m.head[-1].weight.grad.abs().max() > 0
    m.zero_grad()


def test_compile_modes_validate_and_map_for_inference():
    """``compile: cudagraphs`` is a GPU training mode: inference gets plain compilation on a GPU and
    none on a CPU; unknown modes are refused."""
    import pytest
    import torch

    from lmsys_arena.config import load_config
    from lmsys_arena.llm.config import ModelConfig
    from lmsys_arena.llm.family import _model_cfg, options
    from lmsys_arena.schema import build

    with pytest.raises(ValueError, match="model.compile must be true or false or one of 'cudagraphs', got 'max-speed'"):
        build(ModelConfig, {"compile": "max-speed"}, prefix="model.")
    lc = options(load_config("tiny", {"model.compile": "cudagraphs"}))
    assert lc.model.compile == "cudagraphs"
    assert _model_cfg(lc, torch.device("cpu"), for_infer=False).compile == "cudagraphs"
    assert _model_cfg(lc, torch.device("cpu"), for_infer=True).compile is False
    assert _model_cfg(lc, torch.device("cuda", 0), for_infer=True).compile is True


def test_compile_mode_per_device_and_phase():
    """One place decides what model.compile means: CPU runs stay eager under cudagraphs, GPU scoring
    of a cudagraphs-trained model compiles plainly (a resumed fold reloads through the same path)."""
    import torch

    from lmsys_arena.llm.compile import compile_mode

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert compile_mode(False, gpu, training=True) is None
    assert compile_mode(True, cpu, training=False) == "plain"
    assert compile_mode("cudagraphs", cpu, training=True) is None
    assert compile_mode("cudagraphs", cpu, training=False) is None
    assert compile_mode("cudagraphs", gpu, training=True) == "cudagraphs"
    assert compile_mode("cudagraphs", gpu, training=False) == "plain"


def test_cudagraph_training_refuses_several_passes_a_step():
    """CUDA-graph training replays one pass per step: gradient accumulation is refused up front (on a GPU it
    stops at the first step with 'accessing tensor output of CUDAGraphs that has been overwritten')."""
    from lmsys_arena.config import load_config
    from lmsys_arena.llm.family import options
    from lmsys_arena.llm.train import check_one_pass_per_step
    from lmsys_arena.schema import ConfigError

    def train_cfg(**sets):
        return options(load_config("gemma3-270m", {f"train.{k}": v for k, v in sets.items()})).train

    check_one_pass_per_step(train_cfg(), world=1)  # the shipped config: 32 rows, one pass of 32
    check_one_pass_per_step(train_cfg(micro_batch=16), world=2)  # 16 rows per GPU on 2 GPUs
    with pytest.raises(ConfigError, match=r"train.micro_batch >= 32 .*model.compile: true"):
        check_one_pass_per_step(train_cfg(micro_batch=8), world=1)
    with pytest.raises(ConfigError, match="micro_tokens"):
        check_one_pass_per_step(train_cfg(micro_tokens=8192), world=1)


def test_preflight_refuses_what_fold_0_would_before_the_run_folder(monkeypatch, tmp_path):
    """``llm.family.preflight`` (called by train and refit before the run folder is written) refuses CUDA-graph
    training with several passes a step on a GPU, and leaves CPU runs of the same config alone (they run eager)."""
    from lmsys_arena.config import load_config
    from lmsys_arena.llm import family
    from lmsys_arena.schema import ConfigError

    cfg = load_config("gemma3-270m", {"train.micro_batch": 8})
    family.preflight(cfg)  # a CPU: cudagraphs is a GPU training mode, nothing to refuse
    family.preflight(load_config("qwen2.5-coder-1.5b-verdict", {}))  # the 1.5B config: plain compilation, 2 passes
    monkeypatch.chdir(tmp_path)  # no runs/ here
    with pytest.raises(FileNotFoundError, match=r"teacher run 'xgb': .*config.json not found"):
        family.preflight(load_config("qwen2.5-coder-1.5b-distill", {}))  # the distill config before its teacher
    monkeypatch.setattr(family.torch.cuda, "is_available", lambda: True)
    family.preflight(load_config("gemma3-270m", {}))  # the shipped config: one pass a step
    with pytest.raises(ConfigError, match=r"train.micro_batch >= 32"):
        family.preflight(cfg)
    monkeypatch.setattr(family.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"model.quant=8bit needs a CUDA GPU"):
        family.preflight(load_config("gemma3-270m-8bit", {}))
