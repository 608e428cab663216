"""Build the generic face-decoder graph that voice2mesh ships: ``python -m export.decoder_graph``.

``flat = scale * (mean + weights @ basis)`` for any face model: ``params`` (batch, 1+K+E) =
[scale, K identity, E expression weights]; ``basis`` ((K+E), 3N) and ``mean`` (1, 3N) are inputs,
fed by voice2mesh.decoder from the face model at run time, so the graph holds no face data and the
runtime needs no ``onnx`` package. Written to ``voice2mesh/facemodel/data/decoder.onnx`` (450 bytes);
tests/test_decoder.py checks the committed file is what this builds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "voice2mesh" / "facemodel" / "data" / "decoder.onnx"
OPSET = 17


def decoder_model() -> onnx.ModelProto:
    """The graph: two Slices of ``params``, MatMul with ``basis``, Add ``mean``, Mul by the scale."""
    nodes = [
        helper.make_node("Slice", ["params", "zero", "one", "axis1"], ["scale"]),
        helper.make_node("Slice", ["params", "one", "end", "axis1"], ["weights"]),
        helper.make_node("MatMul", ["weights", "basis"], ["offsets"]),
        helper.make_node("Add", ["offsets", "mean"], ["shape"]),
        helper.make_node("Mul", ["shape", "scale"], ["flat"]),
    ]
    constants = [numpy_helper.from_array(np.array([v], np.int64), name)
                 for name, v in (("zero", 0), ("one", 1), ("end", np.iinfo(np.int64).max), ("axis1", 1))]
    graph = helper.make_graph(
        nodes, "voice2mesh_face_decoder",
        [helper.make_tensor_value_info("params", TensorProto.FLOAT, ["batch", "n_params"]),
         helper.make_tensor_value_info("basis", TensorProto.FLOAT, ["n_weights", "n_coords"]),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, "n_coords"])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch", "n_coords"])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8,
                              producer_name="voice2mesh")
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.write_bytes(decoder_model().SerializeToString())
    print(f"{args.out}: {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
