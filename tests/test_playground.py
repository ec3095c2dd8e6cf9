"""The playground page of serve.py in a real browser: headless Chromium (Debian's chromium + chromium-driver,
driven with Selenium) opens the page, writes a story and shows its finish reason. Skipped, saying why, only where
Chromium is not installed."""
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, STORIES

from regional_tinystories import checkpoint
from regional_tinystories import tokenizer as tk
from regional_tinystories.model import GPT, ModelConfig

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Chromium is not installed (apt-get install chromium chromium-driver)")


def tiny_checkpoint(folder, name):
    tok = tk.train_tokenizer(tk.parse_name("sp-bpe:512"), STORIES * 4, str(folder / f"tok-{name}"))
    torch.manual_seed(sum(map(ord, name)))  # a different model for each name
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32))
    path = folder / name / "ckpt_best.pt"
    path.parent.mkdir()
    checkpoint.save_atomic({"model_args": model.model_args(), "model": model.state_dict(), "tokenizer": tk.export(tok),
                            "config": {"dataset": "demo-hindi"}}, str(path))
    return str(path.parent)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playground")
    runs = [tiny_checkpoint(folder, "hindi-a"), tiny_checkpoint(folder, "hindi-b")]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "training-inference", "serve.py"),
                             f"--init_from={','.join(runs)}", "--model_name=hindi-a,hindi-b", "--port=0",
                             "--dtype=float32", "--max_tokens_limit=64"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = ""
    deadline = time.monotonic() + 60
    while "serving" not in line:
        line = proc.stderr.readline()
        assert line and time.monotonic() < deadline, "serve.py did not start"
    yield line.split(" at ")[1].split()[0].removesuffix("/v1") + "/"
    proc.terminate()
    proc.wait(timeout=10)
    proc.stderr.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no driver download: Debian's
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def test_the_page_streams_a_story_and_shows_the_finish_reason(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    browser.get(page_url)
    opening = browser.find_element(By.ID, "opening")
    assert opening.get_attribute("lang") == "hi" and opening.get_attribute("value")  # a random Hindi opening
    opening.clear()
    opening.send_keys("एक दिन छोटी मीरा")
    browser.find_element(By.ID, "generate").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "meta-0").get_attribute("data-finish"))
    meta = browser.find_element(By.ID, "meta-0").text
    story = browser.find_element(By.ID, "story-0")
    assert story.get_attribute("lang") == "hi"
    assert story.text.startswith("एक दिन छोटी मीरा") and len(story.text) > len("एक दिन छोटी मीरा")
    assert "finish reason: " in meta and "tokens/s" in meta
    assert browser.find_element(By.ID, "meta-0").get_attribute("data-finish") in ("stop", "length")
    browser.save_screenshot(str(tmp_path / "playground.png"))
    assert (tmp_path / "playground.png").stat().st_size > 10_000


def test_two_models_side_by_side_on_the_same_opening_and_seed(page_url, browser):
    from selenium.webdriver.common.by import By
    browser.get(page_url)
    browser.find_element(By.ID, "compare").click()
    browser.find_element(By.ID, "generate").click()
    for i in (0, 1):
        wait_for(browser, lambda d, i=i: d.find_element(By.ID, f"meta-{i}").get_attribute("data-finish"))
    a, b = (browser.find_element(By.ID, f"story-{i}").text for i in (0, 1))
    opening = browser.find_element(By.ID, "opening").get_attribute("value")
    assert a.startswith(opening) and b.startswith(opening) and a != b  # two different models


def test_bad_settings_are_refused_by_the_server_not_the_page(page_url, browser):
    from selenium.webdriver.common.by import By
    browser.get(page_url)
    browser.execute_script("document.getElementById('temperature').max = 50;"
                           "document.getElementById('temperature').value = 50;")
    browser.find_element(By.ID, "generate").click()
    wait_for(browser, lambda d: "error" in d.find_element(By.ID, "meta-0").text)
    assert "temperature must be between 0 and 2" in browser.find_element(By.ID, "meta-0").text
