"""The table of vector-Jacobian rules: ONNX op type -> rule.

A rule takes a `Ctx` (the forward node, the incoming gradient of each
output, a Builder) and returns one gradient per input, or None where an
input gets nothing. Ops not listed here stop the engine with an error that
names them; ops whose outputs are never floating point (Shape, ArgMax,
comparisons) need no rule because no gradient flows through them.
"""

from __future__ import annotations

from onnxsal.autodiff.engine import Rule
from onnxsal.autodiff.rules import (
    activations,
    arithmetic,
    conv,
    linear,
    ml,
    movement,
    normalization,
    pooling,
    quantize,
    reduce,
    resize,
    softmax,
)

RULES: dict[str, Rule] = {
    # arithmetic, with numpy broadcasting
    "Add": arithmetic.add,
    "Sub": arithmetic.sub,
    "Mul": arithmetic.mul,
    "Div": arithmetic.div,
    "Pow": arithmetic.pow_,
    "Sum": arithmetic.sum_,
    "Mean": arithmetic.mean,
    "Max": arithmetic.max_min,
    "Min": arithmetic.max_min,
    "Where": arithmetic.where,
    "Neg": activations.neg,
    # unary elementwise: g * f'(x)
    **{op: activations.unary for op in activations.DERIVATIVES},
    "Relu": activations.relu,
    "Floor": activations.piecewise_constant,
    "Ceil": activations.piecewise_constant,
    "Round": activations.piecewise_constant,
    "Sign": activations.piecewise_constant,
    "Softmax": softmax.softmax,
    "LogSoftmax": softmax.log_softmax,
    # linear algebra
    "Gemm": linear.gemm,
    "MatMul": linear.matmul,
    "Einsum": linear.einsum,
    "Conv": conv.conv,
    "ConvTranspose": conv.conv_transpose,
    # pooling and normalisation
    "MaxPool": pooling.max_pool,
    "AveragePool": pooling.average_pool,
    "GlobalAveragePool": pooling.global_average_pool,
    "GlobalMaxPool": pooling.global_max_pool,
    "LRN": pooling.lrn,
    "BatchNormalization": normalization.batch_norm,
    "LayerNormalization": normalization.layer_norm,
    "InstanceNormalization": normalization.instance_norm,
    "GroupNormalization": normalization.group_norm,
    "ReduceSum": reduce.reduce_sum,
    "ReduceMean": reduce.reduce_mean,
    "ReduceMax": reduce.reduce_max,
    "ReduceMin": reduce.reduce_min,
    "ReduceL1": reduce.reduce_l1,
    "ReduceL2": reduce.reduce_l2,
    "ReduceSumSquare": reduce.reduce_sum_square,
    "ReduceLogSumExp": reduce.reduce_log_sum_exp,
    # data movement
    "Identity": movement.identity,
    "Dropout": movement.dropout,
    "Cast": movement.cast,
    "CastLike": movement.cast_like,
    "Reshape": movement.reshape_back,
    "Flatten": movement.reshape_back,
    "Squeeze": movement.reshape_back,
    "Unsqueeze": movement.reshape_back,
    "Transpose": movement.transpose,
    "Expand": movement.expand,
    "Concat": movement.concat,
    "Split": movement.split,
    "Slice": movement.slice_,
    "Pad": movement.pad,
    "Gather": movement.gather_like,
    "GatherElements": movement.gather_elements,
    "GatherND": movement.gather_like,
    "Tile": movement.gather_like,
    "Resize": resize.resize,
    # ai.onnx.ml (scikit-learn converters); tree ensembles and encoders: ml.NO_GRADIENT
    "ai.onnx.ml::Scaler": ml.scaler,
    "ai.onnx.ml::Normalizer": ml.normalizer,
    "ai.onnx.ml::LinearClassifier": ml.linear_classifier,
    "ai.onnx.ml::LinearRegressor": ml.linear_regressor,
    "ai.onnx.ml::Binarizer": ml.binarizer,
    "ai.onnx.ml::Imputer": ml.imputer,
    "ai.onnx.ml::ArrayFeatureExtractor": ml.array_feature_extractor,
    "ai.onnx.ml::FeatureVectorizer": ml.feature_vectorizer,
    # quantisation: straight-through, zero where the quantiser saturated
    "QuantizeLinear": quantize.quantize_linear,
    "DequantizeLinear": quantize.dequantize_linear,
    "DynamicQuantizeLinear": quantize.dynamic_quantize_linear,
}

# Why some operators have no rule: shown in the error that names them.
NO_RULE_REASONS: dict[str, str] = {
    **ml.NO_GRADIENT,
    "NonMaxSuppression": "it selects boxes by comparing scores (no gradient); explain the "
    "scores before it (its second input) with output=",
    "TopK": "it selects elements; explain the tensor before it with output=",
    "If": "a branch chosen at run time; folded when its condition does not depend on the input",
    "Loop": "a loop; unrolled when its trip count does not depend on the input's values",
    "Scan": "a scan; unrolled for the sequence length of the input at hand",
}

__all__ = ["NO_RULE_REASONS", "RULES"]
