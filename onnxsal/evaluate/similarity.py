"""Adebayo et al.'s four similarities between an original and a randomised map.

Spearman rank correlation of |maps| and of the signed maps (scipy's, ties
ranked by their mean), SSIM of the |maps| each scaled to [0, 1] by its maximum
(scikit-image, data range 1), and the Pearson correlation of the two maps'
histograms of oriented gradients (scikit-image's HOG of the same scaled maps).
SSIM and HOG need 2-D maps; a constant map correlates with nothing (NaN).
"""

from __future__ import annotations

import warnings

import numpy as np


def similarities(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every measure between two maps of one sample (same shape)."""
    return {name: float(measure(a, b)) for name, measure in MEASURES.items()}


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    return spearman(np.abs(a), np.abs(b))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    return spearmanr(a, b).statistic


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    if np.ndim(a) != 2 or min(np.shape(a)) < 7:
        return np.nan
    return structural_similarity(_scaled(a), _scaled(b), data_range=1.0)


def hog(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.feature import hog as histogram

    if np.ndim(a) != 2 or min(np.shape(a)) < 24:  # at least one 3x3 block of 8x8 cells
        return np.nan
    fa, fb = histogram(_scaled(a)), histogram(_scaled(b))
    if np.ptp(fa) == 0 or np.ptp(fb) == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.corrcoef(fa, fb)[0, 1])


def _scaled(m: np.ndarray) -> np.ndarray:
    m = np.abs(np.asarray(m, dtype=np.float64))
    top = m.max()
    return m / top if top > 0 else m


MEASURES = {"spearman_abs": spearman_abs, "spearman": spearman, "ssim": ssim, "hog": hog}
