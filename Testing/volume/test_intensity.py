"""Intensity normalisation equals the published MedSAM preprocessing voxel for voxel (DESIGN.md section 4).

The reference functions below are a literal transcription of the published pre-processing
(``pre_CT_MR.py``): the same numpy calls in the same order, on the caller's own dtype, so any
difference in rounding or in the dtype the arithmetic is done in shows up as a voxel mismatch.
"""

import warnings

import numpy as np
import pytest

from MedSAMSlicerLib.errors import ImageError, SettingsError
from MedSAMSlicerLib.volume.intensity import CT_PRESETS, IntensitySettings, normalize_volume

PRESETS = [("soft-tissue", 400, 40), ("lung", 1500, -160), ("brain", 80, 40)]


# --- the published reference, written out literally ------------------------------------------

def reference_ct(image_data, window_width, window_level):
    lower_bound = window_level - window_width / 2
    upper_bound = window_level + window_width / 2
    image_data_pre = np.clip(image_data, lower_bound, upper_bound)
    image_data_pre = (
        (image_data_pre - np.min(image_data_pre))
        / (np.max(image_data_pre) - np.min(image_data_pre))
        * 255.0
    )
    return np.uint8(image_data_pre)


def reference_mr(image_data):
    lower_bound, upper_bound = np.percentile(image_data[image_data > 0], 0.5), np.percentile(
        image_data[image_data > 0], 99.5)
    image_data_pre = np.clip(image_data, lower_bound, upper_bound)
    image_data_pre = (
        (image_data_pre - np.min(image_data_pre))
        / (np.max(image_data_pre) - np.min(image_data_pre))
        * 255.0
    )
    image_data_pre[image_data == 0] = 0
    return np.uint8(image_data_pre)


# --- volumes -------------------------------------------------------------------------------

