"""Soak test of the prediction server on the loopback interface: hours of traffic in minutes' worth of evidence.

    python bench/soak.py --minutes 10 --clients 8 --slow-clients 2

Starts ``resnets serve`` on 127.0.0.1 and keeps ``--clients`` clients posting images for ``--minutes`` while
``--slow-clients`` more upload theirs in small pieces over seconds, and a monitor asks ``/health`` and reads
the server's resident memory every second. Then: an upload over the size limit and a decompression bomb
(a small PNG that declares 40,000 x 40,000 pixels) must be refused without raising memory, and SIGTERM while
requests are in flight must let them finish. Per minute: requests, errors, p50/p99 latency, resident memory,
health checks. A running training campaign is paused meanwhile. Writes bench/results/soak.json.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path


from resnets.machine import machine_info

from common import RESULTS, campaign_paused, write_result
from load_test import free_port, multipart, percentile, random_pngs, request, wait_ready


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bomb_png(side: int = 40_000) -> bytes:
    """A valid PNG header that declares ``side`` x ``side`` pixels over a few bytes of compressed zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    rows = zlib.compress(b"\0" * (side + 1) * 64)  # the first rows; the decoder would go on allocating
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def slow_post(port: int, body: bytes, ctype: str, pieces: int = 10, pause: float = 0.2) -> int:
    """POST ``body`` in ``pieces`` with ``pause`` seconds between them (a client on a slow link)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            s.sendall(body[i:i + step])
            time.sleep(pause)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


class Log:
    """Timestamped observations, bucketed by minute at the end."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.requests: list[tuple[float, float, int, str]] = []  # (t, seconds, status, kind)
        self.health: list[tuple[float, int]] = []
        self.rss: list[tuple[float, float]] = []

    def add(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            self.requests.append((time.time() - self.t0, seconds, status, kind))

    def minutes(self) -> list[dict]:
        rows = []
        for m in range(int(max(t for t, *_ in self.requests) // 60) + 1):
            inside = [r for r in self.requests if m * 60 <= r[0] < (m + 1) * 60]
            lat = sorted(r[1] for r in inside if r[3] == "fast")
            mem = [v for t, v in self.rss if m * 60 <= t < (m + 1) * 60]
            health = [s for t, s in self.health if m * 60 <= t < (m + 1) * 60]
            rows.append({"minute": m + 1, "requests": len(inside), "errors": sum(r[2] != 200 for r in inside),
                         "slow_requests": sum(r[3] == "slow" for r in inside),
                         "p50_ms": round(1e3 * statistics.median(lat), 1) if lat else None,
                         "p99_ms": round(1e3 * percentile(lat, 0.99), 1) if lat else None,
                         "rss_mb": round(max(mem), 1) if mem else None,
                         "health_checks": len(health), "health_failures": sum(s != 200 for s in health)})
        return rows


def traffic(port: int, images: list[bytes], log: Log, end: float, clients: int, slow: int) -> None:
    def fast(k: int) -> None:
        i = k
        while time.time() < end:
            body, ctype = multipart("files", f"{i}.png", images[i % len(images)])
            t = time.perf_counter()
            try:
                status = request(port, "POST", "/predict", body, ctype)[0]
            except OSError:
                status = 0
            log.add("fast", time.perf_counter() - t, status)
            i += clients

    def slowly(k: int) -> None:
        while time.time() < end:
            body, ctype = multipart("files", f"slow{k}.png", images[k % len(images)])
            t = time.perf_counter()
            try:
                status = slow_post(port, body, ctype)
            except OSError:
                status = 0
            log.add("slow", time.perf_counter() - t, status)

    threads = [threading.Thread(target=fast, args=(k,)) for k in range(clients)]
    threads += [threading.Thread(target=slowly, args=(k,)) for k in range(slow)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def monitor(port: int, pid: int, log: Log, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            status = request(port, "GET", "/health")[0]
        except OSError:
            status = 0
        with log.lock:
            log.health.append((time.time() - log.t0, status))
            log.rss.append((time.time() - log.t0, rss_mb(pid)))


def hostile(port: int, pid: int, max_upload_mb: float) -> dict:
    """An upload over the limit and a decompression bomb: their statuses and the memory they cost."""
    before = rss_mb(pid)
    big, ctype = multipart("files", "big.png", b"\0" * int((max_upload_mb + 1) * 2**20))
    bomb, bomb_type = multipart("files", "bomb.png", bomb_png())
    statuses = {"over_limit": request(port, "POST", "/predict", big, ctype)[0],
                "decompression_bomb": request(port, "POST", "/predict", bomb, bomb_type)[0]}
    return {**statuses, "rss_before_mb": round(before, 1), "rss_after_mb": round(rss_mb(pid), 1)}


def graceful_stop(port: int, proc: subprocess.Popen, images: list[bytes], n: int = 8) -> dict:
    """SIGTERM while ``n`` requests are in flight: how many of them still got their answer, and the exit."""
    statuses: list[int] = []

    def one(i: int) -> None:
        body, ctype = multipart("files", f"last{i}.png", images[i % len(images)])
        try:
            statuses.append(slow_post(port, body, ctype, pieces=4, pause=0.25))
        except OSError:
            statuses.append(0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every request is under way, none complete
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    code = proc.wait(timeout=60)
    return {"in_flight": n, "answered_200": statuses.count(200), "exit_code": code,
            "shutdown_seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20_cifar10", help="checkpoint, weights file or shipped name")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--slow-clients", type=int, default=2)
    p.add_argument("--max-upload-mb", type=float, default=2.0)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    images = random_pngs([32, 32, 64, 200])
    port, log, stop = free_port(), Log(), threading.Event()
    with campaign_paused() as paused:
        proc = subprocess.Popen([sys.executable, "-m", "resnets", "serve", args.model, "--port", str(port),
                                 "--max-upload-mb", str(args.max_upload_mb)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, proc, timeout=300)
            log.t0 = time.time()
            watcher = threading.Thread(target=monitor, args=(port, proc.pid, log, stop))
            watcher.start()
            traffic(port, images, log, time.time() + 60 * args.minutes, args.clients, args.slow_clients)
            stop.set()
            watcher.join()
            attacks = hostile(port, proc.pid, args.max_upload_mb)
            shutdown = graceful_stop(port, proc, images)
        finally:
            if proc.poll() is None:
                proc.kill()
    minutes = log.minutes()
    warm = [m["rss_mb"] for m in minutes[1:] if m["rss_mb"]] or [m["rss_mb"] for m in minutes]
    record = {"command": "python bench/soak.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
              "model": args.model, "clients": args.clients, "slow_clients": args.slow_clients, **paused,
              "requests": len(log.requests), "errors": sum(r[2] != 200 for r in log.requests),
              "health_failures": sum(s != 200 for _, s in log.health),
              "rss_growth_after_warmup_pct": round(100 * (warm[-1] / warm[0] - 1), 2),
              "per_minute": minutes, "hostile": attacks, "graceful_shutdown": shutdown}
    write_result("soak", record, args.out, echo=False)
    print(json.dumps({k: v for k, v in record.items() if k != "per_minute"}, indent=1))


if __name__ == "__main__":
    main()
