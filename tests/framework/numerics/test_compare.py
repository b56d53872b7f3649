"""emforge.numerics.compare against the comparators' analytic definitions (pair by pair)."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import compare as cm


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 16, 16))
    b = rng.standard_normal((3, 16, 16)) + 0.5 * a[:3]
    return a, b


def test_ccc_self_is_one_and_matches_corrcoef(data):
    a, b = data
    np.testing.assert_allclose(np.diag(cm.ccc(a, a)), 1.0, atol=1e-12)
    want = np.array([[np.corrcoef(x.ravel(), y.ravel())[0, 1] for y in b] for x in a])
    np.testing.assert_allclose(cm.ccc(a, b), want, atol=1e-12)
    mask = np.zeros((16, 16))
    mask[3:12, 2:14] = 1
    sel = mask > 0.5
    want = np.array([[np.corrcoef(x[sel], y[sel])[0, 1] for y in b] for x in a])
    np.testing.assert_allclose(cm.ccc(a, b, mask=mask), want, atol=1e-12)
    assert cm.cost("ccc", a[0], a[0])[0, 0] == pytest.approx(-1.0)


def _fit(x, y):
    """Least-squares a*y + b to x; undone if a <= 0 (EMAN2 normalize.toimage in sqeuclidean)."""
    s, o = np.polyfit(y, x, 1)
    return s * y + o if s > 0 else y


def test_sqeuclidean_plain_normto_zeromask(data):
    a, b = data
    a = a.copy()
    a[:, :4] = 0  # zeros for zeromask
    want = np.array([[np.mean((x - y) ** 2) for y in b] for x in a])
    np.testing.assert_allclose(cm.sqeuclidean(a, b), want, rtol=1e-10)
    want = np.array(
        [[np.mean((x.ravel() - _fit(x.ravel(), y.ravel())) ** 2) for y in b] for x in a]
    )
    np.testing.assert_allclose(cm.sqeuclidean(a, b, normto=True), want, rtol=1e-8)
    neg = -b  # anticorrelated reference: the fit's scale <= 0 is undone
    want = np.array([[np.mean((x - y) ** 2) for y in neg] for x in a[:3]])
    np.testing.assert_allclose(cm.sqeuclidean(a[:3], neg, normto=True)[np.eye(3, dtype=bool)],
                               np.diag(want), rtol=1e-10)  # fmt: skip

    def zm(x, y):
        v = (x != 0) & (y != 0)
        return np.mean((x[v] - _fit(x[v], y[v])) ** 2)

    want = np.array([[zm(x, y) for y in b] for x in a])
    np.testing.assert_allclose(cm.sqeuclidean(a, b, normto=True, zeromask=True), want, rtol=1e-8)


def _ring_sums(x, y):
    fx, fy = np.fft.fft2(x), np.fft.fft2(y)
    n = x.shape[0]
    k = np.fft.fftfreq(n) * n
    ring = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    out = []
    for i in range(n // 2):
        s = ring == i
        num = np.real(fx[s] * np.conj(fy[s])).sum()
        out.append((num / np.sqrt((abs(fx[s]) ** 2).sum() * (abs(fy[s]) ** 2).sum()), s.sum()))
    return np.array(out)


def test_frc_curve_identity_and_definition(data):
    a, b = data
    np.testing.assert_allclose(cm.frc_curve(a, a)[np.arange(4), np.arange(4)], 1.0, atol=1e-12)
    want = np.array([[_ring_sums(x, y)[:, 0] for y in b] for x in a])
    np.testing.assert_allclose(cm.frc_curve(a, b), want, atol=1e-10)
    z = a.copy()
    z[:, :, :3] = 0
    want = np.array([[_ring_sums(x * ((x != 0) & (y != 0)), y * ((x != 0) & (y != 0)))[:, 0]
                      for y in b] for x in z])  # fmt: skip
    np.testing.assert_allclose(cm.frc_curve(z, b, zeromask=True), want, atol=1e-10)


def test_frc_weighted_mean(data):
    a, b = data
    ps, minres, maxres = 2.0, 100.0, 6.0
    snr = np.linspace(2, -1, 8)  # negative values count as 0.001
    got = cm.frc(a, b, pixel_size=ps, minres=minres, maxres=maxres, snr=snr)
    i = np.arange(8)
    pmin, pmax = ps * 16 / minres, ps * 16 / maxres
    band = (np.tanh(5 * (i - pmin) / pmin) + 1) / 2 * (1 - np.tanh(i - pmax)) / 2
    for n, x in enumerate(a):
        for m, y in enumerate(b):
            r = _ring_sums(x, y)
            w = r[:, 1] * band * np.where(snr <= 0, 0.001, snr)
            assert got[n, m] == pytest.approx((w * r[:, 0]).sum() / w.sum(), abs=1e-10)
    assert cm.frc(a, a, pixel_size=ps)[0, 0] == pytest.approx(1.0)
    assert cm.cost("frc", a, a, pixel_size=ps)[0, 0] == pytest.approx(-1.0)


def test_phase_error_definition(data):
    a, b = data
    ps = 3.0
    got = cm.phase(a, b, pixel_size=ps, minres=100, maxres=8, ampweight=True)
    band = cm.frc_band_weights(16, pixel_size=ps, minres=100, maxres=8)
    k = np.fft.fftfreq(16) * 16
    ring = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    sel = ring < 8
    for n, x in enumerate(a):
        for m, y in enumerate(b):
            fx, fy = np.fft.fft2(x)[sel], np.fft.fft2(y)[sel]
            dphi = np.angle(fx) - np.angle(fy)
            w = band[ring[sel]] * abs(fx) * abs(fy)
            want = (w * np.arccos(np.cos(dphi))).sum() / w.sum()
            assert got[n, m] == pytest.approx(want, abs=1e-9)
    np.testing.assert_allclose(np.diag(cm.phase(a, a, pixel_size=ps)), 0.0, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="references"):
        cm.ccc(np.zeros((2, 8, 8)), np.zeros((2, 8, 6)))
    with pytest.raises(ValueError, match="name"):
        cm.cost("dot", np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="snr"):
        cm.frc(np.ones((2, 8, 8)), np.ones((2, 8, 8)), pixel_size=1.0, snr=np.ones(3))
