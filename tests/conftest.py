"""Shared fixtures: asset discovery (skip with a message when ../shared/assets is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from voice2mesh.paths import shared_assets_dir

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default=None,
        help="device for training/export tests: cpu (default), cuda or auto (also VOICE2MESH_TEST_DEVICE)",
    )


@pytest.fixture(scope="session")
def test_device(request: pytest.FixtureRequest) -> str:
    """The torch device the training tests run on (`--device`, else VOICE2MESH_TEST_DEVICE, else cpu)."""
    return request.config.getoption("--device") or os.environ.get("VOICE2MESH_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The shared assets folder; tests that need it are skipped when it is missing."""
    path = shared_assets_dir()
    if path is None:
        pytest.skip(
            "shared assets not found: expected ../shared/assets beside the repository "
            "(or set VOICE2MESH_ASSETS)"
        )
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Folder for files a person should look at after the tests (screenshots, renders)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def assert_close(actual, expected, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Shapes first, then values (the pytorch3d habit)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
