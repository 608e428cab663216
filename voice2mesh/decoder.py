"""Parameters → vertices with ONNX Runtime: one generic graph for every face model.

``vertices = scale * (mean + weights @ [identity; expression])``, the same as
``FaceModel.vertices_from_params`` (numpy), as the graph ``facemodel/data/decoder.onnx`` (built by
``python -m export.decoder_graph``; it holds no face data: the stacked basis and the mean are fed
as inputs from the face model, without copies). Chosen by benchmarks/bench_predict.py: ONNX
Runtime reads the 6.7 MB ICT basis with two threads, 0.25-0.3 ms where numpy's single-threaded
einsum takes 0.35-0.7 ms (docs/runtime.md); multi-threaded BLAS was erratic on a busy machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voice2mesh.providers import SessionConfig, create_session

GRAPH = Path(__file__).resolve().parent / "facemodel" / "data" / "decoder.onnx"


class OnnxFaceDecoder:
    """``decoder(params)``: (B, 1+K+E) float32 → (B, N, 3) vertices of ``face_model`` on the CPU."""

    def __init__(self, face_model, threads: int | None = None) -> None:
        self.n_vertices = face_model.n_vertices
        self.n_params = face_model.n_params
        self.basis = face_model.stacked_basis()
        self.mean = np.ascontiguousarray(face_model.mean.reshape(1, -1), dtype=np.float32)
        self.session, _ = create_session(str(GRAPH), "cpu", SessionConfig(intra_op_threads=threads))

    def __call__(self, params: np.ndarray) -> np.ndarray:
        p = np.ascontiguousarray(np.atleast_2d(params), dtype=np.float32)
        if p.shape[1] != self.n_params:
            raise ValueError(f"params must be (B, {self.n_params}), got {np.shape(params)}")
        flat = self.session.run(["flat"], {"params": p, "basis": self.basis, "mean": self.mean})[0]
        return flat.reshape(len(p), self.n_vertices, 3)
