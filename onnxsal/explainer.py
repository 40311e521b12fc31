"""`Explainer`: gradient saliency maps for any ONNX model on onnxruntime."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsal import metadata, runtime
from onnxsal.autodiff import Rewrite
from onnxsal.errors import InputError, OnnxsalWarning, TargetError
from onnxsal.graph.builder import is_float, static_dims
from onnxsal.graph.layers import Layer
from onnxsal.graph.load import ModelSource, load_model
from onnxsal.graph.normalize import normalize
from onnxsal.methods import Explanation, Request, get_method
from onnxsal.modifiers import MODIFIERS
from onnxsal.postprocess import modify
from onnxsal.runner import Runner
from onnxsal.saliency_graph import GraphSpec, ModelFacts
from onnxsal.targets import TARGET_INPUT, UNIT_SCORES

__all__ = ["Explainer", "Explanation"]


class Explainer:
    """Explains an ONNX model's outputs (or any layer) with gradient saliency maps.

    Args:
        model: a path, serialized bytes, or an onnx.ModelProto (left untouched).
        input: the input to explain; needed only when the model has several float inputs.
        output: the output whose classes are explained (default: the first).
        keep_softmax: explain the probability instead of the logit when the model ends
            in Softmax/LogSoftmax (default: the logit, as Captum and keras-vis do).
        providers: onnxruntime execution providers; None picks CUDA when available.
        session_options: an onnxruntime.SessionOptions for every session.
        verify: check an opset upgrade against the original model on random input.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        input: str | None = None,
        output: str | None = None,
        keep_softmax: bool = False,
        providers: Sequence[runtime.ProviderSpec] | None = None,
        session_options: Any = None,
        verify: bool = True,
    ):
        proto = load_model(model)
        self.metadata: dict[str, Any] = metadata.read(proto)
        self.labels: list[str] | None = metadata.labels(proto)
        self.preprocess: metadata.Preprocess | None = metadata.preprocess(proto)
        normalized = normalize(proto, verify=verify)
        self._model = normalized.model
        self.source_opset = normalized.source_opset
        self._base = ir.to_proto(self._model).SerializeToString()
        self.input_name = self._pick_input(input)
        self.output_name = self._pick_output(output)
        self.keep_softmax = keep_softmax
        facts = ModelFacts(self._base, self.input_name, self.output_name, keep_softmax, self.layout)
        fixed = self.input_shape[0] if self.input_shape else None
        self._runner = Runner(
            self._model,
            facts,
            fixed if isinstance(fixed, int) else None,
            runtime.resolve_providers(providers),
            session_options,
        )

    # -- model facts ---------------------------------------------------------------------
    def _inputs(self) -> list[ir.Value]:
        inits = self._model.graph.initializers
        return [v for v in self._model.graph.inputs if v.name not in inits]

    def _pick_input(self, name: str | None) -> str:
        inputs = self._inputs()
        if name is not None:
            for v in inputs:
                if v.name == name:
                    if not is_float(v):
                        raise InputError(
                            f"Input '{name}' is not floating point; it has no gradient."
                        )
                    return name
            raise InputError(
                f"The model has no input '{name}'; its inputs are: "
                + ", ".join(v.name for v in inputs)
            )
        floats = [v for v in inputs if is_float(v)]
        if len(floats) == 1:
            return floats[0].name
        if not floats:
            raise InputError("The model has no floating-point input to explain.")
        raise InputError(
            "The model has several floating-point inputs ("
            + ", ".join(v.name for v in floats)
            + "); name the one to explain with input=..."
        )

    def _pick_output(self, name: str | None) -> str:
        outputs = self._model.graph.outputs
        if name is None:
            floats = [v for v in outputs if is_float(v)]
            if not floats:
                raise TargetError("The model has no floating-point output to explain.")
            return floats[0].name
        for v in outputs:
            if v.name == name:
                return name
        raise TargetError(
            f"The model has no output '{name}'; its outputs are: "
            + ", ".join(v.name for v in outputs)
        )

    @property
    def input_shape(self) -> tuple:
        """The explained input's dims (ints, or names for symbolic dims)."""
        return tuple(static_dims(self._value(self.input_name)) or ())

    def _value(self, name: str) -> ir.Value:
        for v in self._model.graph.inputs:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def layout(self) -> str | None:
        """'NCHW' or 'NHWC' for image inputs (metadata first, else a guess from dims)."""
        declared = self.metadata.get("layout")
        if declared in ("NCHW", "NHWC"):
            return declared
        dims = self.input_shape
        if len(dims) != 4:
            return None
        if dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
            return "NHWC"
        return "NCHW"

    @property
    def providers(self) -> list:
        """The execution providers that ran (those requested, before the first run)."""
        r = self._runner
        return list(r.active) if r.active is not None else list(r.requested)

    def layers(self) -> list[Layer]:
        """Every tensor that `layer=` can name, with its friendly (module) name."""
        return self._runner.layers.layers()

    # -- graphs --------------------------------------------------------------------------
    def _gradient_spec(self, method: str, layer: str | None, channel_axis: int | None) -> GraphSpec:
        if method not in MODIFIERS:
            raise TargetError(
                f"'{method}' has no single gradient graph; the gradient methods are: "
                + ", ".join(MODIFIERS)
            )
        return GraphSpec(modifier=method, explained=(layer,), channel_axis=channel_axis)

    def saliency_model(
        self, method: str = "vanilla", *, layer: str | None = None, channel_axis: int | None = None
    ) -> onnx.ModelProto:
        """The gradient graph of a backprop modifier as a standalone ONNX model.

        Inputs: the model's inputs plus `target` (int64 [N]; the output index, or the
        layer unit, per sample; negative = top-1). Outputs: `score` [N],
        `target_index` [N], `unit_scores` [N, C] and `attribution` (the input's shape).
        """
        copy = onnx.ModelProto()
        copy.CopyFrom(self._runner.graph(self._gradient_spec(method, layer, channel_axis)).model)
        return copy

    def rewritten_nodes(self, method: str = "guided", *, layer: str | None = None) -> list[Rewrite]:
        """The nodes whose backward the method's modifier replaced (empty for vanilla)."""
        return list(self._runner.graph(self._gradient_spec(method, layer, None)).rewrites)

    # -- running -------------------------------------------------------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """x as the model's dtype, or an InputError saying what is wrong with it and the fix."""
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise InputError(f"x cannot be read as an array ({exc}).") from exc
        if arr.dtype.kind not in "fiub":
            raise InputError(f"x must hold real numbers, not {arr.dtype}.")
        want = self.input_shape
        name = self.input_name
        if want and arr.ndim != len(want):
            hint = ""
            if arr.ndim == len(want) - 1:
                hint = " Add the batch axis: x[None]."
            raise InputError(
                f"x has shape {arr.shape} but input '{name}' has {len(want)} axes {want}.{hint}"
            )
        if arr.size == 0 or (arr.ndim and arr.shape[0] == 0):
            raise InputError("x is empty: give at least one sample.")
        for axis, (got, dim) in enumerate(zip(arr.shape, want)):
            if axis > 0 and isinstance(dim, int) and got != dim:
                hint = ""
                if sorted(arr.shape[1:]) == sorted(d for d in want[1:] if isinstance(d, int)):
                    hint = (
                        " The axes look permuted: the model wants "
                        f"{self.layout or 'another layout'}"
                        + (
                            " (NHWC -> NCHW: x.transpose(0, 3, 1, 2))"
                            if self.layout == "NCHW"
                            else ""
                        )
                        + (
                            " (NCHW -> NHWC: x.transpose(0, 2, 3, 1))"
                            if self.layout == "NHWC"
                            else ""
                        )
                        + "."
                    )
                raise InputError(
                    f"x has shape {arr.shape} but input '{name}' expects {want}: axis {axis} "
                    f"must be {dim}, not {got}.{hint}"
                )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(
                f"x holds {int((~np.isfinite(arr)).sum())} NaN or infinite values; gradients "
                "of those are meaningless. Clean the input first."
            )
        dtype = self._value(name).dtype
        return arr.astype(dtype.numpy() if dtype is not None else np.float32, copy=False)

    def coverage(self):
        """The ops on the path from the input to the explained output, and which lack rules."""
        from onnxsal.autodiff import RULES
        from onnxsal.autodiff.engine import coverage

        graph = self._model.graph
        x = next(v for v in graph.inputs if v.name == self.input_name)
        out = next(v for v in graph.outputs if v.name == self.output_name)
        return coverage(graph, x, out, RULES)

    @property
    def opset(self) -> int:
        """The default-domain opset of the engine's (normalised) copy of the model."""
        imports = self._model.opset_imports
        return imports.get("", imports.get("ai.onnx", 0))

    def predict(
        self, x: Any, *, batch_size: int | None = 32, inputs: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """The explained output's scores (N, C): the logits if the model ends in a softmax
        (unless keep_softmax), forward only."""
        xs = self.check_input(x)
        spec = GraphSpec(backward=False)
        out = self._runner.execute(
            spec,
            xs,
            {TARGET_INPUT: np.full(len(xs), -1, np.int64)},
            batch_size,
            self._extra_inputs(inputs, xs.shape[0]),
            outputs=[UNIT_SCORES],
        )
        return out[UNIT_SCORES]

    def run(
        self,
        x: Any,
        method: str = "vanilla",
        target: Any = None,
        *,
        layer: str | None = None,
        unit: Any = None,
        batch_size: int | None = 32,
        inputs: Mapping[str, Any] | None = None,
        channel_axis: int | None = None,
        grad_modifier: str | Callable | None = None,
        **options: Any,
    ) -> Explanation:
        """Like `explain`, but returns an Explanation: the attribution, each sample's
        score and target, every unit's score, and method extras (IG's completeness gap)."""
        chosen = get_method(method)
        allowed = set(chosen.options)
        if "base" in chosen.options:
            allowed |= get_method(options.get("base", "vanilla")).options
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputError(
                f"Method '{method}' takes no option {', '.join(unknown)}; its options are: "
                + (", ".join(sorted(allowed)) or "none")
            )
        if chosen.layer_is_own:
            if unit is not None:
                raise TargetError(f"'{method}' explains output classes: use target=, not unit=.")
        elif layer is None and unit is not None:
            raise TargetError("unit= picks a unit of a layer; give layer= too (or use target=).")
        elif layer is not None and target is not None and not isinstance(target, Mapping):
            raise TargetError(
                "With layer=, choose the unit with unit= (target= picks an output class)."
            )
        if batch_size is not None and batch_size < 1:
            raise InputError("batch_size must be a positive integer (or None for one batch).")
        xs = self.check_input(x)
        req = Request(
            x=xs,
            target=unit
            if (layer is not None and not chosen.layer_is_own and unit is not None)
            else target,
            layer=layer,
            unit=unit,
            channel_axis=channel_axis,
            batch_size=batch_size,
            inputs=self._extra_inputs(inputs, xs.shape[0]),
            layout=self.layout,
        )
        result = chosen.explain(self._runner, req, **options)
        result.attribution = modify(result.attribution, grad_modifier)
        if not np.isfinite(result.attribution).all():
            warnings.warn(
                "The attribution holds NaN or infinite values: the model's gradient is not "
                "finite at this input (a log or division at zero on the path).",
                OnnxsalWarning,
                stacklevel=2,
            )
        return result

    def explain(
        self,
        x: Any,
        method: str = "vanilla",
        target: Any = None,
        *,
        layer: str | None = None,
        unit: Any = None,
        batch_size: int | None = 32,
        inputs: Mapping[str, Any] | None = None,
        channel_axis: int | None = None,
        grad_modifier: str | Callable | None = None,
        **options: Any,
    ) -> np.ndarray:
        """The attribution of each sample, float32, shaped like x (CAM-type methods:
        one channel, at x's spatial size).

        Args:
            x: a batch shaped like the model input (batch first).
            method: a name in onnxsal.METHODS: "vanilla", "guided", "deconv",
                "input_x_gradient", "smoothgrad", "integrated_gradients", "gradcam",
                "guided_gradcam", "fullgrad", "simple_fullgrad".
            target: None (each sample's top-1), an output index, one index per sample,
                or {index or (layer, unit): weight} for a weighted sum of scores.
            layer, unit: explain unit `unit` of an intermediate tensor instead (the mean
                of channel `unit` for (N, C, ...) tensors; 0-based). For Grad-CAM, the
                layer whose activations are weighted.
            batch_size: samples per onnxruntime run, bounding memory (None: all at once).
            inputs: values for the model's other inputs, by name.
            channel_axis: the unit axis of `layer` (default 1, or -1 for NHWC models).
            grad_modifier: "absolute", "negate", "small_values", "relu", "invert", or a
                function, applied to the result (keras-vis).
            **options: the method's own options (see each method's documentation).
        """
        return self.run(
            x,
            method,
            target,
            layer=layer,
            unit=unit,
            batch_size=batch_size,
            inputs=inputs,
            channel_axis=channel_axis,
            grad_modifier=grad_modifier,
            **options,
        ).attribution

    def _extra_inputs(self, inputs: Mapping[str, Any] | None, n: int) -> dict[str, tuple]:
        given = dict(inputs or {})
        out = {}
        for v in self._inputs():
            if v.name == self.input_name:
                continue
            if v.name not in given:
                raise InputError(
                    f"The model also needs input '{v.name}' {static_dims(v)}; pass it with "
                    f"inputs={{'{v.name}': array}}."
                )
            arr = np.asarray(given.pop(v.name))
            if v.dtype is not None:
                arr = arr.astype(v.dtype.numpy(), copy=False)
            dims = static_dims(v) or ()
            batched = (
                bool(dims) and not isinstance(dims[0], int) and arr.ndim > 0 and arr.shape[0] == n
            )
            out[v.name] = (arr, batched)
        if given:
            raise InputError("Unknown inputs: " + ", ".join(given) + ".")
        return out
