"""Run reports of the sharpening protocols: PNG plots and a small HTML page that shows them.

Each plot is a function of plain arrays; :func:`write_report` lays out whichever panels a
protocol provides (FSC curves, Guinier plot with its fit, applied filter vs resolution, the
B scan, central slices before/after) and writes ``report.png`` and ``report.html``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Panel", "write_report", "resolution_axis"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def resolution_axis(ax: Any, s_max: float) -> None:
    """Label a 1/Å axis with resolutions in Å on a twin axis on top."""
    top = ax.secondary_xaxis(
        "top", functions=(lambda s: 1.0 / np.maximum(s, 1e-6), lambda d: 1.0 / np.maximum(d, 1e-6))
    )
    ticks = [d for d in (50, 20, 10, 7, 5, 4, 3.5, 3, 2.5, 2) if 1.0 / d <= s_max * 1.001]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{d:g}" for d in ticks])
    top.set_xlabel("resolution (Å)")


class Panel:
    """One plot of a report: ``kind`` selects the drawing, ``data`` holds its arrays."""

    def __init__(self, kind: str, title: str, **data: Any) -> None:
        self.kind, self.title, self.data = kind, title, data

    def draw(self, ax: Any) -> None:
        getattr(self, f"_{self.kind}")(ax, **self.data)
        ax.set_title(self.title, fontsize=10)

    @staticmethod
    def _curves(
        ax: Any,
        s: np.ndarray,
        curves: dict[str, np.ndarray],
        ylabel: str,
        hlines: Sequence[float] = (),
        vlines: dict[str, float] | None = None,
        ylim=None,
    ) -> None:
        for name, values in curves.items():
            ax.plot(s, values, label=name, lw=1.4)
        for h in hlines:
            ax.axhline(h, color="gray", ls=":", lw=1)
        for name, d in (vlines or {}).items():
            if np.isfinite(d) and d > 0:
                ax.axvline(1.0 / d, color="red", ls="--", lw=1)
                ax.text(
                    1.0 / d,
                    ax.get_ylim()[1] if ylim is None else ylim[1],
                    f" {name}",
                    color="red",
                    va="top",
                    fontsize=8,
                )
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        resolution_axis(ax, float(np.nanmax(s)))

    @staticmethod
    def _guinier(
        ax: Any,
        s2: np.ndarray,
        ln_amp: np.ndarray,
        b: float,
        intercept: float,
        fit_range: tuple[float, float],
    ) -> None:
        ok = np.isfinite(ln_amp)
        ax.plot(s2[ok], ln_amp[ok], ".", ms=4, label="ln |F| (FSC-weighted)")
        if np.isfinite(intercept):
            d_max, d_min = fit_range
            x = np.linspace(1 / d_max**2, 1 / d_min**2, 50)
            # b is the B applied (RELION sign): the fitted fall-off is ln A = a + b s²/4
            ax.plot(x, intercept + b * x / 4, "r-", lw=1.5, label=f"fit: ln A = a − {-b:.1f} s²/4")
            ax.axvspan(1 / d_max**2, 1 / d_min**2, color="red", alpha=0.07)
        ax.set_xlabel("s² (1/Å²)")
        ax.set_ylabel("ln amplitude")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    @staticmethod
    def _scan(ax: Any, x: np.ndarray, y: np.ndarray, best: int, xlabel: str, ylabel: str) -> None:
        ax.plot(x, y, "o-", ms=3)
        ax.plot([x[best]], [y[best]], "r*", ms=12, label=f"best: {x[best]:.0f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    @staticmethod
    def _image(ax: Any, image: np.ndarray, label: str, xlabel: str, ylabel: str) -> None:
        im = ax.imshow(image, cmap="viridis", interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)

    @staticmethod
    def _slices(ax: Any, before: np.ndarray, after: np.ndarray) -> None:
        c = before.shape[0] // 2

        def norm(a: np.ndarray) -> np.ndarray:
            a = a - a.mean()
            return a / (a.std() + 1e-12)

        ax.imshow(np.hstack([norm(before[c]), norm(after[c])]), cmap="gray", vmin=-3, vmax=3)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("central z slice: input (left), output (right)")


def write_report(
    folder: Path, title: str, panels: list[Panel], table: list[tuple[str, str]]
) -> tuple[str, str]:
    """Write ``report.png`` (all panels) and ``report.html`` (title, table, the PNG)."""
    plt = _mpl()
    n = len(panels)
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(6.2 * cols, 4.6 * rows), constrained_layout=True, squeeze=False
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        panel.draw(ax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    png = folder / "report.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    rows_html = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in table
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><table>{rows_html}</table><img src='report.png' style='max-width:100%'>"
    )
    out = folder / "report.html"
    out.write_text(page, encoding="utf-8")
    return str(png), str(out)
