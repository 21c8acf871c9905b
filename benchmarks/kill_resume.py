"""kill -9 at random points of `train`, `infer` and `ensemble`, then the same command again: the outputs must
equal an uninterrupted run's byte for byte (GBDT runs) and no temporary file may be left.

    python benchmarks/kill_resume.py [--data input/sample] [--rows 300] [--kills 8] [--seed 0]

Baseline (the same run): each command uninterrupted, in a fresh project folder. Then, per kill, a fresh project
where the command is killed (SIGKILL) after a random delay in [0, its uninterrupted duration] and rerun until
it exits 0. Prints, per command: kills that hit mid-run, identical outputs, stray temporary files.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project(data: Path, rows: int) -> Path:
    """A project folder with the first ``rows`` train rows of ``data`` as input/mini and its folds."""
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    mini = tmp / "input" / "mini"
    mini.mkdir(parents=True)
    pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False).head(rows).to_csv(mini / "train.csv", index=False)
    for f in ("test.csv", "sample_submission.csv"):
        shutil.copy(data / f, mini / f)
    cli(tmp, ["folds", "--data", "input/mini", "--folds", "3"])
    return tmp


def cli(cwd: Path, args: list[str], kill_after: float | None = None) -> int:
    cmd = [sys.executable, "-m", "lmsys_arena", "--log-level", "ERROR", *args]
    env = {"LMSYS_CACHE": str(cwd / "cache"), "PATH": "/usr/bin:/bin"}
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return p.wait(timeout=kill_after) if kill_after is not None else p.wait()
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return -9


STEPS = {
    "train": ["train", "--data", "input/mini", "--model", "xgb", "--run", "x", "--set", "num_boost_round=60",
              "--set", "threads=1"],
    "infer": ["infer", "--run", "x"],
    "ensemble": ["ensemble", "--runs", "x", "--name", "b"],
}  # fmt: skip


def outputs(root: Path) -> dict[str, bytes]:
    keep = ("runs", "submissions")
    skip = ("config.json", "run.log")  # config.json records versions/time-free provenance; run.log grows per command
    return {p.relative_to(root).as_posix(): p.read_bytes() for d in keep for p in sorted((root / d).rglob("*"))
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}  # fmt: skip


def strays(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for d in ("runs", "submissions") for p in (root / d).rglob(".*")
            if not p.name.endswith(".lock")]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "input" / "sample")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    print(f"data {a.data} ({a.rows} rows), {a.kills} kills per command")
    base = project(a.data, a.rows)
    durations = {}
    for name, args in STEPS.items():
        t0 = time.time()
        assert cli(base, args) == 0, name
        durations[name] = time.time() - t0
    want = outputs(base)
    print("baseline: " + ", ".join(f"{k} {v:.1f}s" for k, v in durations.items()) + f", {len(want)} files")
    for name in STEPS:
        hit = same = 0
        stray: list[str] = []
        for _ in range(a.kills):
            root = project(a.data, a.rows)
            for before in list(STEPS)[: list(STEPS).index(name)]:
                assert cli(root, STEPS[before]) == 0
            rc = cli(root, STEPS[name], kill_after=rng.uniform(0.0, durations[name]))
            hit += rc == -9
            while cli(root, STEPS[name]) != 0:
                pass
            for after in list(STEPS)[list(STEPS).index(name) + 1 :]:
                assert cli(root, STEPS[after]) == 0
            same += outputs(root) == want
            stray += strays(root)
            shutil.rmtree(root)
        print(f"{name}: {hit}/{a.kills} kills hit mid-run, {same}/{a.kills} identical outputs, stray files {stray}")
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
