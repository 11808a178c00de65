"""A prediction service (FastAPI on uvicorn): ``resnets serve CHECKPOINT_OR_NAME``.

| route           | what                                                                            |
|-----------------|---------------------------------------------------------------------------------|
| `GET /`         | a web page: drop or pick an image, see the top-5 classes and the Grad-CAM map   |
| `POST /predict` | one or more images (multipart field `files`), top-k classes and probabilities   |
| `POST /explain` | one image (field `file`): top-k and the Grad-CAM heatmap as a PNG (base64)      |
| `GET /health`   | `{"status": "ok"}`                                                              |
| `GET /info`     | model, classes, input size, limits and batching counters                        |

Concurrent requests are grouped into batches by ``Batcher``: the first waiting image opens a batch,
which closes when it holds ``max_batch`` images or ``max_wait_ms`` has passed. An upload over
``max_upload_mb`` gets 413, a file that is not an image 415, any other bad request 400, each with a
JSON body ``{"error": "..."}``; the server keeps serving.
"""

import asyncio
import base64
import contextlib
import errno
import math
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import torch

from ..data.folder import unreadable
from ..engine.evaluate import Predictor
from ..errors import ResnetsError
from ..models.source import Checkpoint

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ServeConfig:
    max_batch: int = 32  # images run together at most
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_upload_mb: float = 8.0  # per file
    max_files: int = 32  # per request
    topk: int = 5


class Batcher:
    """Collects images from concurrent requests and runs them through the predictor in batches."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait_s: float) -> None:
        self.predictor, self.max_batch, self.max_wait_s = predictor, max_batch, max_wait_s
        self.queue: asyncio.Queue[tuple[torch.Tensor, int, asyncio.Future]] = asyncio.Queue()
        self.batches = 0
        self.images = 0
        self.largest = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def predict(self, image: torch.Tensor, topk: int) -> list[tuple[str, float]]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, topk, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            images = torch.stack([b[0] for b in batch])
            topk = max(b[1] for b in batch)
            try:
                tops = await loop.run_in_executor(None, self.predictor.predict_tensor, images, topk)
            except Exception as e:  # a failed batch fails its requests, not the server
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.images += len(batch)
            self.largest = max(self.largest, len(batch))
            for (_, k, future), top in zip(batch, tops):
                if not future.done():
                    future.set_result(top[:k])


def explain(predictor: Predictor, image: torch.Tensor, topk: int) -> dict[str, Any]:
    """Top-k classes and the Grad-CAM heatmap (over the image, PNG, base64) of one uint8 image."""
    from ..analysis.gradcam import explain as grad_cam_explain, overlay, png_bytes

    result = grad_cam_explain(predictor, image, topk=topk)
    return {"top": [{"class": c, "prob": round(p, 6)} for c, p in result.top], "explained": result.explained,
            "heatmap_png": base64.b64encode(png_bytes(overlay(result.picture, result.cam), size=256)).decode()}


class Rejected(Exception):
    """A request refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def check_topk(topk: int) -> int:
    if not 1 <= topk <= 100:
        raise Rejected(400, f"topk must be between 1 and 100, got {topk}")
    return topk


async def read_images(files: list[Any], predictor: Predictor, cfg: ServeConfig) -> list[tuple[str, torch.Tensor]]:
    """The uploaded files as ``(name, uint8 image)``, each within the size limit and decodable."""
    limit = int(cfg.max_upload_mb * 2**20)
    if not files:
        raise Rejected(400, "no image: send multipart form data with one or more 'files'")
    if len(files) > cfg.max_files:
        raise Rejected(413, f"{len(files)} files in one request; the limit is {cfg.max_files}")
    out = []
    for f in files:
        if not hasattr(f, "read"):
            raise Rejected(400, "the form fields must be files")
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise Rejected(413, f"{f.filename}: larger than the {cfg.max_upload_mb:g} MB limit")
        try:
            out.append((f.filename or "image", predictor.load(data)))
        except Exception as e:
            raise Rejected(415, f"{f.filename}: {unreadable(e)}") from None
    return out


