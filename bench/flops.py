"""The machine's fp32 ceiling (a large matrix product) and the model's FLOPs per image.

FLOPs are counted from the ONNX graph after shape inference at batch 1: 2 x the multiply-adds of
Conv, Gemm, MatMul and Einsum nodes (everything else is memory-bound and negligible in FLOPs).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from timing import Stats, interleave


def matmul_gflops(n: int, reps: int) -> dict[str, Any]:
    """fp32 GFLOP/s of an n x n matrix product, on all cores, through each library that has its
    own GEMM kernels: numpy's BLAS (OpenBLAS), onnxruntime's MLAS (the kernels the model runs on)
    and torch (oneDNN/MKL). The ceiling is the fastest: a model can beat a slow BLAS, as
    onnxruntime did numpy's by 1.9x here, so numpy alone is no ceiling."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    products = {"numpy": lambda: np.matmul(a, b, out=out), "onnxruntime": _ort_matmul(a, b)}
    torch_product = _torch_matmul(a, b)
    if torch_product is not None:
        products["torch"] = torch_product
    stats: dict[str, Stats] = interleave(products, reps)
    gflop = 2.0 * n**3 / 1e9
    by_library = {name: s.rate(gflop, "GFLOP/s") for name, s in stats.items()}
    fastest = max(by_library, key=lambda name: by_library[name]["best"])
    return {
        "n": n,
        "dtype": "float32",
        "seconds": {name: s.to_json() for name, s in stats.items()},
        "by_library": by_library,
        "library": fastest,
        "gflops": by_library[fastest],
    }


def _ort_matmul(a: np.ndarray, b: np.ndarray):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a, "b": b})


def _torch_matmul(a: np.ndarray, b: np.ndarray):
    try:
        import torch
    except ImportError:
        return None
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = torch.empty_like(ta)

    def product() -> None:
        with torch.inference_mode():
            torch.mm(ta, tb, out=out)

    return product


def count_onnx(path: Path) -> dict[str, Any]:
    """FLOPs per image (batch 1) by operator type."""
    model = onnx.load(str(path))
    graph = model.graph
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del graph.value_info[:]
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(inferred.graph)
    macs: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul", "Einsum"):
            continue
        count = _macs(node, shapes)
        if count is None:
            unknown[node.op_type] += 1
        else:
            macs[node.op_type] += count
    total = 2 * sum(macs.values())
    return {
        "gflop_per_image": round(total / 1e9, 4),
        "gflop_by_op": {op: round(2 * m / 1e9, 4) for op, m in macs.most_common()},
        "nodes_without_shapes": dict(unknown),
    }


def _shapes(graph: onnx.GraphProto) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}
    for value in (*graph.input, *graph.output, *graph.value_info):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    return shapes


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int | None:
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0])
    if out is None or None in out or any(s is None or None in s for s in ins[:2]):
        return None
    if node.op_type == "Conv":
        weight = ins[1]
        return math.prod(out) * math.prod(weight[1:])  # N*Cout*Ho*Wo x Cin/g*kh*kw
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        k = ins[0][0] if trans_a else ins[0][1]
        return math.prod(out) * k
    if node.op_type == "MatMul":
        return math.prod(out) * ins[0][-1]
    equation = next(a.s.decode() for a in node.attribute if a.name == "equation")
    sizes: dict[str, int] = {}
    for term, shape in zip(equation.split("->")[0].split(","), ins, strict=False):
        for letter, size in zip(term.strip(), shape, strict=False):
            sizes[letter] = size
    return math.prod(sizes.values())
