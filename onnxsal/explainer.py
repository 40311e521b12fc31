"""`Explainer`: gradient saliency maps for any ONNX model on onnxruntime."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsal import runtime
from onnxsal.autodiff import RULES, Rewrite, backprop
from onnxsal.errors import InputError, OnnxsalWarning, TargetError
from onnxsal.graph.builder import Builder, is_float, static_dims
from onnxsal.graph.export import finish, sizes_trustworthy
from onnxsal.graph.layers import Layer, LayerIndex
from onnxsal.graph.load import ModelSource, load_model
from onnxsal.graph.normalize import normalize
from onnxsal.modifiers import MODIFIERS
from onnxsal.targets import (
    ATTRIBUTION,
    SCORE,
    TARGET_INPUT,
    TARGET_USED,
    UNIT_SCORES,
    add_score,
    logits_of,
)

LAYOUT_KEY = "onnxsal.layout"  # metadata_props: "NCHW" or "NHWC"
TargetSpec = "int | Sequence[int] | np.ndarray | None"


@dataclass
class Explanation:
    """An attribution and what it explains, sample by sample."""

    attribution: np.ndarray
    score: np.ndarray  # (N,) the explained score of each sample
    target: np.ndarray  # (N,) the output index (or unit) explained
    unit_scores: np.ndarray  # (N, C) scores of every unit (the logits for outputs)
    method: str = "vanilla"
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class SaliencyGraph:
    """One compiled gradient graph: the ONNX model, its session, what was rewritten."""

    model: onnx.ModelProto
    rewrites: list[Rewrite]
    path_ops: dict[str, int]
    units: int | None
    session: Any = None


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
        normalized = normalize(proto, verify=verify)
        self._model = normalized.model
        self.source_opset = normalized.source_opset
        self._base = ir.to_proto(self._model).SerializeToString()
        self.input_name = self._pick_input(input)
        self.output_name = self._pick_output(output)
        self.keep_softmax = keep_softmax
        self._requested = runtime.resolve_providers(providers)
        self._active: list[str] | None = None
        self._options = session_options
        self._graphs: dict[tuple, SaliencyGraph] = {}
        self._layers = LayerIndex(self._model)

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
        declared = (self._model.metadata_props or {}).get(LAYOUT_KEY)
        if declared:
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
        return list(self._active) if self._active is not None else list(self._requested)

    def layers(self) -> list[Layer]:
        """Every tensor that `layer=` can name, with its friendly (module) name."""
        return self._layers.layers()

    # -- graphs --------------------------------------------------------------------------
    def _graph(self, method: str, layer: str | None, channel_axis: int | None) -> SaliencyGraph:
        if method not in MODIFIERS:
            raise TargetError(
                f"Unknown method '{method}'; the gradient methods are: " + ", ".join(MODIFIERS)
            )
        key = (method, layer, channel_axis)
        if key not in self._graphs:
            self._graphs[key] = self._build(method, layer, channel_axis)
        return self._graphs[key]

    def _build(self, method: str, layer: str | None, channel_axis: int | None) -> SaliencyGraph:
        model = ir.from_proto(onnx.load_model_from_string(self._base))
        graph = model.graph
        x = next(v for v in graph.inputs if v.name == self.input_name)
        b = Builder(graph, dtype=x.dtype, trust_sizes=sizes_trustworthy(graph))
        if layer is not None:
            explained = LayerIndex(model).resolve(layer)
            axis = (
                channel_axis if channel_axis is not None else (-1 if self.layout == "NHWC" else 1)
            )
        else:
            out = next(v for v in graph.outputs if v.name == self.output_name)
            explained = out if self.keep_softmax else logits_of(b, out)[0]
            axis = -1 if channel_axis is None else channel_axis
        batch = x.shape[0] if x.shape is not None and len(x.shape) else "N"
        score = add_score(b, explained, axis, batch)
        seed = b.ones_like(score.score)
        back = backprop(b, x, score.score, seed, RULES, MODIFIERS[method])
        proto = finish(
            model,
            b,
            [
                (ATTRIBUTION, back.grad, x.dtype, x.shape),
                (SCORE, score.score, x.dtype, [batch]),
                (TARGET_USED, score.target_used, ir.DataType.INT64, [batch]),
                (UNIT_SCORES, score.unit_scores, x.dtype, [batch, None]),
            ],
        )
        dims = static_dims(explained)
        units = None
        if dims is not None and len(dims) >= 2:
            unit_dim = dims[axis % len(dims)]
            units = unit_dim if isinstance(unit_dim, int) else None
        if method != "vanilla" and not back.rewrites:
            warnings.warn(
                f"Method '{method}' found no ReLU-family gate between the input and the score, "
                "so its map is the vanilla gradient. Explainer.rewritten_nodes() lists the gates "
                "a modifier replaces.",
                OnnxsalWarning,
                stacklevel=4,
            )
        return SaliencyGraph(proto, back.rewrites, back.path_ops, units)

    def saliency_model(
        self, method: str = "vanilla", *, layer: str | None = None, channel_axis: int | None = None
    ) -> onnx.ModelProto:
        """The gradient graph as a standalone ONNX model.

        Inputs: the model's inputs plus `target` (int64 [N]; the output index, or the
        layer unit, per sample; negative = top-1). Outputs: `attribution` (the input's
        shape), `score` [N], `target_index` [N] and `unit_scores` [N, C].
        """
        copy = onnx.ModelProto()
        copy.CopyFrom(self._graph(method, layer, channel_axis).model)
        return copy

    def rewritten_nodes(self, method: str = "guided", *, layer: str | None = None) -> list[Rewrite]:
        """The nodes whose backward the method's modifier replaced (empty for vanilla)."""
        return list(self._graph(method, layer, None).rewrites)

    def _session(self, g: SaliencyGraph) -> Any:
        if g.session is None:
            g.session = runtime.session(g.model.SerializeToString(), self._requested, self._options)
            self._active = g.session.get_providers()
        return g.session

    # -- running -------------------------------------------------------------------------
    def _check_x(self, x: Any) -> np.ndarray:
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

    @staticmethod
    def _targets(spec: Any, n: int, what: str) -> np.ndarray:
        if spec is None:
            return np.full((n,), -1, dtype=np.int64)
        if isinstance(spec, (bool, np.bool_)):
            raise TargetError(f"{what} must be an integer index, not a bool.")
        if isinstance(spec, (int, np.integer)):
            values = np.full((n,), int(spec), dtype=np.int64)
        else:
            try:
                arr = np.asarray(spec)
            except Exception as exc:
                raise TargetError(f"{what} must be an int or a sequence of ints ({exc}).") from exc
            if arr.dtype.kind not in "iu" or arr.ndim != 1:
                raise TargetError(
                    f"{what} must be an int or a 1-D sequence of ints, one per sample; got "
                    f"{arr.dtype} with shape {arr.shape}."
                )
            if arr.shape[0] != n:
                raise TargetError(f"{what} has {arr.shape[0]} entries for {n} samples.")
            values = arr.astype(np.int64)
        if (values < 0).any():
            raise TargetError(f"{what} indices are 0-based and must be >= 0; got {values.min()}.")
        return values

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
    ) -> Explanation:
        """Like `explain`, but also returns each sample's score, target and unit scores."""
        if layer is None and unit is not None:
            raise TargetError("unit= picks a unit of a layer; give layer= too (or use target=).")
        if layer is not None and target is not None:
            raise TargetError(
                "With layer=, choose the unit with unit= (target= picks an output class)."
            )
        xs = self._check_x(x)
        n = xs.shape[0]
        what = "unit" if layer is not None else "target"
        wanted = self._targets(unit if layer is not None else target, n, what)
        g = self._graph(method, layer, channel_axis)
        if g.units is not None and (wanted >= g.units).any():
            raise TargetError(
                f"{what} {int(wanted.max())} is out of range: "
                f"'{layer or self.output_name}' has {g.units} units (0..{g.units - 1})."
            )
        if batch_size is not None and batch_size < 1:
            raise InputError("batch_size must be a positive integer (or None for one batch).")
        fixed = self.input_shape[0] if self.input_shape else None
        step = fixed if isinstance(fixed, int) else (batch_size or n)
        extra = self._extra_inputs(inputs, n)
        session = self._session(g)
        parts: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            stop = min(start + step, n)
            pad = (step - (stop - start)) if isinstance(fixed, int) else 0
            feed = {
                self.input_name: _pad(xs[start:stop], pad),
                TARGET_INPUT: _pad(wanted[start:stop], pad),
            }
            for key, (value, batched) in extra.items():
                feed[key] = _pad(value[start:stop], pad) if batched else value
            outs = session.run([ATTRIBUTION, SCORE, TARGET_USED, UNIT_SCORES], feed)
            parts.append([o[: stop - start] for o in outs])
        attribution, score, used, units = (np.concatenate(p, axis=0) for p in zip(*parts))
        if (used >= units.shape[1]).any():
            raise TargetError(
                f"{what} {int(used.max())} is out of range: '{layer or self.output_name}' has "
                f"{units.shape[1]} units (0..{units.shape[1] - 1})."
            )
        if not np.isfinite(attribution).all():
            warnings.warn(
                "The attribution holds NaN or infinite values: the model's gradient is not "
                "finite at this input (a log or division at zero on the path).",
                OnnxsalWarning,
                stacklevel=2,
            )
        return Explanation(attribution, score, used, units, method)

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
    ) -> np.ndarray:
        """The raw, signed attribution d score / d x, shaped like x.

        Args:
            x: a batch shaped like the model input (batch first).
            method: "vanilla", "guided" (guided backprop) or "deconv" (deconvnet).
            target: None (each sample's top-1), an output index, or one index per sample.
            layer, unit: explain unit `unit` of an intermediate tensor instead (the mean
                of channel `unit` for (N, C, ...) tensors; 0-based).
            batch_size: samples per onnxruntime run, bounding memory (None: all at once).
            inputs: values for the model's other inputs, by name.
            channel_axis: the unit axis of `layer` (default 1, or -1 for NHWC models).
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


def _pad(a: np.ndarray, count: int) -> np.ndarray:
    """Repeat the last sample `count` times (fills a fixed-batch model's last chunk)."""
    if count <= 0:
        return a
    return np.concatenate([a, np.repeat(a[-1:], count, axis=0)], axis=0)
