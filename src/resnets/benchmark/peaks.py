"""The machine's peak: operations per second of large matrix multiplies in each number format, the yardstick
for every model figure (model FLOP/s / matmul FLOP/s)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..inference import onnx_session
from ..machine import cpu_has_vnni
from ..timing import synced, time_calls, time_interleaved


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10, device: torch.device | str = "cpu") -> float:
    """Operations per second of an ``n x n`` by ``n x n`` matrix multiply in ``dtype`` (median over repeats).

    For floating point, two GEMM kernels are timed and the faster one counts: the BLAS behind ``torch.mm``
    and oneDNN's, reached through a 1x1 convolution over ``n`` pixels. On some CPUs (AMD with MKL) the two
    differ by 2x, and a peak from the slower one would make the models look faster than the machine.
    For ``torch.int8``, ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32), the GEMM behind the int8 mode,
    and where the CPU has VNNI also oneDNN's (a reference loop without VNNI), twice: through ``torch._int_mm``,
    and with its weights packed once for the CPU, as the compiled int8 mode and OpenVINO run every layer. On an
    AMD CPU with AVX-512 VNNI, ONNX Runtime's reached half of oneDNN's; on an AMX CPU the packed product ran
    1.5x ``torch._int_mm``, and int8 networks ran faster than the unpacked products. On CUDA, ``torch.mm``
    (cuBLAS), float only."""
    if torch.device(device).type == "cuda":  # float32 as TF32, like cuDNN's convolutions by default
        a = torch.randn(n, n, device=device, dtype=dtype)
        tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, True
        try:
            return 2 * n**3 / time_calls(synced(lambda: torch.mm(a, a), device), repeats, warmup=3).median_s
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    with torch.no_grad():
        timings = time_interleaved(int8_matmuls(n) if dtype == torch.int8 else cpu_matmuls(dtype, n), repeats,
                                   warmup=3)
    return 2 * n**3 / min(t.median_s for t in timings.values())


def cpu_matmuls(dtype: torch.dtype, n: int) -> dict[str, Callable[[], object]]:
    """Two ways to run an ``n x n`` by ``n x n`` product (``2 n^3`` operations) in ``dtype`` on the CPU: the
    BLAS behind ``torch.mm``, and oneDNN's GEMM through a 1x1 convolution over a row of ``n`` pixels."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x = torch.randn(1, n, 1, n, dtype=dtype).to(memory_format=torch.channels_last)
    w = b.view(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    return {"blas": lambda: torch.mm(a, b), "onednn": lambda: F.conv2d(x, w)}


def int8_matmuls(n: int) -> dict[str, Callable[[], object]]:
    """The ``n x n`` by ``n x n`` int8 products to time: ONNX Runtime's, and oneDNN's (plain and with packed
    weights) where the CPU has VNNI."""
    fns = {"onnxruntime": _int8_matmul(n)}
    if cpu_has_vnni():
        a, b = (torch.randint(-128, 128, (n, n), dtype=torch.int8) for _ in range(2))
        fns["onednn"] = lambda: torch._int_mm(a, b)
        fns["onednn_packed"] = packed_int8_matmul(torch.randint(0, 256, (n, n), dtype=torch.uint8), b)
    return fns


def packed_int8_matmul(x: torch.Tensor, w: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``x @ w.T`` (uint8 by int8, as float32) by oneDNN with ``w`` packed once for this CPU's int8 kernels:
    what an int8 linear layer runs in the compiled int8 mode (``torch.ops.onednn.qlinear_pointwise``)."""
    packed = torch.ops.onednn.qlinear_prepack(w, list(x.shape))
    scales, zero_points = torch.ones(len(w)), torch.zeros(len(w), dtype=torch.long)
    return lambda: torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, packed, scales, zero_points, None, 1.0, 0,
                                                       torch.float32, "none", [], "")


def _int8_matmul(n: int) -> Callable[[], object]:
    """An ``n x n`` by ``n x n`` uint8 x int8 -> int32 product in ONNX Runtime."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_matmul",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [b])
    session = onnx_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return lambda: session.run(None, {"a": a})
