"""synthvox: a synthetic world where the answer is known (ICT faces from the prior, espeak-ng voices linked
to the face geometry). See docs/synthvox.md."""

from .config import DEFAULT_VARIANTS, FORMAT_VERSION, SynthVoxConfig
from .generate import explained_variance, generate, load_faces

__all__ = [
    "DEFAULT_VARIANTS",
    "FORMAT_VERSION",
    "SynthVoxConfig",
    "explained_variance",
    "generate",
    "load_faces",
]
