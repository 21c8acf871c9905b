"""Kaggle images (kernels/image.py), per-image requirements and wheelsets (wheels.py), the offline resolve
check (resolve_check.py) and the relaxed metadata rules (metadata_check.py), and `make submit` without
credentials (publish.py).

Fast and offline: the resolve check runs on tiny wheels written here, against a made-up image.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from lmsys_arena.kernels import metadata_check, requirements, resolve_check, wheels
from lmsys_arena.kernels import publish as push
from lmsys_arena.kernels.image import IMAGE_ENV, IMAGES, KaggleImage, get_image, wheels_slug
from lmsys_arena.kernels.plan import KernelError


def test_image_table():
    latest, original = IMAGES["latest"], IMAGES["original"]
    assert (latest.python, latest.abi, latest.pinning) == ("3.12", "cp312", "latest")
    assert (original.python, original.abi, original.pinning) == ("3.10", "cp310", "original")
    for img in (latest, original):
        assert img.version_of("torch") and img.version_of("numpy") and img.version_of("scikit_learn")
        assert all(p.startswith("manylinux") and p.endswith("x86_64") for p in img.platforms)
        assert img.markers()["python_version"] == img.python
    assert latest.has("nvidia-cublas-cu12") and not original.has("nvidia-cublas-cu12")
    assert latest.satisfies("numpy", ">=1.26") and not original.satisfies("torch", ">=2.4")
    assert wheels_slug("latest") == "lmsys-arena-wheels-latest" == latest.wheels_slug
    # the original image with its torch replaced: same Python and pinning, torch shipped (not the image's)
    swapped = IMAGES["original-torch"]
    assert (swapped.python, swapped.pinning) == ("3.10", "original") and swapped.version_of("torch") is None
    assert swapped.torch == ("torch==2.6.0", "torchvision==0.21.0") and not latest.torch and not original.torch


def test_image_choice(monkeypatch):
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    assert get_image().name == "latest"
    monkeypatch.setenv(IMAGE_ENV, "original")
    assert get_image().name == "original" and get_image("latest").name == "latest"
    assert get_image(IMAGES["latest"]) is IMAGES["latest"]
    with pytest.raises(ValueError, match="unknown Kaggle image"):
        get_image("py27")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_requirements_exclude_what_the_image_provides(name):
    img = IMAGES[name]
    ship, from_image = requirements.split_requirements(name)
    full = requirements.kernel_requirements(name)
    assert sorted(requirements.requirement_name(r) for r in ship + from_image) == sorted(
        requirements.requirement_name(r) for r in full
    )
    ship_names = {requirements.requirement_name(r) for r in ship}
    if img.torch:  # shipped in place of the image's: exactly the image's pins, and nothing else is asked of it
        assert set(img.torch) <= set(ship) and requirements.framework_requirements(name) == []
        assert not requirements.never_shipped("torch", img) and not requirements.never_shipped("nvidia-cudnn-cu12", img)
    else:
        assert "torch" not in ship_names | {
            requirements.requirement_name(r) for r in from_image
        }  # never shipped, never listed
        assert requirements.never_shipped("torch", img) and requirements.framework_requirements(name)
    assert "bitsandbytes" in ship_names and "gguf" in ship_names  # in no image
    for r in from_image:
        assert img.satisfies(requirements.requirement_name(r), requirements._spec(r)), r
    for r in ship:
        n = requirements.requirement_name(r)
        assert img.version_of(n) is None or not img.satisfies(n, requirements._spec(r)), r
    if name == "latest":
        assert "transformers" not in ship_names and "numpy" not in ship_names
    else:  # no nvidia-* wheels in the 2024 image: xgboost ships as xgboost-cpu (no NCCL wheel needed)
        assert any(r.startswith("xgboost-cpu==") for r in ship)
    assert requirements.framework_requirements(name) == ([] if img.torch else ["torch>=2.6"])


def test_pinned_gbdt_ships_only_when_the_image_version_differs():
    xgb, lgb = requirements._local_version("xgboost"), requirements._local_version("lightgbm")
    assert xgb and lgb
    base = IMAGES["latest"]
    same = replace(base, name="same", provided={**base.provided, "xgboost": xgb, "lightgbm": lgb})
    ship, from_image = requirements.split_requirements(same)
    assert f"xgboost=={xgb}" in from_image and f"lightgbm=={lgb}" in from_image
    assert not any(requirements.requirement_name(r) in ("xgboost", "lightgbm") for r in ship)
    other = replace(base, name="other", provided={**base.provided, "xgboost": "1.7.6", "lightgbm": lgb})
    ship, _ = requirements.split_requirements(other)
    assert f"xgboost=={xgb}" in ship and f"lightgbm=={lgb}" not in ship
    lacking = replace(base, name="lacking", provided={k: v for k, v in base.provided.items() if k != "lightgbm"})
    assert f"lightgbm=={lgb}" in requirements.split_requirements(lacking)[0]


# --------------------------------------------------------------------------- the offline resolve check


def _wheel(dest: Path, name: str, version: str, requires=()) -> Path:
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    path = dest / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{stem.split('-')[0]}/__init__.py", "")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


TOY = KaggleImage(name="toy", python="3.12", pinning="latest", provided={"numpy": "2.0.0", "torch": "2.5.0"},
                  provided_prefixes=("nvidia-",))  # fmt: skip


def _wheelset(wdir: Path, ship, from_image, framework=("torch>=2.4",)) -> None:
    wdir.mkdir(parents=True, exist_ok=True)
    ws = {"kind": "wheels", "wheels": "full", "image": TOY.name, "requirements": list(ship),
          "from_image": list(from_image), "framework": list(framework)}  # fmt: skip
    (wdir / wheels.WHEELSET_FILE).write_text(json.dumps(ws))


def test_resolve_check_passes_with_the_image_packages_as_stubs(tmp_path):
    wdir = tmp_path / "wheels"
    _wheelset(wdir, ["foo==1.0"], ["numpy>=1.26"])
    _wheel(wdir, "foo", "1.0", ["numpy>=1.26", "nvidia-nccl-cu12; platform_system == 'Linux'"])
    problems, notes = resolve_check.check_resolve(wdir, None, TOY)
    assert not problems, problems
    assert "resolves offline for Python 3.12" in notes[0] and "1 shipped" in notes[0], notes


def test_resolve_check_fails_on_a_missing_wheel_or_an_unmet_image_version(tmp_path):
    wdir = tmp_path / "w1"
    _wheelset(wdir, ["foo==1.0", "bar"], ["numpy>=1.26"])
    _wheel(wdir, "foo", "1.0", ["numpy>=1.26"])  # bar is not shipped
    problems, _ = resolve_check.check_resolve(wdir, None, TOY)
    assert problems and "does not resolve for Python 3.12" in problems[0] and "bar" in problems[0], problems

    wdir = tmp_path / "w2"
    _wheelset(wdir, ["foo==1.0"], [])
    _wheel(wdir, "foo", "1.0", ["numpy>=3"])  # the image's numpy 2.0.0 is too old
    problems, _ = resolve_check.check_resolve(wdir, None, TOY)
    assert problems and "numpy" in problems[0], problems

    wdir = tmp_path / "w3"  # the image's torch misses the package's torch>=2.6: only an LLM kernel cares
    _wheelset(wdir, [], ["numpy>=1.26"], framework=["torch>=2.6"])
    assert resolve_check.check_resolve(wdir, None, TOY)[0]
    assert not resolve_check.check_resolve(wdir, None, TOY, llm=False)[0]


def test_stub_wheels_carry_name_and_version(tmp_path):
    stubs = resolve_check.build_stub_wheels(TOY, tmp_path, also={"nvidia-nccl-cu12": [">=2.18"]})
    names = sorted(p.name for p in stubs)
    assert names == ["numpy-2.0.0-py3-none-any.whl", "nvidia_nccl_cu12-2.18-py3-none-any.whl",
                     "torch-2.5.0-py3-none-any.whl"]  # fmt: skip
    with zipfile.ZipFile(stubs[0]) as zf:
        assert "Version: 2.0.0" in zf.read("numpy-2.0.0.dist-info/METADATA").decode()


# --------------------------------------------------------------------------- metadata rules


def _kernel(tmp_path: Path, family: str, enable_gpu, **extra) -> Path:
    kdir = tmp_path / "k"
    kdir.mkdir()
    meta = {"id": "testuser/lmsys-arena-k", "title": "lmsys arena k", "code_file": "k.py", "language": "python",
            "kernel_type": "script", "is_private": True, "enable_gpu": enable_gpu, "enable_internet": False,
            "machine_shape": "NvidiaTeslaT4", "competition_sources": ["lmsys-chatbot-arena"],
            "dataset_sources": [], "model_sources": [], **extra}  # fmt: skip
    (kdir / "kernel-metadata.json").write_text(json.dumps(meta))
    (kdir / "k.py").write_text("print('hi')\n")
    plan = {"name": "k", "root": "r", "runs": {"r": {"family": family, "folds": [0]}}}
    (kdir / "kernel_plan.json").write_text(json.dumps(plan))
    return kdir


def test_gbdt_only_kernel_may_run_without_a_gpu(tmp_path):
    res = metadata_check.check_metadata(_kernel(tmp_path, "gbdt", False), tmp_path / "datasets")
    assert res.ok, res.problems


def test_gpu_plan_requires_enable_gpu(tmp_path):
    res = metadata_check.check_metadata(_kernel(tmp_path, "llm", False), tmp_path / "datasets")
    assert any("enable_gpu" in p and "GPU family" in p for p in res.problems), res.problems
    (tmp_path / "k2").mkdir()
    ok = metadata_check.check_metadata(_kernel(tmp_path / "k2", "llm", True), tmp_path / "datasets")
    assert ok.ok, ok.problems


def test_docker_image_pinning_type(tmp_path):
    for i, (value, good) in enumerate([("original", True), ("latest", True), ("newest", False)]):
        base = tmp_path / str(i)
        base.mkdir()
        res = metadata_check.check_metadata(_kernel(base, "gbdt", False, docker_image_pinning_type=value), base / "ds")
        assert res.ok is good, (value, res.problems)


# --------------------------------------------------------------------------- make submit


def test_submit_without_credentials_raises_and_runs_nothing(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    with pytest.raises(KernelError, match="no Kaggle credentials.*nothing was submitted"):
        push.submit("blend", version=3, out=tmp_path / "kernels")
    assert calls == []


def test_submit_needs_a_version(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "testuser")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-key")
    calls = []
    monkeypatch.setattr(push, "_kaggle", lambda *a, **k: calls.append(a))
    kdir = _kernel(tmp_path, "gbdt", False)
    with pytest.raises(KernelError, match="make push"):
        push.submit("k", out=tmp_path)
    (kdir / push.PUSHED_FILE).write_text(json.dumps({"id": "testuser/lmsys-arena-k", "version": 7}))
    push.submit("k", out=tmp_path, message="m")
    assert calls == [("competitions", "submit", "lmsys-chatbot-arena", "-k", "testuser/lmsys-arena-k", "-v", "7",
                      "-f", "submission.csv", "-m", "m")]  # fmt: skip


def test_a_shipped_torch_must_meet_the_packages_floor(monkeypatch):
    old = replace(IMAGES["original-torch"], name="old-torch", torch=("torch==2.1.2",))
    monkeypatch.setitem(IMAGES, "old-torch", old)
    with pytest.raises(KernelError, match=r"old-torch image ships torch==2.1.2, which misses torch>=2.6"):
        requirements.kernel_requirements("old-torch")
