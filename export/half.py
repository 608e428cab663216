"""Half-precision weight storage for ONNX graphs: float16 initializers, computation stays float32.

Each large float32 initializer is stored as float16 and a ``Cast`` node back to float32 is put in front
of the graph under the initializer's original name, so every operator still sees float32 tensors and
the graph's inputs and outputs keep their types. ONNX Runtime folds the casts when it loads the session
(constant folding), so inference costs the same; only the file is about half the size. The price is the
float16 rounding of every weight (relative 2**-11 at most), which :func:`compare_graphs` measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from voice2mesh.providers import CPU, session_options

MIN_ELEMENTS = 1024  # smaller tensors (biases, norms, shapes) stay float32: no size to gain


def half_weights(model: onnx.ModelProto, min_elements: int = MIN_ELEMENTS) -> onnx.ModelProto:
    """A copy of ``model`` with every float32 initializer of ``min_elements`` or more stored as float16."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts = []
    kept = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        half_name = f"{init.name}__fp16"
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), half_name)
        kept.append(half)
        casts.append(
            helper.make_node(
                "Cast", [half_name], [init.name], to=TensorProto.FLOAT, name=f"{init.name}__to_fp32"
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def half_weights_file(src: str | Path, dst: str | Path, min_elements: int = MIN_ELEMENTS) -> Path:
    """:func:`half_weights` from file to file (``dst`` may equal ``src``)."""
    model = half_weights(onnx.load(str(src)), min_elements)
    onnx.save(model, str(dst))
    return Path(dst)


def run_graph(path: str | Path, inputs: list[np.ndarray]) -> np.ndarray:
    """The graph's first output for each input (each run as a batch of one) on the CPU, stacked."""
    sess = ort.InferenceSession(str(path), session_options(threads=1), providers=[CPU])  # deterministic
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[None].astype(np.float32)})[0][0] for x in inputs])
