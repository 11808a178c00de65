"""The web page, end to end in a real headless Chromium against a server started on 127.0.0.1."""
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tree_run):
    from resnets import Predictor
    from resnets.deploy.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Predictor(tree_run[1], mode="fused"), name="tree")
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


def test_pick_an_image_and_see_bars_and_heatmap(server, tmp_path):
    picture = tmp_path / "fox.png"
    Image.fromarray(np.full((32, 32, 3), (200, 90, 30), dtype=np.uint8)).save(picture)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("#meta:has-text('3 classes')")
        page.set_input_files("#file", str(picture))
        page.wait_for_selector("#result.shown", timeout=30_000)
        names = page.locator("#bars .name").all_inner_texts()
        widths = page.locator("#bars .bar").evaluate_all("bars => bars.map(b => parseFloat(b.style.width))")
        assert sorted(names) == ["cat", "dog", "fox"]
        assert widths == sorted(widths, reverse=True) and abs(sum(widths) - 100) < 1
        src = page.get_attribute("#heatmap", "src")
        assert src.startswith("data:image/png;base64,")
        assert page.evaluate("document.getElementById('heatmap').naturalWidth") == 256
        page.screenshot(path=str(tmp_path / "page.png"))

        bad = tmp_path / "notes.png"
        bad.write_bytes(b"this is text, not a picture")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#error:has-text('notes.png: not a recognised image file')", timeout=30_000)
        browser.close()
