"""The config schema through the real CLI: a misspelt or mistyped key anywhere fails before any data is
read, with exit code 3 and one line naming the key, where it came from and the closest valid names;
``base:`` inheritance; ``config`` prints the resolved config; the generated reference is up to date.

    .venv/bin/python -m pytest tests/test_config.py
"""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmsys_arena.cli import main
from lmsys_arena.config import CONFIG_DIR, load_config

ROOT = Path(__file__).resolve().parents[1]
NO_DATA = "/nonexistent/data"  # a config error must come before anything reads the data


def fails(caplog, argv: list[str], code: int = 3) -> str:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="lmsys_arena"), pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code, caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


def train(model: str, *sets: str) -> list[str]:
    return ["train", "--data", NO_DATA, "--model", model, *[a for s in sets for a in ("--set", s)]]


@pytest.mark.parametrize(
    "model, override, key, closest",
    [
        ("xgb", "num_boost_rounds=500", "num_boost_rounds", "num_boost_round"),  # a GBDT key
        ("tiny", "formt.max_len=256", "formt", "format"),  # an LLM section
        ("tiny", "model.lora.rr=4", "model.lora.rr", "model.lora.r"),  # a lora member
        ("tiny", "model.head.layer=2", "model.head.layer", "model.head.layers"),  # a head member
        ("tiny", "model.aux.hiden=8", "model.aux.hiden", "model.aux.hidden"),  # an aux member
        ("lgbm", "tune.prunner=none", "tune.prunner", "tune.pruner"),  # a tune setting
        ("tiny", "train.lrr=1e-3", "train.lrr", "train.lr"),  # a train option
        ("tiny", "infer.max_token=4096", "infer.max_token", "infer.max_tokens"),  # an infer option
    ],
)
def test_misspelt_key_names_the_key_the_source_and_the_closest(caplog, model, override, key, closest):
    msg = fails(caplog, train(model, override))
    assert f"--set {override}" in msg and f"unknown key {key!r}" in msg and f"did you mean {closest!r}" in msg


