"""Adebayo et al.'s four similarities between an original and a randomised map.

Spearman rank correlation of |maps| and of the signed maps (ranks of ties
averaged, as scipy ranks them), SSIM of the |maps| each scaled to [0, 1] by its
maximum (scikit-image, data range 1), and the Pearson correlation of the two
maps' histograms of oriented gradients (scikit-image's HOG of the same scaled
maps). SSIM and HOG need 2-D maps; a constant map correlates with nothing (NaN).
The original map is compared with every randomised one, so what depends on it
alone (its ranks, its HOG) is computed once (`Reference`).
"""

from __future__ import annotations

import warnings

import numpy as np

MEASURES = ("spearman_abs", "spearman", "ssim", "hog")
SSIM_SIDE, HOG_SIDE = 7, 24  # SSIM's window; HOG's 3x3 block of 8x8 cells


class Reference:
    """One sample's original map, ready to be compared with many others."""

    def __init__(self, original: np.ndarray):
        self.map = np.asarray(original, dtype=np.float64)
        self._abs_ranks = _ranks(np.abs(self.map))
        self._ranks = _ranks(self.map)
        self._scaled = _scaled(self.map)
        self._hog = _hog(self._scaled)

    def compare(self, other: np.ndarray) -> dict[str, float]:
        """Every measure between the original map and `other` (same shape)."""
        other = np.asarray(other, dtype=np.float64)
        scaled = _scaled(other)
        return {
            "spearman_abs": _pearson(self._abs_ranks, _ranks(np.abs(other))),
            "spearman": _pearson(self._ranks, _ranks(other)),
            "ssim": _ssim(self._scaled, scaled),
            "hog": _pearson(self._hog, _hog(scaled)),
        }


def similarities(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every measure between two maps of one sample."""
    return Reference(a).compare(b)


def _ranks(m: np.ndarray) -> np.ndarray | None:
    from scipy.stats import rankdata

    flat = np.ravel(m)
    return None if np.ptp(flat) == 0 else rankdata(flat)


def _pearson(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None or np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.corrcoef(a, b)[0, 1])


def _scaled(m: np.ndarray) -> np.ndarray:
    m = np.abs(m)
    top = m.max()
    return m / top if top > 0 else m


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    if a.ndim != 2 or min(a.shape) < SSIM_SIDE:
        return np.nan
    return float(structural_similarity(a, b, data_range=1.0))


def _hog(scaled: np.ndarray) -> np.ndarray | None:
    from skimage.feature import hog

    if scaled.ndim != 2 or min(scaled.shape) < HOG_SIDE:
        return None
    return hog(scaled)


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of |a| and |b|."""
    return _pearson(_ranks(np.abs(a)), _ranks(np.abs(b)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the signed maps."""
    return _pearson(_ranks(a), _ranks(b))
