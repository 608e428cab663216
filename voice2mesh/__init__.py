"""voice2mesh: 3D face meshes from voice (runtime library: numpy + onnxruntime, never torch)."""

__version__ = "0.1.0"
