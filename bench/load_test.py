"""Load test of the prediction server on the loopback interface: N concurrent clients, bounded in
requests and time, each posting one image per request.

    python bench/load_test.py --model resnet20_cifar10 --clients 1 8 32 --requests 400 --seconds 60

Starts ``resnets serve`` on 127.0.0.1 (a free port), reports requests/s, p50/p99 latency, errors and
the server's batching counters for each client count, and writes bench/results/load_test.json.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

from resnets.machine import machine_info

from common import RESULTS, write_result



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(field: str, name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "resnets-load-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int,
                                                                                                             bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if request(port, "GET", "/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def random_pngs(sizes: list[int], seed: int = 0) -> list[bytes]:
    """Noise images of these sizes (square, RGB), PNG-encoded: request bodies that cost a real decode."""
    rng = np.random.default_rng(seed)
    images = []
    for size in sizes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append(buf.getvalue())
    return images


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, the nearest rank."""
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_clients(port: int, images: list[bytes], clients: int, total: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    sent = iter(range(total))
    end = time.time() + seconds

    def client(k: int) -> None:
        nonlocal errors
        while time.time() < end:
            with lock:
                i = next(sent, None)
            if i is None:
                return
            body, ctype = multipart("files", f"{i}.png", images[(i + k) % len(images)])
            t0 = time.perf_counter()
            try:
                status, _ = request(port, "POST", "/predict", body, ctype)
            except OSError:
                status = 0
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                errors += status != 200

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(1e3 * statistics.median(ordered), 1),
            "p99_ms": round(1e3 * percentile(ordered, 0.99), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20_cifar10", help="checkpoint, weights file or shipped name")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=400, help="requests per client count, at most")
    p.add_argument("--seconds", type=float, default=60, help="time per client count, at most")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    images = random_pngs([32] * 16)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "serve", args.model, "--port", str(port),
                             "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        rows = []
        for n in args.clients:
            before = json.loads(request(port, "GET", "/info")[1])["served"]
            row = run_clients(port, images, n, args.requests, args.seconds)
            after = json.loads(request(port, "GET", "/info")[1])["served"]
            batches = after["batches"] - before["batches"]
            row["mean_batch"] = round((after["images"] - before["images"]) / max(batches, 1), 1)
            rows.append(row)
            print(json.dumps(row))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    record = {"command": "python bench/load_test.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
              "model": args.model, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "results": rows}
    write_result("load_test", record, args.out, echo=False)


if __name__ == "__main__":
    main()
