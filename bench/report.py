"""Markdown tables for the docs from the speed suite's JSON (bench/results/bench.json) or the deploy table's
(``resnets bench deploy --json --out bench/results/deploy.json``).

    python bench/report.py [bench/results/bench.json | bench/results/deploy.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def tables(report: dict) -> str:
    m, peaks = report["machine"], report["peak_flops"]
    gpu = report.get("device") == "cuda"
    where = f"{m['gpu']} (CUDA)" if gpu else f"{m['cpu']}, {m['threads']} threads"
    names = {"fp32": "float32 {:,.0f} GFLOP/s", "bf16": "bfloat16 {:,.0f} GFLOP/s", "int8": "int8 {:,.0f} GOP/s"}
    out = [f"Machine: {where}, torch {m['torch']}. Matmul peak in the same run: "
           + ", ".join(names[k].format(peaks[k] / 1e9) for k in names if k in peaks) + ".", "",
           "| model | input | batch | mode | images/s | x naive | p50 ms | p99 ms | max rel. diff | % of peak |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["inference"]:
        out.append(f"| {r['model']} | {r['input_size']} | {r['batch']} | {r['mode']} | {r['images_per_s']:.1f} | "
                   f"{r['speedup']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_rel_diff']:.1e} | "
                   f"{100 * r['peak_fraction']:.0f} |")
    out += ["", "| model | input | batch | training mode | dtype | images/s | x naive | % of peak |",
            "|---|---|---|---|---|---|---|---|"]
    for r in report["training"]:
        # runs before the dtype was recorded trained "bf16" and "compile" in bfloat16
        dtype = r.get("dtype", "bfloat16" if r["mode"] in ("bf16", "compile") else "float32")
        out.append(f"| {r['model']} | {r['input_size']} | {r['batch']} | {r['mode']} | {dtype} | "
                   f"{r['images_per_s']:.1f} | {r['speedup']:.2f} | {100 * r['peak_fraction']:.0f} |")
    peak = "peak GPU MB/image" if gpu else "peak RSS MB/image"
    out += ["", f"| model | input | batch | mode | checkpointed stages | activations MB/image | {peak} | step s | "
                "x time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["memory"]:
        out.append(f"| {r['model']} | {r['input_size']} | {r['batch']} | {r.get('mode', 'naive')} | "
                   f"{r['checkpointed_stages']} | "
                   f"{r['activation_mb_per_image']:.1f} | {r['peak_rss_mb_per_image']:.1f} | {r['step_s']:.3f} | "
                   f"{r['time_ratio']:.2f} |")
    return "\n".join(out)


def deploy_tables(table: dict) -> str:
    """The deploy table: one row per network and inference mode."""
    batches = [str(b) for b in table["batches"] if b != 1]
    out = ["| network | format | mode | parameters | MACs | file | latency, batch 1 | "
           + " | ".join(f"images/s, batch {b}" for b in batches) + " | test top-1 |",
           "|---" * (8 + len(batches)) + "|"]
    for r in table["rows"]:
        top1 = f"{r['top1']:.2f}%" if r["top1"] is not None else "-"
        out.append(f"| {r['network']} | {r['precision']} | `{r['mode']}` | {r['params'] / 1e6:.2f} M | "
                   f"{r['macs'] / 1e6:,.1f} M | {r['file_mb']:.2f} MB | {r['latency_ms']:.2f} ms | "
                   + " | ".join(f"{r['images_per_s'][b]:,.0f}" for b in batches) + f" | {top1} |")
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results" / "bench.json")
    report = json.loads(path.read_text())
    print(deploy_tables(report) if "rows" in report else tables(report))
