import os
import sys
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("RESNETS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_reference():
    """``(reference json, fill module)`` from ../shared/reference, or skip where it is absent (a user's clone)."""
    ref = SHARED / "reference"
    if not (ref / "resnet_reference.json").is_file():
        pytest.skip(f"parity reference not found at {ref} (it lives in the project's shared/ folder)")
    import json

    sys.path.insert(0, str(ref))
    import fill

    return json.loads((ref / "resnet_reference.json").read_text()), fill


@pytest.fixture(scope="session")
def cifar10_jpeg():
    path = SHARED / "data" / "cifar10-jpeg.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