@pytest.mark.parametrize(
    "model, override, words",
    [
        ("xgb", "params.max_depth=abc", "params.max_depth: must be an integer, got 'abc'"),
        ("xgb", "num_boost_round=many", "num_boost_round must be an integer, got 'many'"),
        ("tiny", "train.lr=fast", "train.lr must be a number, got 'fast'"),
        ("tiny", "train.swap=maybe", "train.swap must be one of 'none', 'random', 'both', got 'maybe'"),
        ("tiny", "model.softcap=3", "model.softcap must be true or false, got 3"),
        ("tiny", "model.compile=max", "model.compile must be true or false or one of 'cudagraphs', got 'max'"),
        ("tiny", "format=1024", "format must be a mapping of options, got 1024"),
        ("tiny", "model.aux.features=[nope_*]", "match no feature"),
        ("tiny", "train.text_loss=-1", "train.text_loss: must be >= 0"),
        ("xgb", "backend=catboost", "backend must be one of 'xgboost', 'lightgbm', got 'catboost'"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(caplog, model, override, words):
    msg = fails(caplog, train(model, override))
    assert f"--set {override}" in msg and words in msg, msg


def test_yaml_string_numbers_are_numbers():
    assert load_config("tiny", {"train.lr": "4e-4"})["train"]["lr"] == 4e-4  # YAML 1.1 reads 4e-4 as a string


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_misspelt_key_in_a_file_names_the_file(caplog, tmp_path):
    cfg = write(tmp_path / "x.yaml", {"family": "gbdt", "early_stoping_rounds": 10})
    msg = fails(caplog, train(str(cfg)))
    assert str(cfg) in msg and "'early_stopping_rounds'" in msg


def test_search_space_keys_are_config_keys(caplog, tmp_path):
    llm = write(
        tmp_path / "s.yaml",
        {"base": "tiny", "search_space": {"train.lrr": {"type": "float", "low": 1e-4, "high": 1e-3}}},
    )
    msg = fails(caplog, ["tune", "--data", NO_DATA, "--model", str(llm)])
    assert str(llm) in msg and "unknown key 'train.lrr'" in msg and "'train.lr'" in msg
    gb = write(
        tmp_path / "g.yaml", {"base": "xgb", "search_space": {"num_boost_rond": {"type": "int", "low": 1, "high": 9}}}
    )
    assert "did you mean 'num_boost_round'" in fails(caplog, ["tune", "--data", NO_DATA, "--model", str(gb)])
    spec = write(tmp_path / "t.yaml", {"base": "xgb", "search_space": {"params.eta": {"tyep": "float"}}})
    assert "search_space.params.eta" in fails(caplog, ["tune", "--data", NO_DATA, "--model", str(spec)])


def test_params_file_typo_names_the_params_file(caplog, tmp_path):
    params = write(tmp_path / "best.yaml", {"value": 0.7, "params": {"params.max_depth": 5, "num_boost_rund": 9}})
    msg = fails(caplog, ["train", "--data", NO_DATA, "--model", "xgb", "--params", str(params)])
    assert f"params file {params}" in msg and "'num_boost_round'" in msg


def test_family_and_config_name_errors(caplog, tmp_path):
    assert "must name its family" in fails(caplog, train(str(write(tmp_path / "n.yaml", {"params": {}}))))
    assert "unknown family 'catboost'" in fails(caplog, train(str(write(tmp_path / "c.yaml", {"family": "catboost"}))))
    assert "no config 'xgbb'; available:" in fails(caplog, train("xgbb"))
    assert "cycle" in fails(caplog, train(str(write(tmp_path / "loop.yaml", {"base": "loop.yaml"}))))


def test_base_inheritance_merges_sections(tmp_path):
    variant = write(
        tmp_path / "gemma3-270m-text.yaml",
        {"base": "gemma3-270m", "model": {"aux": {"features": None}}, "train": {"lr": 1e-4}},
    )
    cfg, base = load_config(variant), load_config("gemma3-270m")
    assert cfg["name"] == "gemma3-270m-text" and cfg["train"]["lr"] == 1e-4 and cfg["model"]["aux"]["features"] is None
    assert cfg["model"]["aux"]["source_bias"] and cfg["model"]["lora"] == base["model"]["lora"]  # merged, not replaced
    assert cfg["search_space"] == base["search_space"]


def test_every_shipped_config_resolves():
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = load_config(path.stem)
        assert cfg["name"] == path.stem and cfg["family"] in ("gbdt", "llm")


def test_config_command_prints_the_resolved_config(capsys):
    main(["config", "tiny", "--set", "train.lr=1e-3"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 1e-3 and cfg["infer"]["workers"] == 0  # a default the YAML file does not state
    assert cfg == load_config("tiny", {"train.lr": 1e-3})


def test_usage_errors_exit_2_and_log_level_after_the_command(caplog, capsys):
    assert "--only-folds" in fails(caplog, ["train", "--only-folds", "a", "--data", NO_DATA], code=2)
    with pytest.raises(SystemExit) as e:
        main(["score"])  # argparse: --run is required
    assert e.value.code == 2
    main(["config", "xgb", "--log-level", "WARNING"])
    assert "family: gbdt" in capsys.readouterr().out


def test_version_names_the_package_and_commit():
    out = subprocess.run([sys.executable, "-m", "lmsys_arena", "--version"], capture_output=True, text=True).stdout
    assert out.startswith("lmsys-arena ") and "(git " in out


def test_config_reference_is_up_to_date():
    from lmsys_arena.reference import markdown

    path = ROOT / "docs" / "config-reference.md"
    assert path.exists() and path.read_text() == markdown(), "stale: run `make docs`"


def test_a_family_without_its_extra_names_the_extra():
    from lmsys_arena.families import FamilyInfo

    fam = FamilyInfo("x", schema="", module="no_such_heavy_library_xyz", extra="llm")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lmsys-arena\[llm\]'"):
        fam.load()
