"""Is the map telling the truth? Sanity checks and faithfulness metrics on any ONNX model.

Every metric runs on onnxruntime through an Explainer: randomising a layer is
rewriting its initializers, and every perturbation metric is batched forward
passes, so the metrics judge any map, a gradient method's or one a user brings.
"""

try:  # rank statistics, sparse imputation, SSIM and HOG
    import scipy  # noqa: F401
    import skimage  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "onnxsal.evaluate needs scipy and scikit-image: pip install 'onnxsal[evaluate]'"
    ) from exc

from onnxsal.evaluate.perturbation import Curve, deletion, insertion
from onnxsal.evaluate.randomization import Randomization, randomization
from onnxsal.evaluate.relevance import Positions, method_relevance, random_maps, relevance
from onnxsal.evaluate.road import Road, road
from onnxsal.evaluate.statistics import complexity, max_sensitivity, sparseness

__all__ = [
    "Curve",
    "Positions",
    "Randomization",
    "Road",
    "complexity",
    "deletion",
    "insertion",
    "max_sensitivity",
    "method_relevance",
    "random_maps",
    "randomization",
    "relevance",
    "road",
    "sparseness",
]
