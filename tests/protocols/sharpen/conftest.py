"""Ground truth for the sharpening kernels, built from the real map EMD-3488.

* ``truth``: the deposited EMD-3488 map (100^3, 1.05 A/px), read with mrcfile.
* ``blurred``: truth blurred with a known B = 100 A^2 (exp(-100 s^2/4)).
* ``halves``: two copies of ``blurred`` plus independent white Gaussian noise whose power is
  6x the signal power of ``blurred`` at 3.5 A, so the half-map FSC (S/(S+N)) is 0.143 there.
* ``mask``: soft mask from thresholding the (smoothed) truth, dilated 3 voxels, soft edge.
* ``truth_resolution``: the resolution the masked half maps really have, from the noise model:
  for independent noise FSC_half = CC(half1, S) x CC(half2, S) per shell, where S is the
  masked noise-free signal; computed without using the half-map FSC code path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from emforge.numerics import (
    amplitude_profile,
    bfactor_filter,
    fsc_crossing,
    fsc_rfft,
    rfftn,
    shell_frequencies,
)

# FFTW_MEASURE planning costs seconds per new shape on a loaded 2-core machine; tests only need
# correct answers, so plan with FFTW_ESTIMATE unless the environment says otherwise.
os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"
PIXEL = 1.05
B_BLUR = 100.0
TARGET_RES = 3.5


@pytest.fixture(scope="session")
def pixel_size() -> float:
    return PIXEL


@pytest.fixture(scope="session")
def truth() -> np.ndarray:
    if not MAP.exists():
        pytest.skip(f"real test data missing: {MAP}")
    import mrcfile

    with mrcfile.open(MAP, permissive=True) as mrc:
        return np.ascontiguousarray(mrc.data, dtype=np.float32)


@pytest.fixture(scope="session")
def blurred(truth) -> np.ndarray:
    return bfactor_filter(truth, B_BLUR, pixel_size=PIXEL)


@pytest.fixture(scope="session")
def noise_sigma(blurred) -> float:
    """Real-space sigma of white noise with Fourier power 6 x signal power at 3.5 A."""
    s, rms = amplitude_profile(blurred, pixel_size=PIXEL, kind="rms")
    signal_power = np.interp(1.0 / TARGET_RES, s, rms**2)
    return float(np.sqrt(6.0 * signal_power / blurred.size))


@pytest.fixture(scope="session")
def halves(blurred, noise_sigma) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240605)
    n1 = rng.standard_normal(blurred.shape, dtype=np.float32)
    n2 = rng.standard_normal(blurred.shape, dtype=np.float32)
    return blurred + np.float32(noise_sigma) * n1, blurred + np.float32(noise_sigma) * n2


@pytest.fixture(scope="session")
def average(halves) -> np.ndarray:
    return 0.5 * (halves[0] + halves[1])


@pytest.fixture(scope="session")
def mask(truth) -> np.ndarray:
    smooth = ndimage.gaussian_filter(truth, 1.5)
    core = ndimage.binary_dilation(smooth > 0.5 * smooth.std(), iterations=3)
    return np.clip(ndimage.gaussian_filter(core.astype(np.float32), 2.0), 0.0, 1.0)


@pytest.fixture(scope="session")
def truth_resolution(halves, blurred, mask) -> float:
    sig = rfftn(blurred * mask)
    cc1 = fsc_rfft(rfftn(halves[0] * mask), sig, real_shape=blurred.shape)
    cc2 = fsc_rfft(rfftn(halves[1] * mask), sig, real_shape=blurred.shape)
    s = shell_frequencies(blurred.shape, pixel_size=PIXEL)
    return fsc_crossing(s, cc1 * cc2, 0.143)


def _masked_cc(a, b, w) -> float:
    """Real-space correlation of ``a`` and ``b`` weighted by the soft mask ``w``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    w = np.asarray(w, np.float64)
    a = a - np.average(a, weights=w)
    b = b - np.average(b, weights=w)
    return float(np.sum(w * a * b) / np.sqrt(np.sum(w * a * a) * np.sum(w * b * b)))


@pytest.fixture(scope="session")
def masked_cc():
    return _masked_cc
