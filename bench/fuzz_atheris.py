"""Coverage-guided fuzzing (atheris, libFuzzer for Python) of the checkpoint reader and the shard reader.

    pip install atheris
    python bench/fuzz_atheris.py --seconds 300            # each target for 5 minutes

Each input is written as a file and read the way users' files are: as a ``.pt`` checkpoint, as a
``.safetensors`` file (both through ``read_source``, the one way in) and as a shard (``read_shard``). The
property is the tests': a result or the library's own one-line error; any other exception is a crash, saved
under ``--out``/crashes/ by libFuzzer, and belongs in the tests as a regression case. Not run by CI (it has
no fixed end); the hypothesis fuzzers in the tests are its fixed-budget twins. Writes bench/results/atheris.json.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("checkpoint_pt", "checkpoint_safetensors", "shard")


def child(target: str, libfuzzer_args: list[str]) -> None:
    """One target under atheris (instrumented imports, so that coverage guides the inputs)."""
    import atheris

    with atheris.instrument_imports():
        from resnets.data.shards import Shard, read_shard
        from resnets.errors import ResnetsError
        from resnets.models.source import read_source
    folder = Path(tempfile.mkdtemp(prefix="atheris-"))
    suffix = {"checkpoint_pt": ".pt", "checkpoint_safetensors": ".safetensors", "shard": ".tar"}[target]
    path = folder / f"input{suffix}"

    def one(data: bytes) -> None:
        path.write_bytes(data)
        try:
            if target == "shard":
                shard = Shard(str(path), 1, len(data), hashlib.sha256(data).hexdigest())
                for _ in read_shard(shard, classes=10):
                    pass
            else:
                read_source(path)
        except ResnetsError as e:
            if "\n" in str(e):
                raise AssertionError(f"a multi-line error: {e!r}") from None

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def seed(target: str) -> bytes:
    """A small valid input of the target's kind, for the mutations to start from."""
    import io
    import tarfile

    import torch

    if target == "shard":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in (("s0.jpg", b"\xff\xd8\xff\xe0 not decoded here"), ("s0.cls", b"3")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()
    state = {"conv1.weight": torch.zeros(2, 1, 3, 3), "fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)}
    if target == "checkpoint_pt":
        buf = io.BytesIO()
        torch.save({"model": state, "config": {"model": "resnet20"}, "classes": ["a", "b", "c"]}, buf)
        return buf.getvalue()
    from safetensors.torch import save

    return save(state, metadata={"resnets": '{"config": {"model": "resnet20"}, "classes": ["a", "b", "c"]}'})


def run(target: str, seconds: int, out: Path) -> dict:
    crashes = out / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        (corpus / "seed").write_bytes(seed(target))
    done = subprocess.run([sys.executable, __file__, "--child", target, f"-max_total_time={seconds}",
                           f"-artifact_prefix={crashes}/", "-rss_limit_mb=4096", "-max_len=4096", str(corpus)],
                          capture_output=True, text=True)
    runs = re.search(r"Done (\d+) runs in (\d+) second", done.stderr)
    cov = re.findall(r"cov: (\d+)", done.stderr)
    found = sorted(p.name for p in crashes.iterdir())
    return {"target": target, "seconds": int(runs[2]) if runs else None, "executions": int(runs[1]) if runs else None,
            "coverage_edges": int(cov[-1]) if cov else None, "corpus_files": len(list(corpus.iterdir())),
            "crashes": found, "exit_code": done.returncode,
            "last_lines": done.stderr.strip().splitlines()[-3:] if done.returncode else []}


def main() -> None:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        return child(sys.argv[i + 1], sys.argv[1:i] + sys.argv[i + 2:])
    sys.path.insert(0, str(HERE))
    from common import RESULTS, write_result

    from resnets.machine import machine_info

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=300, help="time for each target")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--out", type=Path, default=Path("runs/atheris"), help="corpus and crash files")
    args = p.parse_args()
    rows = [run(t, args.seconds, args.out) for t in args.targets]
    write_result("atheris", {"command": "python bench/fuzz_atheris.py " + " ".join(sys.argv[1:]),
                             "machine": machine_info(), "results": rows}, RESULTS)


if __name__ == "__main__":
    main()
