"""Shared fixtures: the real LiteMedSAM weights, a random-weight MedSAM ViT-B checkpoint, and a small phantom."""

import pytest
import torch

from MedSAMSlicerLib.files.sample_data import make_phantom
from MedSAMSlicerLib.models.model_registry import build_network, load_model, model_spec


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """Network exports go to the session's temporary folder, not the user's cache (subprocesses inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("MEDSAM_SLICER_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def lite_model():
    """LiteMedSAM with the embedded, SHA-256-checked trained weights, on the CPU."""
    return load_model("lite-medsam", device="cpu")


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory):
    """A randomly initialised MedSAM ViT-B state dict on disk (the real weights are not reachable here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit_b") / "medsam_vit_b_random.pth"
    torch.save(build_network(model_spec("medsam-vit-b")).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def small_phantom():
    """A phantom CT whose lesion spans 17 slices along K (anisotropic spacing, LPS-flipped direction)."""
    return make_phantom(size=(96, 80, 24), spacing=(0.8, 0.9, 2.5), radii_mm=(18.0, 13.0, 20.0))


@pytest.fixture(scope="module")
def bad_input_master(tmp_path_factory):
    """The small inputs of the bad-input suites (``bad_input_harness.make_inputs``), written once per module."""
    from bad_input_harness import make_inputs

    root = tmp_path_factory.mktemp("master")
    make_inputs(root)
    return root


@pytest.fixture
def work(bad_input_master, tmp_path):
    """A test's own copy of the inputs; after the test, no input changed and no partial file is left."""
    from bad_input_harness import Workspace

    space = Workspace(bad_input_master, tmp_path)
    yield space
    space.check()


@pytest.fixture
def cli(capsys, monkeypatch, lite_model, tmp_path_factory):
    """``medsam-slicer`` in-process, with the session's LiteMedSAM and a shared embedding cache."""
    from bad_input_harness import Cli

    return Cli(capsys, monkeypatch, lite_model, tmp_path_factory.getbasetemp() / "bad_input_cache")
