"""docs/figures/mlflow_ui.png: `mlflow ui` on a small sweep, photographed by headless Chromium.

Trains a sweep (2 optimizers x 2 seeds, 12 epochs of the digits MLP) into a scratch folder with
logger=mlflow, serves its store with `mlflow ui`, opens the experiment's chart view in Chromium
(through Selenium and chromedriver), waits until the charts have drawn and saves the page.

Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and
Selenium (pip install selenium; not a requirement of the project):

    .venv/bin/python docs/mlflow_screenshot.py [docs/figures/mlflow_ui.png]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "optimizer=momentum,adam", "seed=0,1", "epochs=12", "logger=mlflow",
         "trainer.progress=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs/figures/mlflow_ui.png")
    with tempfile.TemporaryDirectory() as scratch:
        # run there, so that the store is the default one (outputs/mlflow/mlflow.db)
        subprocess.run([sys.executable, str(ROOT / "train.py"), *SWEEP], cwd=scratch,
                       check=True, capture_output=True)
        db = Path(scratch) / "outputs" / "mlflow" / "mlflow.db"
        port = free_port()
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui",
                                   "--backend-store-uri", f"sqlite:///{db}", "--port",
                                   str(port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if time.time() > deadline:
                        sys.exit("mlflow ui did not answer in 60 s")
                    time.sleep(0.5)
            options = webdriver.ChromeOptions()
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1500,950"):
                options.add_argument(arg)
            browser = webdriver.Chrome(options=options)
            try:
                browser.get(f"{url}/#/experiments/1/runs?compareRunsMode=CHART")
                time.sleep(6)
                for close in browser.find_elements(By.CSS_SELECTOR,
                                                   "[aria-label*='Close'], [title*='Close']"):
                    if close.is_displayed():  # the assistant's side panel
                        close.click()
                search = browser.find_element(By.CSS_SELECTOR,
                                              "input[placeholder*='Search metric charts']")
                search.send_keys("epoch/val_acc")
                time.sleep(8)  # the charts fetch their series and draw
                webdriver.ActionChains(browser).move_to_element(search).perform()  # no hover
                out.parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(out))
            finally:
                browser.quit()
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
