"""A trained model as an ONNX graph, its preprocessing included: raw rows in, scores and labels out.

``X (N, D) float32 -> X / scale - mean [/ std] -> affine -> ReLU -> affine -> scores (N, C)``
and ``label = argmax(scores)`` (int64). Built with the ``onnx`` helper API from the checkpoint's
arrays (no tracing), in float32, opset 17, so onnxruntime and other runtimes can serve it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from twolayer_xp.app.trained import TrainedModel
from twolayer_xp.io import files

OPSET = 17
ONNX_FIX = 'pip install -e ".[onnx]"'


def to_onnx(trained: TrainedModel):
    """The ``onnx.ModelProto`` computing ``trained``'s scores and labels from raw float32 rows."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError(f"exporting to ONNX needs the onnx package; fix: {ONNX_FIX}") from None
    net, pre = trained.net, trained.preprocessing
    params = {name: np.asarray(net.backend.to_numpy(p), dtype=np.float32) for name, p in net.params.items()}
    constants = {
        "scale": np.asarray(pre.scale, dtype=np.float32),
        "mean": np.asarray(pre.mean, dtype=np.float32),
        **params,
    }
    nodes = [
        helper.make_node("Div", ["X", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "mean"], ["centered"]),
    ]
    inputs = "centered"
    if pre.std is not None:
        constants["std"] = np.asarray(pre.std, dtype=np.float32)
        nodes.append(helper.make_node("Div", ["centered", "std"], ["standardized"]))
        inputs = "standardized"
    nodes += [
        helper.make_node("Gemm", [inputs, "W1", "b1"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["relu"]),
        helper.make_node("Gemm", ["relu", "W2", "b2"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    D, C = net.input_size, net.output_size
    graph = helper.make_graph(
        nodes,
        "twolayer_xp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", D])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", C]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=[numpy_helper.from_array(v, name) for name, v in constants.items()],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="twolayer-xp"
    )
    proto.ir_version = min(proto.ir_version, 8)  # readable by onnxruntime releases of the last years
    helper.set_model_props(proto, {"labels": "\n".join(trained.labels)})
    onnx.checker.check_model(proto)
    return proto


def export(trained: TrainedModel, path: str | os.PathLike) -> Path:
    """Write ``trained`` as ONNX to ``path`` (atomically); returns the path."""
    proto = to_onnx(trained)
    path = Path(path)
    files.atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return path
