"""`make serve` end to end in a browser: an xgb run on 300 sample rows, the page served by `make serve` in a
subprocess, headless Chromium (the system's chromium + chromedriver, driven by selenium) filling the form.

The probabilities on the page must be `make infer`'s (runner.predict_rows) for the same battle, pasted or
picked by row id; an empty or mismatched form shows the error element, never a traceback.

    .venv/bin/python -m pytest tests/test_serve.py      # skipped without chromium, chromedriver or the serve extra
"""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lmsys_arena import runner
from lmsys_arena.config import load_config
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runs import Run
from lmsys_arena.serve.battle import SEPARATOR, form_texts

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)


def _missing() -> list[str]:
    mods = ("selenium", "fastapi", "uvicorn", "multipart")
    out = [f"the python package {m} (pip install -e '.[serve]')" for m in mods if importlib.util.find_spec(m) is None]
    if not CHROMIUM:
        out.append("chromium (apt-get install chromium)")
    if not CHROMEDRIVER:
        out.append("chromedriver (apt-get install chromium-driver)")
    if not shutil.which("make"):
        out.append("make")
    if not (ROOT / ".venv" / "bin" / "python").exists():
        out.append(".venv (make setup)")
    return out


MISSING = _missing()
pytestmark = pytest.mark.skipif(bool(MISSING), reason="the make serve browser test needs " + ", ".join(MISSING))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, log: Path, limit: float = 60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            pytest.fail(f"make serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"make serve did not answer within {limit:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_competition):
    """A trained xgb run (2 folds, 300 rows) and `make serve` on it; yields what the tests compare against."""
    tmp = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the feature cache of the reference predictions lands here
        data, folds = small_competition(tmp, 300, k=2)
        cfg = load_config("xgb", {"num_boost_round": 30, "early_stopping_rounds": 10, "threads": 1})
        run_dir = tmp / "runs" / "xgb-serve"
        runner.train_run(cfg, run_dir, RunSpec(data=str(data), folds_file=str(folds)))
        run = Run(run_dir)
        model_cfg, spec = run.model_config()
        rows = spec.competition().train()

        port, log = _free_port(), tmp / "serve.log"
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        # -o: never rebuild .venv from here (a pyproject.toml newer than the stamp would reinstall)
        cmd = ["make", "-C", str(ROOT), "-o", ".venv/.installed", "serve", f"RUN={run_dir}", f"PORT={port}"]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            _wait_up(url, proc, log)
            yield {"url": url, "run": run, "cfg": model_cfg, "rows": rows, "log": log}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # make and the server it started (their own session)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)  # no selenium-manager
    try:
        yield driver
    finally:
        driver.quit()


def _pick_row(rows):
    """A multi-turn row that the text format carries exactly (no CR, no `---` line), of modest length."""
    for i in range(len(rows)):
        row = rows.iloc[i]
        chars = sum(len(t) for f in ("prompt", "response_a", "response_b") for t in row[f])
        if len(row["prompt"]) >= 2 and chars < 6000 and form_texts(row)[0] == "text":
            return rows.iloc[[i]].reset_index(drop=True)
    pytest.fail("no multi-turn row without CR or '---' lines in the sample")


def _probs(driver, suffix: str = "") -> np.ndarray:
    from selenium.webdriver.common.by import By

    return np.array([float(driver.find_element(By.ID, f"p_{k}{suffix}").text) for k in ("a", "b", "tie")])


def _submit(driver, button: str = "predict") -> None:
    """Click ``button`` and wait for the answer page: a new document, without the old one's marker (waiting
    on an old element's staleness races in chromedriver)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__before_submit = 1;")
    driver.find_element(By.ID, button).click()
    new_page = "return window.__before_submit === undefined && document.readyState === 'complete';"
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(lambda d: d.execute_script(new_page))


def test_pasted_battle_matches_infer(served, browser):
    from selenium.webdriver.common.by import By

    row = _pick_row(served["rows"])
    browser.get(served["url"])
    browser.find_element(By.ID, "fmt_text").click()
    for f in ("prompt", "response_a", "response_b"):
        text = ("\n" + SEPARATOR + "\n").join(row[f].iat[0])
        browser.execute_script("arguments[0].value = arguments[1];", browser.find_element(By.ID, f), text)
    _submit(browser)
    assert not browser.find_elements(By.ID, "error"), browser.find_element(By.ID, "error").text
    want = runner.predict_rows(served["run"], served["cfg"], row)[0]
    np.testing.assert_allclose(_probs(browser), want, rtol=0, atol=1e-6)
    ab, ba = _probs(browser, "_ab"), _probs(browser, "_ba")
    np.testing.assert_allclose((ab + ba) / 2, want, rtol=0, atol=1e-6)  # swap-TTA: the mean of both orders
    contribs = browser.find_element(By.ID, "contribs").find_elements(By.TAG_NAME, "tr")
    assert len(contribs) > 5  # header + the top features
    # the form kept the texts: the same battle again gives the same numbers
    _submit(browser)
    np.testing.assert_allclose(_probs(browser), want, rtol=0, atol=1e-6)


def test_row_picker_matches_infer(served, browser):
    from selenium.webdriver.common.by import By

    row = served["rows"].iloc[[7]].reset_index(drop=True)
    browser.get(served["url"])
    box = browser.find_element(By.ID, "row_id")
    box.clear()
    box.send_keys(row["id"].iat[0])
    _submit(browser, "predict_row")
    want = runner.predict_rows(served["run"], served["cfg"], row)[0]
    np.testing.assert_allclose(_probs(browser), want, rtol=0, atol=1e-6)
    assert row["id"].iat[0] in browser.find_element(By.ID, "row_info").text
    fmt, texts = form_texts(row.iloc[0])
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == texts["prompt"]


def test_bad_input_shows_error(served, browser):
    from selenium.webdriver.common.by import By

    browser.get(served["url"])
    _submit(browser)  # every field empty
    assert "Prompt is empty" in browser.find_element(By.ID, "error").text
    assert not browser.find_elements(By.ID, "p_a")
    for f, text in (("prompt", f"one\n{SEPARATOR}\ntwo"), ("response_a", "a"), ("response_b", "b")):
        browser.execute_script("arguments[0].value = arguments[1];", browser.find_element(By.ID, f), text)
    _submit(browser)
    assert "turn counts differ: prompt 2, response A 1" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "fmt_json").click()
    _submit(browser)
    assert "Prompt: not valid JSON" in browser.find_element(By.ID, "error").text
    box = browser.find_element(By.ID, "row_id")
    box.send_keys("no-such-id")
    _submit(browser, "predict_row")
    assert "is not in the run's train data" in browser.find_element(By.ID, "error").text
    assert "Traceback" not in browser.page_source
    log = served["log"].read_text()
    assert "served pasted battle" in log and "refused pasted battle: Prompt is empty" in log
