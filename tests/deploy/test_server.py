"""The prediction service: routes, limits, batching of concurrent requests, Grad-CAM."""
import asyncio
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import resnets  # noqa: E402
from resnets import Predictor  # noqa: E402
from resnets.deploy.server import Batcher, ServeConfig, create_app, serve  # noqa: E402


def png(size=32, seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor(tree_run):
    return Predictor(tree_run[1], mode="fused")


@pytest.fixture
def client(predictor):
    with TestClient(create_app(predictor, ServeConfig(max_upload_mb=0.01, max_files=4), name="tree")) as c:
        yield c


def test_health_and_info(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["model"] == "tree" and info["classes"] == ["cat", "dog", "fox"] and info["input_size"] == 32
    assert info["mode"] == "fused"  # the inference mode it runs
    assert "<input" in client.get("/").text


def test_predict_one_and_several(client, predictor):
    r = client.post("/predict", files={"files": ("a.png", png(), "image/png")})
    assert r.status_code == 200
    (pred,) = r.json()["predictions"]
    assert pred["file"] == "a.png" and [t["class"] for t in pred["top"]] == [c for c,
                                                                             _ in predictor.predict([png()])[0]]
    assert sum(t["prob"] for t in pred["top"]) == pytest.approx(1.0, abs=1e-4)
    r = client.post("/predict?topk=2", files=[("files", (f"{i}.png", png(seed=i), "image/png")) for i in range(3)])
    assert [len(p["top"]) for p in r.json()["predictions"]] == [2, 2, 2]


def test_bad_requests_get_json_errors_and_the_server_keeps_serving(client):
    big = png(size=128)  # noise PNG, over the 10 KB limit of this app
    assert len(big) > 0.01 * 2**20
    r = client.post("/predict", files={"files": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post("/predict", files={"files": ("notes.txt", b"not an image at all", "text/plain")})
    assert r.status_code == 415 and r.json()["error"] == "notes.txt: not a recognised image file"
    r = client.post("/predict", files={"files": ("cut.png", png()[:60], "image/png")})
    assert r.status_code == 415
    assert client.post("/predict", data={"x": "1"}).status_code == 400
    assert client.post("/predict?topk=0", files={"files": ("a.png", png(), "image/png")}).status_code == 400
    r = client.post("/predict", files=[("files", (f"{i}.png", png(), "image/png")) for i in range(5)])
    assert r.status_code == 413
    assert client.get("/health").status_code == 200
    assert client.post("/predict", files={"files": ("a.png", png(), "image/png")}).status_code == 200
    assert client.get("/info").json()["served"]["errors"] >= 6


def test_explain_returns_a_heatmap(client):
    r = client.post("/explain", files={"file": ("a.png", png(), "image/png")})
    assert r.status_code == 200
    body = r.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert image.size == (256, 256) and body["explained"] == body["top"][0]["class"]


def test_concurrent_requests_are_batched(predictor):
    async def go():
        batcher = Batcher(predictor, max_batch=8, max_wait_s=0.2)
        batcher.start()
        images = [predictor.load(png(seed=i)) for i in range(12)]
        tops = await asyncio.gather(*(batcher.predict(img, 3) for img in images))
        await batcher.stop()
        return batcher, tops

    batcher, tops = asyncio.run(go())
    assert batcher.images == 12 and batcher.batches == 2 and batcher.largest == 8
    expected = predictor.predict_tensor(torch.stack([predictor.load(png(seed=i)) for i in range(12)]), 3)
    assert [[c for c, _ in t] for t in tops] == [[c for c, _ in t] for t in expected]


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_is_refused_before_anything_loads(port):
    with pytest.raises(resnets.ResnetsError, match=f"port must be in 0..65535, got {port}"):
        serve("no-such-checkpoint.pt", port=port)  # the checkpoint would be a different error


def test_an_address_it_cannot_listen_on_is_one_line_before_anything_loads():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(resnets.ResnetsError, match=f"127.0.0.1:{port}: Address already in use; choose another"):
            serve("no-such-checkpoint.pt", port=port)  # the checkpoint would be a different error
    with pytest.raises(resnets.ResnetsError, match="192.0.2.1:8000: .*; give --host an address of this machine"):
        serve("no-such-checkpoint.pt", host="192.0.2.1")  # a documentation address, of no machine