def create_app(predictor: Predictor, cfg: ServeConfig | None = None, name: str = "model") -> Any:
    """The FastAPI application serving ``predictor``: the page, ``/health``, ``/info``, ``/predict`` and
    ``/explain``, with requests over the limits refused before they are read."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
    except ImportError:
        raise ResnetsError("the server needs FastAPI and uvicorn: pip install 'resnets[serve]'") from None

    cfg = cfg or ServeConfig()
    state: dict[str, Any] = {"started": time.time(), "requests": 0, "errors": 0}
    batcher = Batcher(predictor, cfg.max_batch, cfg.max_wait_ms / 1e3)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="resnets", lifespan=lifespan)

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> JSONResponse:
        state["errors"] += 1
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.middleware("http")
    async def _size_guard(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_upload_mb * 2**20 * cfg.max_files + 2**16:
            state["errors"] += 1
            return JSONResponse({"error": f"request of {int(length)} bytes is over the limit"}, status_code=413)
        return await call_next(request)

    _add_routes(app, predictor, cfg, batcher, state, name)
    return app


def _add_routes(app: Any, predictor: Predictor, cfg: ServeConfig, batcher: Batcher, state: dict[str, Any],
                name: str) -> None:
    from fastapi import Request, UploadFile
    from starlette.exceptions import HTTPException
    from fastapi.responses import HTMLResponse

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"model": name, "mode": predictor.mode, "classes": predictor.classes,
                "input_size": predictor.image_size, "in_chans": predictor.in_chans, "limits": asdict(cfg),
                "served": {"requests": state["requests"], "errors": state["errors"], "batches": batcher.batches,
                           "images": batcher.images, "largest_batch": batcher.largest,
                           "uptime_s": round(time.time() - state["started"], 1)}}

    @app.post("/predict", responses=ERRORS, openapi_extra=_FILES)
    async def predict(request: Request, topk: int = cfg.topk) -> dict[str, Any]:
        check_topk(topk)
        try:
            form = await request.form(max_files=cfg.max_files + 1)
        except HTTPException as e:  # starlette's refusal of a malformed or oversized form: our error shape
            raise Rejected(e.status_code, str(e.detail)) from None
        images = await read_images(form.getlist("files") + form.getlist("file"), predictor, cfg)
        tops = await asyncio.gather(*(batcher.predict(img, topk) for _, img in images))
        state["requests"] += 1
        return {"predictions": [{"file": n, "top": [{"class": c, "prob": round(p, 6)} for c, p in top]}
                                for (n, _), top in zip(images, tops)]}

    @app.post("/explain", responses=ERRORS)
    async def explain_route(file: UploadFile, topk: int = cfg.topk) -> dict[str, Any]:
        check_topk(topk)
        ((fname, image),) = await read_images([file], predictor, cfg)
        result = await asyncio.get_running_loop().run_in_executor(None, explain, predictor, image, topk)
        state["requests"] += 1
        return {"file": fname, **result}


_ERROR = {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}},
                                          "required": ["error"]}}}
# the answers besides 200 that the routes give, as their OpenAPI schema says (FastAPI adds 422 itself)
ERRORS = {400: {"description": "no image, a bad topk, too many files, or a malformed form", "content": _ERROR},
          413: {"description": "a file or the request over the size limit", "content": _ERROR},
          415: {"description": "a file that is not an image", "content": _ERROR}}
# /predict reads its form itself (to bound the number of files before parsing): its body, as a schema
_FILES = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


def serve(source: str | Checkpoint, host: str = "127.0.0.1", port: int = 8000, cfg: ServeConfig | None = None,
          mode: str = "auto") -> None:
    """Run the service for a checkpoint, a weights file or a shipped weights name until interrupted."""
    if not 0 <= port <= 65535:
        raise ResnetsError(f"port must be in 0..65535, got {port}")
    check_address(host, port)  # before the network loads: a port in use is said at once, in one line
    predictor = Predictor(source, mode=mode, images=math.inf)  # a server's work is open-ended: compiling pays
    app = create_app(predictor, cfg, name=Path(str(source)).stem)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")


def check_address(host: str, port: int) -> None:
    """A ``ResnetsError`` naming the fix where the server could not listen on ``host``:``port`` (a name that
    does not resolve, an address not of this machine, a port in use or reserved), found by binding it as
    uvicorn will (with ``SO_REUSEADDR``, so a port a stopped server left waiting is free)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            fix = "choose another --port, or stop the program listening there"
        elif e.errno == errno.EACCES and port < 1024:
            fix = "choose a --port of 1024 or more (the ones below need administrator rights)"
        else:
            fix = "give --host an address of this machine (127.0.0.1 for this machine only, 0.0.0.0 for all)"
        raise ResnetsError(f"cannot listen on {host}:{port}: {e.strerror or e}; {fix}") from None
