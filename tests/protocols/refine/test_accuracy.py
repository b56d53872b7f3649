"""Pose accuracy of the similarity matrix on noisy CTF-corrupted views with a good reference.

Guards the comparator chain the loop uses by default (``simcmp`` FRC with zeromask and
snrweight from :func:`_files.ring_snr`, scored on each particle's ``simcandidates`` best
references): with a reference that holds the information, it must find the poses at least as
well as plain ``ccc`` (an earlier SNR estimate made it ~3x worse than ``ccc``).
"""

from __future__ import annotations

import numpy as np

from emforge.numerics import fft, phase_flip_2d
from emforge.protocols.refine import kernels as K
from emforge.protocols.refine._files import ctf_of, resolved_cmp

from ._phantom import phantom, project, random_eulers, references

DELTA = 15.0
PX = 3.0


def _noisy_views(n_img=160, n=32, snr=2.0, seed=3):
    rng = np.random.default_rng(seed)
    vol = phantom(n, seed=1, blobs=8)
    true = random_eulers(rng, n_img)
    clean = project(vol, true)
    meta = {"defocus_u": rng.uniform(10000, 30000, n_img), "defocus_angle": np.zeros(n_img),
            "voltage": np.full(n_img, 300.0), "cs": np.full(n_img, 2.7),
            "amplitude_contrast": np.full(n_img, 0.1), "phase_shift": np.zeros(n_img),
            "has_ctf": np.bool_(True)}  # fmt: skip
    meta["defocus_v"] = meta["defocus_u"]
    ctf = ctf_of(meta, np.arange(n_img), n, PX)
    sig = fft.irfftn(fft.rfftn(clean, axes=(-2, -1)) * ctf, shape=clean.shape, axes=(-2, -1))
    noisy = sig + rng.standard_normal(sig.shape) * np.sqrt(sig.var(axis=(1, 2)).mean() / snr)
    return vol, true, phase_flip_2d(noisy.astype(np.float32), ctf), meta


def _median_error(sim, eul, true):
    c = K.classify(sim, sep=1)
    b = c.reference[:, 0]
    e, _ = K.poses_from_alignment(eul[b], c.angle[:, 0], c.dx[:, 0], c.dy[:, 0], c.mirror[:, 0])
    return float(np.median(K.angular_error(e, true)))


def test_default_frc_snrweight_finds_poses_as_well_as_ccc():
    vol, true, flipped, meta = _noisy_views()
    eul, refs = references(vol, DELTA)
    rows = np.arange(len(true))
    cmp = {"name": "frc", "minres": 200.0, "maxres": 8.0, "snrweight": True, "zeromask": True,
           "sweight": True}  # fmt: skip
    name, opts = resolved_cmp(cmp, meta=meta, rows=rows, box=32, px=PX, images=flipped)
    assert opts["snr"].shape == (len(true), 16) and np.all(np.isfinite(opts["snr"]))
    err_frc = _median_error(K.similarity_matrix(flipped, refs, cmp=name, cmp_options=opts,
                                                candidates=10), eul, true)  # fmt: skip
    err_ccc = _median_error(K.similarity_matrix(flipped, refs, cmp="ccc"), eul, true)
    assert err_frc <= 1.5 * DELTA
    assert err_frc <= err_ccc + 3.0
