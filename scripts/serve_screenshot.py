"""Screenshot of the `make serve` page after a prediction (docs/img/serve.png, 1280x1000, headless Chromium).

    .venv/bin/python scripts/serve_screenshot.py --run xgb-sample [--row ID] [--out docs/img/serve.png]

Starts `python -m lmsys_arena serve` on a free port (or uses --url of a running one), picks a row of the run's
train data (--row, else the first two-turn row), predicts it and saves the window. Needs the serve extra and
the system's chromium + chromedriver (apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen | None, limit: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer within {limit:.0f}s")


def first_two_turn_row(run: str) -> str:
    from lmsys_arena.runs import RUNS_DIR, Run

    _cfg, spec = Run(RUNS_DIR / run).model_config()
    rows = spec.competition().train()
    two = rows[rows["prompt"].map(len) == 2]
    return str((two if len(two) else rows)["id"].iat[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="xgb-sample")
    ap.add_argument("--row", default=None, help="row id of the run's train data (default: the first two-turn row)")
    ap.add_argument("--url", default=None, help="a running server (default: start one)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "serve.png"))
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    proc = None
    url = args.url
    if url is None:
        port = free_port()
        cmd = [sys.executable, "-m", "lmsys_arena", "serve", "--run", args.run, "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        url = f"http://127.0.0.1:{port}/"
    url = url.rstrip("/") + "/"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        opts.add_argument(arg)
    driver = None
    try:
        wait_up(url, proc)
        driver = webdriver.Chrome(
            service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts
        )
        driver.set_window_size(1280, 1000)
        driver.get(url)
        box = driver.find_element(By.ID, "row_id")
        box.send_keys(args.row or first_two_turn_row(args.run))
        driver.find_element(By.ID, "predict_row").click()
        WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.ID, "p_a")))  # the answer page
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"{args.out}: P(A)={driver.find_element(By.ID, 'p_a').text} from {url}")
    finally:
        if driver is not None:
            driver.quit()
        if proc is not None:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
