"""The phantom the session suites share, and a session on it with the real LiteMedSAM weights (one per module)."""

import pytest

from MedSAMSlicerLib.files.sample_data import make_phantom
from MedSAMSlicerLib.volume.intensity import IntensitySettings
from MedSAMSlicerLib.volume.session import SegmentationSession


@pytest.fixture(scope="module")
def phantom():
    """A lesion of 16-20 slices along each axis (slices 4-19 of 24 along K), so every slicing axis is tested at
    similar cost, with empty slices past each end."""
    return make_phantom(size=(64, 56, 24), spacing=(0.8, 0.9, 2.5), radii_mm=(8.0, 7.5, 20.0))


@pytest.fixture(scope="module")
def session(phantom, lite_model):
    with SegmentationSession(phantom.image, lite_model, IntensitySettings.preset("soft-tissue")) as session:
        yield session
