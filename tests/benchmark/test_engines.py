"""The engines benchmark: bad agreement inputs are refused before any timing, and a run's table."""
import subprocess
import sys

from tests.conftest import BENCH, bench_script


def _engines(*args, timeout=120):
    return subprocess.run([sys.executable, str(BENCH / "engines.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_weights_without_images_is_one_line_before_timing():
    done = _engines("--imagenet-weights", "resnet50.keras_in1k")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--imagenet-weights and --imagenet-images go together" in done.stderr.splitlines()[-1]


def test_a_folder_without_class_folders_is_refused_before_timing(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "000_n01440764.JPEG")  # photos side by side, no class folders
    done = _engines("--imagenet-weights", "resnet50.keras_in1k", "--imagenet-images", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert "--imagenet-images" in last and "class folders" in last


def test_the_table_bolds_the_defaults_and_shows_the_share_of_the_peak():
    engines = bench_script("engines")
    row = lambda ips, share: {"images_per_s": ips, "peak_share": share}  # noqa: E731
    record = {"speed": [{"model": "resnet50", "size": 224, "batch": 16, "default_small_job": "openvino_bf16",
                         "default_large_job": "openvino_bf16",
                         "modes": {"eager": row(18.4, 0.40), "openvino_bf16": row(1247.2, 0.85),
                                   "openvino_bf16 THROUGHPUT": row(244.0, None)}}]}
    lines = engines.table(record).splitlines()
    assert lines[0] == "| mode | format | resnet50 224px b16 |"
    assert lines[2] == "| `eager` | float32 | 18 (40%) |"
    assert lines[3] == "| `openvino_bf16` | bfloat16 | **1,247 (85%)** |"
    assert lines[4] == "| `openvino_bf16` THROUGHPUT | bfloat16 | 244 |"
