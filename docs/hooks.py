"""MkDocs hook: tables generated from the code at build time, so that the docs cannot drift from it.

``<!-- models-table -->`` in a page becomes the model zoo: every registered network with its parameters, its
multiply-accumulates at its own input size (counted on the model), where its layout comes from, and what it
was checked against: the tests' reference keys and logits (tests/fixtures/parity) and the run beside the real
libraries (bench/results/parity.json)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

MARKER = "<!-- models-table -->"
ROOT = Path(__file__).resolve().parents[1]
PARITY = [ROOT / "tests" / "fixtures" / "parity" / f
          for f in ("resnet_reference.json", "resnetrs_reference.json", "segmentation_reference.json")]
# (both checked by tests/models/test_parity.py)
LIBRARIES = ROOT / "bench" / "results" / "parity.json"  # bench/parity.py, run beside torchvision and timm


def _parity(name: str, ref: dict, libraries: dict) -> str:
    checks = []
    for prefix, library in (("tv", "torchvision"), ("timm", "timm"), ("tvseg", "torchvision")):
        entry = ref.get(f"{prefix}:{name}") or next((v for k, v in ref.items() if k.startswith(f"{prefix}:{name}:")),
                                                    None)
        if entry is not None:
            logits = "logits" in entry or "outputs" in entry
            checks.append(f"keys and shapes = {library}" + ("; float64 logits equal" if logits else ""))
        run = libraries.get(f"{'torchvision' if prefix == 'tv' else 'timm'}:{name}")
        if run is not None and run["agrees"]:
            checks.append(f"{library}'s weights load; logits and gradients identical")
    return "; ".join(checks) or "-"


@lru_cache(maxsize=1)
def models_table() -> str:
    import resnets
    from resnets.models import get_model_spec, list_models
    from resnets.models.profile import profile_model

    ref = {k: v for path in PARITY for k, v in json.loads(path.read_text()).items()}
    libraries = json.loads(LIBRARIES.read_text())["models"]
    rows = ["| model | family | parameters | MACs (input) | reference | checked against |",
            "|---|---|---:|---:|---|---|"]
    for name in list_models():
        spec = get_model_spec(name)
        model = resnets.create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        macs = sum(r.macs for r in profile_model(model, spec.input_size))
        rows.append(f"| `{name}` | {spec.family} | {params / 1e6:.2f} M | {macs / 1e9:.3f} G ({spec.input_size}px) "
                    f"| {spec.reference} | {_parity(name, ref, libraries)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return markdown.replace(MARKER, models_table()) if MARKER in markdown else markdown
