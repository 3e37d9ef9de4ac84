"""Take the README screenshots of the dashboard and the record-status grid on demo data.

    .venv/bin/dtx demo --protocol protocols/library/cognitive_impairment.yaml \\
        --participants 120 --out out/demo
    export DATABASE_URL=sqlite:///out/demo/demo.sqlite
    .venv/bin/dtx users set-password sim-mci-cogtrain-01-data-manager --password '...'
    DTX_SHOT_PASSWORD='...' .venv/bin/python dtx_trials/web/screenshots/take.py \\
        sim-mci-cogtrain-01-data-manager

Serves the app on a free local port, signs in with Debian's chromium (Playwright), saves
``dashboard.png`` and ``record-grid.png`` here (1280 px wide, palette PNG to keep them small).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from dtx_trials import create_app

HERE = Path(__file__).resolve().parent
TRIAL = "MCI-COGTRAIN-01"


def _small(path: Path, height: int) -> None:
    image = Image.open(path).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, height)))
    image.quantize(colors=64).save(path, optimize=True)


def main(username: str) -> None:
    app = create_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
            )
            page = browser.new_context(
                viewport={"width": 1280, "height": 900}, locale="en-US"
            ).new_page()
            page.goto(f"{base}/login")
            page.fill("#username", username)
            page.fill("#password", os.environ["DTX_SHOT_PASSWORD"])
            with page.expect_navigation():
                page.click("main button[type=submit]")
            page.goto(f"{base}/trials/{TRIAL}")
            page.wait_for_selector("svg.chart")
            page.screenshot(path=str(HERE / "dashboard.png"), full_page=True)
            _small(HERE / "dashboard.png", 1500)
            page.goto(f"{base}/trials/{TRIAL}/records?per_page=25")
            page.screenshot(path=str(HERE / "record-grid.png"), full_page=True)
            _small(HERE / "record-grid.png", 1100)
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "monitor")
