"""Linear 3D morphable face models (ICT FaceKit Light, BFM): parameters -> vertices, with metadata."""

from .model import FaceModel, FaceModelFileError, Prior

__all__ = ["FaceModel", "FaceModelFileError", "Prior", "load_face_model"]


def load_face_model(name_or_path, **kwargs) -> FaceModel:
    """A face model file, or a built-in name (``ict``, ``bfm-53215``, ``bfm-38365``)."""
    from .builtin import load_face_model as _load

    return _load(name_or_path, **kwargs)