def ct_volume(shape=(6, 96, 128), seed=0, dtype=np.int16):
    """CT-like: air at -1024, soft tissue, bone up to 3000 HU, plus uniform noise over the whole range."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(-1024, 3001, size=shape)
    tissue = rng.random(shape) < 0.5
    volume[tissue] = rng.normal(40, 60, size=int(tissue.sum())).round().clip(-1024, 3000)
    volume.flat[0], volume.flat[-1] = -1024, 3000  # both extremes present
    return volume.astype(dtype)


def mr_volume(shape=(6, 96, 128), seed=1, dtype=np.float64, negatives=False):
    """MR-like: a background of exact zeros, a long-tailed positive foreground."""
    rng = np.random.default_rng(seed)
    volume = rng.gamma(2.0, 150.0, size=shape)
    volume[rng.random(shape) < 0.3] = 0
    if negatives:
        volume[rng.random(shape) < 0.05] = -rng.random() * 50 - 1
    return volume.astype(dtype)


def assert_same(actual, expected):
    assert actual.dtype == np.uint8
    assert actual.shape == expected.shape
    mismatch = np.flatnonzero(actual != expected)
    assert mismatch.size == 0, (
        f"{mismatch.size} voxels differ from the reference, first at flat index {mismatch[:5].tolist()}: "
        f"got {actual.reshape(-1)[mismatch[:5]].tolist()}, reference {expected.reshape(-1)[mismatch[:5]].tolist()}")


# --- CT windows ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,width,level", PRESETS)
def test_ct_presets_match_reference(name, width, level):
    image = ct_volume()
    expected = reference_ct(image, width, level)
    assert_same(normalize_volume(image, IntensitySettings.parse(name)), expected)
    assert_same(normalize_volume(image, IntensitySettings.window(width, level)), expected)
    # a meaningful test: the output spans the full range and is not all one value
    assert expected.min() == 0 and expected.max() == 255


def test_custom_window_matches_reference():
    image = ct_volume(seed=3)
    assert_same(normalize_volume(image, IntensitySettings.parse("350,50")), reference_ct(image, 350, 50))
    assert_same(normalize_volume(image, IntensitySettings.parse("255.5,-12.25")), reference_ct(image, 255.5, -12.25))


def test_window_wider_than_data_uses_clipped_volume_min_max():
    # the window [-1000, 1000] is wider than this volume's data [-100, 300]: the reference rescales
    # by the clipped volume's own min and max, not by the window bounds
    rng = np.random.default_rng(5)
    image = rng.integers(-100, 301, size=(3, 40, 50)).astype(np.int16)
    image.flat[0], image.flat[1] = -100, 300
    out = normalize_volume(image, IntensitySettings.window(2000, 0))
    assert_same(out, reference_ct(image, 2000, 0))
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("name,width,level", PRESETS)
def test_float32_ct_matches_reference(name, width, level):
    # A float32 CT (e.g. a resampled Slicer volume): the reference works in float32 here
    # (np.clip of a float32 array with Python-float bounds stays float32).
    rng = np.random.default_rng(14)
    image = np.where(rng.random((8, 512, 512)) < 0.5, rng.random((8, 512, 512)) * 4024 - 1024,
                     rng.normal(level, width, (8, 512, 512))).clip(-1024, 3000).astype(np.float32)
    assert_same(normalize_volume(image, IntensitySettings.parse(name)), reference_ct(image, width, level))


# --- MR percentile clipping ------------------------------------------------------------------

@pytest.mark.parametrize("negatives", [False, True])
def test_mr_float64_matches_reference(negatives):
    image = mr_volume(negatives=negatives)
    out = normalize_volume(image, IntensitySettings.parse("percentile"))
    expected = reference_mr(image)
    assert_same(out, expected)
    assert np.all(out[image == 0] == 0)
    assert expected.max() == 255


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32])
def test_mr_integer_matches_reference(dtype):
    image = mr_volume(seed=4).round().astype(dtype)
    assert_same(normalize_volume(image, IntensitySettings()), reference_mr(image))


def test_mr_float32_matches_reference():
    # SimpleITK gives float32 arrays for many MR files; np.percentile of a float32 array returns
    # float32, so the reference's whole computation is in float32.
    rng = np.random.default_rng(2)
    image = (rng.random((16, 512, 512)) * 3000).astype(np.float32)
    image[image < 50] = 0
    assert_same(normalize_volume(image, IntensitySettings()), reference_mr(image))


# --- slabs, input untouched, degenerate volumes ----------------------------------------------

def test_volume_larger_than_one_slab_matches_reference():
    image = ct_volume(shape=(5, 1024, 1024), seed=7)
    assert image.size > 1 << 22
    assert_same(normalize_volume(image, IntensitySettings.parse("lung")), reference_ct(image, 1500, -160))
    mr = np.abs(image).astype(np.int16)  # zeros and positives, spanning several slabs
    assert_same(normalize_volume(mr, IntensitySettings()), reference_mr(mr))


@pytest.mark.parametrize("settings", [IntensitySettings.parse("soft-tissue"), IntensitySettings()])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_input_is_never_modified(settings, dtype):
    image = ct_volume(seed=8, dtype=dtype)
    image[0, :10] = 0
    before = image.copy()
    out = normalize_volume(image, settings)
    assert image.dtype == dtype
    np.testing.assert_array_equal(image, before)
    assert out is not image and not np.shares_memory(out, image)


@pytest.mark.parametrize("value", [-1024, 0, 40, 500])
@pytest.mark.parametrize("settings", [IntensitySettings.parse("soft-tissue"), IntensitySettings()],
                         ids=["window", "percentile"])
def test_constant_volume_gives_zeros_without_warning(value, settings):
    image = np.full((3, 20, 30), value, dtype=np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_volume(image, settings)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.all(out == 0)


def test_constant_float_volume_gives_zeros_without_warning():
    image = np.full((2, 8, 9), 123.5, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for settings in (IntensitySettings.parse("brain"), IntensitySettings()):
            assert np.all(normalize_volume(image, settings) == 0)


def test_all_zero_mr_volume_gives_zeros():
    image = np.zeros((4, 16, 16), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_volume(image, IntensitySettings())
    assert out.dtype == np.uint8 and out.shape == image.shape and not out.any()


# --- IntensitySettings.parse ------------------------------------------------------------------

@pytest.mark.parametrize("name,width,level", PRESETS)
def test_parse_presets(name, width, level):
    settings = IntensitySettings.parse(name)
    assert settings.mode == "window"
    assert (settings.width, settings.level) == (width, level)
    assert CT_PRESETS[name] == (width, level)


def test_parse_custom_window_and_percentile():
    custom = IntensitySettings.parse("350,50")
    assert (custom.mode, custom.width, custom.level) == ("window", 350.0, 50.0)
    assert IntensitySettings.parse(" 350 , -50 ").level == -50.0
    percentile = IntensitySettings.parse("percentile")
    assert percentile.mode == "percentile"
    assert (percentile.lower_percentile, percentile.upper_percentile) == (0.5, 99.5)


def test_parse_auto():
    ct_like = np.array([[-1024, 40], [300, 1200]], dtype=np.int16)
    mr_like = np.array([[0, 40], [300, 1200]], dtype=np.int16)
    soft = IntensitySettings.parse("soft-tissue")
    percentile = IntensitySettings.parse("percentile")
    assert IntensitySettings.parse("auto", image=ct_like) == soft
    assert IntensitySettings.parse("auto", image=mr_like) == percentile
    assert IntensitySettings.parse("auto", image=mr_like, modality="CT") == soft
    assert IntensitySettings.parse("auto", image=ct_like, modality="MR") == percentile
    assert IntensitySettings.parse("auto", modality="CT") == soft


@pytest.mark.parametrize("text", ["foo", "0,40", "-400,40", "400", "400,40,1", "a,b", "nan,40"])
def test_parse_rejects_bad_text_naming_the_value(text):
    with pytest.raises(SettingsError) as caught:
        IntensitySettings.parse(text)
    message = str(caught.value)
    if text in ("0,40", "-400,40", "nan,40"):
        assert "width" in message and text.split(",")[0] in message
    else:
        assert repr(text) in message


@pytest.mark.parametrize("text", ["400,nan", "inf,40", "400,inf", "400,-inf"])
def test_parse_rejects_non_finite_window(text):
    # a NaN or infinite width/level is not a window: it must be refused, not turned into garbage
    with pytest.raises(SettingsError):
        IntensitySettings.parse(text)


def test_keys_are_distinct_per_setting_and_stable():
    settings = [IntensitySettings.parse(t) for t in ("soft-tissue", "lung", "brain", "350,50", "350,40", "percentile")]
    keys = [s.key for s in settings]
    assert len(set(keys)) == len(keys)
    assert IntensitySettings.parse("400,40").key == IntensitySettings.parse("soft-tissue").key
    assert IntensitySettings.parse("percentile").key == IntensitySettings().key


# --- non-finite voxels ------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [IntensitySettings.parse("percentile"), IntensitySettings.preset("soft-tissue"),
                                      IntensitySettings.window(5000, 1000)])
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_become_0_and_leave_the_others_as_they_were(settings, poison):
    # one bad voxel used to poison min, max and percentiles: every voxel became 0
    image = mr_volume(seed=9).astype(np.float32) - 200  # negatives too, so the window's min-max matters
    poisoned = image.copy()
    poisoned[0, 0, :3] = poison
    with pytest.warns(RuntimeWarning, match="^3 non-finite voxel"):
        out = normalize_volume(poisoned, settings)
    assert np.all(out[0, 0, :3] == 0)  # the lowest intensity
    finite = np.isfinite(poisoned)  # the others: exactly as if the bad voxels were not there at all
    np.testing.assert_array_equal(out[finite], normalize_volume(image[finite].reshape(1, 1, -1), settings).ravel())
    assert out[finite].max() == 255


def test_an_all_non_finite_image_is_refused():
    with pytest.raises(ImageError, match="holds no finite voxel"):
        normalize_volume(np.full((2, 3, 3), np.nan), IntensitySettings.preset("soft-tissue"))


def test_auto_sees_a_ct_through_nan_voxels():
    image = np.full((2, 4, 4), -1000.0)
    image[0, 0, 0] = np.nan
    assert IntensitySettings.parse("auto", image).key == IntensitySettings.preset("soft-tissue").key
    image[1] = -np.inf  # infinities are not Hounsfield units
    image[0] = 50.0
    assert IntensitySettings.parse("auto", image).mode == "percentile"
