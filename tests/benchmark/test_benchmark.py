"""The benchmark suite's measurements (correctness of what it reports, not speed)."""
import pytest
import torch

import resnets.benchmark.speed as speed
from resnets.benchmark import run_bench
from resnets.benchmark.memory import saved_activation_bytes
import resnets.benchmark.peaks as peaks
from resnets.benchmark.peaks import cpu_matmuls, int8_matmuls, matmul_peak, packed_int8_matmul
from resnets.benchmark.speed import bench_inference, bench_training


def test_matmul_peak_is_a_rate():
    assert matmul_peak(torch.float32, n=128, repeats=2) > 1e8
    assert matmul_peak(torch.int8, n=128, repeats=2) > 1e8


@pytest.mark.parametrize("n", [100, 128])  # a square and a non-square number of pixels for oneDNN's 1x1 conv
def test_the_cpu_peak_kernels_are_each_an_n_by_n_by_n_product(n):
    outputs = {name: fn() for name, fn in cpu_matmuls(torch.float32, n).items()}
    assert set(outputs) == {"blas", "onednn"}
    assert all(out.numel() == n * n for out in outputs.values())  # from n x n operands: 2 n^3 operations each


@pytest.mark.parametrize("vnni", [True, False])
def test_the_int8_peak_times_onednn_only_where_the_cpu_has_vnni(monkeypatch, vnni):
    monkeypatch.setattr(peaks, "cpu_has_vnni", lambda: vnni)  # without VNNI torch._int_mm is a slow loop
    fns = int8_matmuls(64)
    assert set(fns) == ({"onnxruntime", "onednn", "onednn_packed"} if vnni else {"onnxruntime"})
    assert all(tuple(out[0].shape if isinstance(out, list) else out.shape) == (64, 64) for out in
               (fn() for fn in fns.values()))


@pytest.mark.precision
def test_the_packed_int8_product_is_the_integer_product():
    # small operands: no pair of products saturates int16, so even oneDNN's AVX2 int8 kernel is exact
    x = torch.randint(0, 16, (37, 48), dtype=torch.uint8)
    w = torch.randint(-8, 8, (29, 48), dtype=torch.int8)
    assert torch.equal(packed_int8_matmul(x, w)(), x.float() @ w.float().T)


def test_inference_rows_are_relative_to_the_baseline_of_the_same_run():
    peaks = {"fp32": 1e11, "bf16": 2e11}
    rows = bench_inference("resnet20", 32, 8, ("eager", "fused"), peaks, repeats=2)
    assert [r.mode for r in rows] == ["eager", "fused"]
    assert rows[0].speedup == 1.0 and rows[0].max_rel_diff == 0.0
    assert all(r.agrees and r.images_per_s > 0 and 0 < r.peak_fraction for r in rows)
    assert rows[1].speedup == rows[1].images_per_s / rows[0].images_per_s


def test_training_rows():
    rows = bench_training("resnet20", 32, 8, ("naive", "channels_last"), {"fp32": 1e11, "bf16": 2e11}, repeats=2)
    assert rows[0].speedup == 1.0 and rows[1].images_per_s > 0
    assert [r.dtype for r in rows] == ["float32", "float32"]


@pytest.mark.parametrize("native", [True, False])
def test_compiled_training_runs_in_bfloat16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(speed, "native_bf16", lambda device="cpu": native)
    assert speed._trains_in_bf16("compile", "cpu") is native  # emulated bfloat16 is many times slower
    assert speed._trains_in_bf16("bf16", "cpu") and not speed._trains_in_bf16("channels_last", "cpu")


@pytest.mark.parametrize("mode", ["naive", "bf16"])
def test_checkpointing_saves_activation_memory_in_proportion_to_the_stages(mode):
    sizes = [saved_activation_bytes("resnet50", 64, 2, stages, mode) for stages in (0, 2, 4)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[2] < 0.5 * sizes[0]  # at least half of the activation memory is not kept
    if mode == "bf16":  # bfloat16 activations: about half the bytes of float32 ones
        assert 0.4 < sizes[0] / saved_activation_bytes("resnet50", 64, 2, 0) < 0.6


def test_float32_modes_on_cuda_allow_for_tf32_convolutions():
    from resnets.inference.modes import TF32_TOLERANCE, get_mode, tolerance

    assert tolerance("fused", "cpu") == get_mode("fused").tolerance < TF32_TOLERANCE
    assert tolerance("fused", "cuda") == TF32_TOLERANCE
    assert tolerance("eager", "cuda") == 0.0 and tolerance("bf16", "cuda") == get_mode("bf16").tolerance


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_suite_on_cuda_agrees_with_the_baseline():
    report = run_bench(quick=True, device="cuda", log=lambda s: None)
    assert {r.mode for r in report.inference} >= {"eager", "fused", "bf16", "compile"}
    assert all(r.agrees for r in report.inference), [(r.mode, r.max_rel_diff) for r in report.inference]
    assert all(r.images_per_s > 0 for r in report.training)
    assert report.memory[-1].activation_mb_per_image < report.memory[0].activation_mb_per_image


def test_each_mode_is_measured_against_the_peak_of_its_number_format():
    from resnets.benchmark.speed import _peak_kind

    assert [_peak_kind(m) for m in ("int8", "compile_int8", "bf16", "compile_bf16", "fused", "onnxruntime")] == \
        ["int8", "int8", "bf16", "bf16", "fp32", "fp32"]
