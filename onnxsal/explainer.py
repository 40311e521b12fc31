"""`Explainer`: saliency maps for any ONNX model on onnxruntime."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxsal import feeds, metadata, probe, runtime
from onnxsal.autodiff import RULES, Rewrite
from onnxsal.autodiff.engine import Coverage, MissingRulesError, coverage, rule_key
from onnxsal.errors import (
    InputError,
    ModelLoadError,
    NormalizationError,
    OnnxsalWarning,
    OptionError,
    TargetError,
    first_line,
)
from onnxsal.graph.builder import body_nodes, is_float, static_dims
from onnxsal.graph.embeddings import Embedding, embedding_candidates
from onnxsal.graph.layers import Layer, LayerIndex
from onnxsal.graph.load import ModelSource, load_model
from onnxsal.graph.normalize import normalize
from onnxsal.graph.specialise import SPECIALISED_OPS, input_key, steered_by_values
from onnxsal.graph.values import values_by_name
from onnxsal.methods import METHODS, Explanation, Request, get_method
from onnxsal.methods.base import RUN_BATCH, positive_int
from onnxsal.methods.lrp import DEFAULT_COMPOSITE, LRP, composite_key
from onnxsal.models import ZOO
from onnxsal.modifiers import MODIFIERS
from onnxsal.modifiers.lrp import BOX_COMPOSITE, epsilon_gamma_box
from onnxsal.postprocess import modify
from onnxsal.runner import Runner
from onnxsal.saliency_graph import GraphSpec, ModelFacts
from onnxsal.targets import (
    UNIT_SCORES,
    Candidate,
    Detection,
    Output,
    Target,
    TensorFacts,
    as_target,
    top_candidates,
)
from onnxsal.targets.activation import probabilities
from onnxsal.targets.base import NO_BATCH

__all__ = ["Explainer", "Explanation"]


class Explainer:
    """Explains an ONNX model's outputs (or any tensor) with saliency maps.

    Args:
        model: a path, serialized bytes, or an onnx.ModelProto (left untouched).
        input: the input to explain; needed only when the model has several candidates.
        output: the tensor explained by default (default: the first float output; a
            ZipMap's sequence of maps is read from the tensor it maps).
        keep_softmax: explain the probability instead of the logit when the explained
            tensor ends in Softmax/LogSoftmax/Sigmoid (default: the logit, as Captum and
            keras-vis do).
        providers: onnxruntime execution providers; None picks CUDA when available.
        session_options: an onnxruntime.SessionOptions for every session (start from
            onnxsal.runtime.session_options() to keep onnxsal's defaults).
        verify: check an opset upgrade against the original model.
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
        proto = load(model)
        self.metadata: dict[str, Any] = metadata.read(proto)
        self.labels: list[str] | None = metadata.labels(proto)
        self.preprocess: metadata.Preprocess | None = metadata.preprocess(proto)
        normalized = normalize(proto, verify=verify, example_shapes=self._example_shapes(proto))
        self.notes: list[str] = list(normalized.notes)  # what was done to read the model
        self._pending_check = normalized.pending_check
        self._upgrade_error: NormalizationError | None = None
        self.source_opset = normalized.source_opset
        self._providers = runtime.resolve_providers(providers)
        self._session_options = session_options
        self._use(normalized.model)
        self.input_name = self._pick_input(input)
        self.output_name = self._pick_output(output)
        self.keep_softmax = keep_softmax
        self._runner = self._new_runner()

    def _use(self, model: ir.Model) -> None:
        """Take `model` (normalised) as the model explained, with fresh caches."""
        self._model = model
        self._base = ir.to_proto(model).SerializeToString()
        self._values = values_by_name(model.graph)
        self._layer_index = LayerIndex(model)
        self._selected: dict[ir.Value, ir.Node] | None = None  # values after NonMaxSuppression
        self._placements: dict[tuple, probe.Placement] = {}

    def _new_runner(self) -> Runner:
        fixed = self.input_shape[0] if self.input_shape else None
        return Runner(
            self._model,
            ModelFacts(self._base, self.input_name),
            fixed if isinstance(fixed, int) else None,
            self._providers,
            self._session_options,
            self._layer_index,
        )

    def with_initializers(self, values: Mapping[str, np.ndarray]) -> Explainer:
        """A copy explaining the same graph with some initializers' values replaced (same
        names, shapes and dtypes): the models of a randomisation test. It takes this
        explainer's gradient graphs whose build read none of those values (a gradient graph
        keeps weights as weights) with the new values written in, without building them
        again; graphs that folded them in (LRP's) are rebuilt. The copy's `model` is this
        one's graph, for queries: its initializers hold the old values."""
        inits = self._model.graph.initializers
        checked = {}
        for name, array in values.items():
            old = inits.get(name)
            if old is None or old.const_value is None:
                raise InputError(f"The model has no initializer '{name}'.")
            array = np.asarray(array)
            if array.shape != tuple(old.shape) or array.dtype != old.dtype.numpy():
                raise InputError(
                    f"Initializer '{name}' is {old.dtype.numpy()} {list(old.shape)}; the "
                    f"new value is {array.dtype} {list(array.shape)}."
                )
            checked[name] = array
        runner = self._runner.with_weights(checked)
        if runner is None:  # graphs rewritten per input read the model: one of its own
            model = ir.from_proto(onnx.load_from_string(self._base))
            for name, array in checked.items():
                model.graph.initializers[name].const_value = ir.tensor(array, name=name)
            twin = copy.copy(self)
            twin._use(model)
            twin._placements = dict(self._placements)  # batch axes follow the graph
            twin._runner = twin._new_runner()
            twin._runner.fixed_batch = self._runner.fixed_batch  # a batch-of-one stays one
        else:
            twin = copy.copy(self)
            twin._runner = runner
        twin.__dict__["digest"] = _digest_with(self.digest, checked)
        return twin

    # -- model facts ---------------------------------------------------------------------
    def _example_shapes(self, proto: onnx.ModelProto) -> dict[str, tuple[int, ...]] | None:
        """The input shape the model's recorded preprocessing produces (batch 1)."""
        pre = self.preprocess
        if pre is None:
            return None
        inputs = [
            i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
        ]
        if len(inputs) != 1:
            return None
        channels = 1 if pre.channel_order == "L" else 3
        h, w = pre.size
        shape = (1, channels, h, w) if pre.layout == "NCHW" else (1, h, w, channels)
        return {inputs[0].name: shape}

    def _inputs(self) -> list[ir.Value]:
        inits = self._model.graph.initializers
        return [v for v in self._model.graph.inputs if v.name not in inits]

    def _pick_input(self, name: str | None) -> str:
        inputs = self._inputs()
        if name is not None:
            for v in inputs:
                if v.name == name:
                    self._check_numeric(v)
                    return name
            raise InputError(
                f"The model has no input '{name}'; its inputs are: "
                + ", ".join(v.name for v in inputs)
            )
        floats = [v for v in inputs if is_float(v)]
        if len(floats) == 1:
            return floats[0].name
        if len(floats) > 1:
            raise InputError(
                "The model has several floating-point inputs ("
                + ", ".join(v.name for v in floats)
                + "); name the one to explain with input=... (the CLI: --input)."
            )
        embedded = [v for v in inputs if embedding_candidates(self._model.graph, v.name)]
        if len(embedded) == 1:
            return embedded[0].name
        if not embedded:
            raise InputError(
                "The model has no input whose values reach a floating-point tensor, so there "
                "is nothing to differentiate; its inputs are: "
                + ", ".join(f"{v.name} ({v.dtype})" for v in inputs)
            )
        raise InputError(
            "Several integer inputs feed the model ("
            + ", ".join(v.name for v in embedded)
            + "); name the one to explain with input=... (the CLI: --input)."
        )

    def _check_numeric(self, v: ir.Value) -> None:
        if v.dtype is not None and v.dtype in (ir.DataType.STRING,):
            raise InputError(
                f"Input '{v.name}' holds strings; onnxsal explains numeric inputs (feed the "
                "model after its tokenizer)."
            )

    def _pick_output(self, name: str | None) -> str:
        if name is not None:
            return self._named(name)
        for v in self._model.graph.outputs:
            if is_float(v) and v.dtype is not None:
                return v.name  # checked when explained: inspect must still open it
        raise TargetError(
            "The model has no floating-point output to explain; its outputs are: "
            + ", ".join(f"{v.name} ({v.dtype})" for v in self._model.graph.outputs)
        )

    def _named(self, name: str) -> str:
        """A tensor users name: a model output, or any tensor by tensor, node or module name."""
        outputs = {v.name: v for v in self._model.graph.outputs}
        value = outputs.get(name) or self._layer_index.resolve(name)
        self._refuse_after_selection(value)
        if not is_float(value) or value.dtype is None:
            raise TargetError(
                f"'{value.name}' holds {value.dtype}, not real numbers; there is nothing to "
                "explain in it. Choose a floating-point tensor."
            )
        return value.name

    def _refuse_after_selection(self, value: ir.Value) -> None:
        """Outputs computed after NonMaxSuppression hold the boxes it kept: no batch, a count
        that changes with the input, and no gradient through the choice. Say what to explain."""
        if self._selected is None:
            self._selected = {}
            for nms in (n for n in self._model.graph if n.op_type == "NonMaxSuppression"):
                downstream = set(nms.outputs)
                for node in self._model.graph:
                    if any(i is not None and i in downstream for i in node.inputs):
                        downstream.update(node.outputs)
                self._selected.update((v, nms) for v in downstream)
        nms = self._selected.get(value)
        if nms is not None:
            scores = nms.inputs[1]
            raise TargetError(
                f"'{value.name}' is computed from NonMaxSuppression '{nms.name}', which keeps "
                "some boxes by comparing scores: no gradient passes its choice. Explain the "
                f"scores before it: output='{scores.name}' (the CLI: --output {scores.name}) "
                "with Detection(anchor, class, boxes=0) (-t anchor=A,class=C,boxes=0); "
                f"candidates(x, output='{scores.name}', boxes=0) lists the best boxes."
            )

    @property
    def input_shape(self) -> tuple:
        """The explained input's dims (ints, or names for symbolic dims)."""
        return tuple(static_dims(self._values[self.input_name]) or ())

    @property
    def sample_rank(self) -> int | None:
        """Axes of one sample of the explained input (None: the model does not say)."""
        shape = self.input_shape
        return len(shape) - 1 if shape else None

    @functools.cached_property
    def digest(self) -> str:
        """What the model is (as read and normalised), for records of what explained what."""
        return hashlib.sha256(self._base).hexdigest()

    @property
    def input_dtype(self) -> np.dtype:
        dtype = self._values[self.input_name].dtype
        return dtype.numpy() if dtype is not None else np.dtype(np.float32)

    @property
    def integer_input(self) -> bool:
        """True for token, byte or category inputs: attributions need `wrt=`."""
        return self.input_dtype.kind in "iub"

    @property
    def layout(self) -> str | None:
        """'NCHW' or 'NHWC' for image inputs (metadata first, else a guess from dims)."""
        declared = self.metadata.get("layout")
        if declared in ("NCHW", "NHWC"):
            return declared
        dims = self.input_shape
        if len(dims) != 4 or self.integer_input:
            return None
        if dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
            return "NHWC"
        return "NCHW"

    @property
    def providers(self) -> list:
        """The execution providers that ran (those requested, before the first run; under
        "fastest", the runtime of the graph that ran last)."""
        r = self._runner
        return list(r.active) if r.active is not None else list(r.requested)

    def layers(self) -> list[Layer]:
        """Every tensor that `layer=`, `wrt=` and `output=` can name, with friendly names."""
        return self._layer_index.layers()

    def embeddings(self) -> list[Embedding]:
        """For an integer input: the float tensors `wrt=` can name, best first."""
        return embedding_candidates(self._model.graph, self.input_name)

    @property
    def opset(self) -> int:
        """The default-domain opset of the engine's (normalised) copy of the model."""
        imports = self._model.opset_imports
        return imports.get("", imports.get("ai.onnx", 0))

    @property
    def specialised(self) -> bool:
        """Whether gradient graphs are rewritten per kind of input (control flow, RNNs)."""
        return self._runner.specialising

    @property
    def model(self) -> ir.Model:
        """The engine's normalised copy of the model (read it; never edit it)."""
        return self._model

    def coverage(self, wrt: str | None = None, output: str | None = None) -> Coverage:
        """The ops on the path from the input (or `wrt`) to the output, which lack rules,
        and which are rewritten per input (If, Loop, Scan, LSTM...; their bodies' ops count)."""
        graph = self._model.graph
        start = self._values[self._wrt(wrt) if wrt is not None else self.input_name]
        end = self._values[self._tensor(output)[0]]
        found = coverage(graph, start, end, RULES)
        nodes = {n.name: n for n in graph}
        steered = {n.name for n in steered_by_values(graph, self.input_name)}
        for op, names in list(found.missing.items()):
            if op.split(" ")[0] not in SPECIALISED_OPS:
                continue
            del found.missing[op]
            kept = [name for name in names if name not in steered]
            if len(kept) < len(names):
                found.missing[f"{op} (steered by the input's values)"] = sorted(steered)
            if kept:
                found.specialised[op.split(" ")[0]] = kept
            for name in kept:  # their bodies' ops that carry real numbers need rules too
                for inner in body_nodes(nodes[name]):
                    if not any(is_float(v) and v.dtype is not None for v in inner.outputs):
                        continue
                    key = rule_key(inner)
                    found.path_ops[key] = found.path_ops.get(key, 0) + 1
                    if key not in RULES and key not in SPECIALISED_OPS:
                        found.missing.setdefault(key, []).append(inner.name or key)
        return found

    # -- tensors and their facts ---------------------------------------------------------
    def _tensor(self, name: str | None) -> tuple[str, bool]:
        """(the tensor's name, whether it is the default output) for a name users give."""
        if name is None or name == self.output_name:
            self._refuse_after_selection(self._values[self.output_name])
            return self.output_name, True
        resolved = self._named(name)
        return resolved, resolved == self.output_name

    def _placement_of(self, name: str, x: np.ndarray, extra: Mapping) -> probe.Placement:
        key = (name, input_key(x[:1], feeds.take(extra, 0, 1)))
        if key not in self._placements:
            runner = self._runner
            try:
                placement = probe.measured_placements(
                    runner.values, [name], x, extra, runner.fixed_batch
                )[name]
            except probe.BatchOfOneOnly as exc:
                warnings.warn(
                    "The model runs one sample at a time (a batch of two failed: "
                    f"{exc}); onnxsal feeds it one sample per run.",
                    OnnxsalWarning,
                    stacklevel=4,
                )
                runner.fixed_batch = 1
                self._placements.clear()
                return self._placement_of(name, x, extra)
            self._placements[key] = placement
        return self._placements[key]

    def _lookup(self, x: np.ndarray, extra: Mapping) -> Callable[[str | None], TensorFacts]:
        """Facts of tensors by name, measured on x (cached per input shape)."""
        spatial = None
        if self.layout is not None and x.ndim == 4:
            spatial = x.shape[2:4] if self.layout == "NCHW" else x.shape[1:3]

        def lookup(name: str | None) -> TensorFacts:
            tensor, is_default = self._tensor(name)
            placement = self._placement_of(tensor, x, extra)
            rank = len(placement.shape) + 1
            declared = self._layer_index.axes.get(tensor)
            channel = 1 if self.layout != "NHWC" else rank - 1
            if declared is not None:
                channel = declared % rank
            return TensorFacts(
                tensor,
                tuple(int(d) for d in placement.shape),
                placement.batch_axis,
                is_default,
                not self.keep_softmax,
                channel,
                self.layout,
                tuple(int(d) for d in spatial) if spatial is not None else None,
                np.dtype(
                    dtype.numpy() if (dtype := self._values[tensor].dtype) else "float32"
                ).name,
            )

        return lookup

    # -- graphs --------------------------------------------------------------------------
    def compiled(
        self,
        method: str = "vanilla",
        target: Any = None,
        *,
        example: Any = None,
        wrt: str | None = None,
        keep_outputs: bool = False,
        composite: Any = None,
    ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        """The gradient graph of a backprop modifier (or LRP's, with its `composite`) as a
        standalone ONNX model, and the run-time values of `target` for one sample (what
        `saliency_model`'s extra inputs take; `onnxsal export` bakes them in).

        `example`: an input to measure output shapes on, for models whose sizes are
        dynamic; `keep_outputs`: the model's own outputs come first.
        """
        graph, chosen, lookup = self._example_graph(
            method, target, example, wrt, keep_outputs, composite
        )
        copy = onnx.ModelProto()
        copy.CopyFrom(graph.model)
        return copy, chosen.feeds(1, lookup)

    def _example_graph(
        self,
        method: str,
        target: Any,
        example: Any,
        wrt: str | None,
        keep_outputs: bool = False,
        composite: Any = None,
    ):
        """(the compiled graph of `method` for `target`, the target, the facts lookup),
        shapes measured on `example` or a made-up input (zeros for the other inputs)."""
        if method == LRP.name:
            chosen_composite = composite if composite is not None else DEFAULT_COMPOSITE
            modifier = composite_key(self._lrp_composite(chosen_composite))
        elif method in MODIFIERS and composite is None:
            modifier = method
        else:
            raise TargetError(
                f"'{method}' has no single gradient graph; the gradient methods are: "
                + ", ".join([*MODIFIERS, LRP.name])
                + (" (composite= is LRP's)" if composite is not None else "")
            )
        if wrt is None and self.integer_input:
            raise TargetError(self._integer_input_advice())
        xs = self.check_input(example) if example is not None else self.example_input()
        extra = self._extra_inputs(self._made_up_inputs(), len(xs))
        chosen = as_target(target)
        lookup = self._lookup(xs, extra)
        wrt_name = self._wrt(wrt) if wrt is not None else None
        spec = GraphSpec(
            chosen.form(lookup), modifier=modifier, wrt=wrt_name, keep_outputs=keep_outputs
        )
        return self._runner.graph(spec, self._runner.variant(xs, extra)), chosen, lookup

    @property
    def other_inputs(self) -> list[str]:
        """The model's inputs besides the one explained (fed with inputs=)."""
        return [v.name for v in self._inputs() if v.name != self.input_name]

    def example_input(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A random input of the declared shape (sizes from the metadata where the model's
        are dynamic): for checks, and to learn output shapes without a user's input."""
        dims = [d if isinstance(d, int) and d > 0 else None for d in self.input_shape]
        if self.preprocess is not None:
            shapes = self._example_shapes(ir.to_proto(self._model)) or {}
            dims = list(shapes.get(self.input_name, dims))
        if self._runner.fixed_batch is None and dims:
            dims[0] = batch
        if None in dims:
            raise InputError(
                "The model's input has dynamic sizes and no recorded example size; give an "
                "example input (example=x; the CLI: --example FILE.npy) to measure its outputs on."
            )
        rng = np.random.default_rng(seed)
        if self.integer_input:
            return np.zeros(dims, self.input_dtype)
        return rng.standard_normal(dims).astype(self.input_dtype)

    def output_kinds(self, example: Any = None) -> list[tuple[str, Any]]:
        """Each float output's kind and the targets that fit it (an OutputKind), or why it
        could not be read, measured on `example` (default: a made-up input)."""
        from onnxsal.errors import OnnxsalError
        from onnxsal.targets import describe

        try:
            xs = self.check_input(example) if example is not None else self.example_input()
            extra = self._extra_inputs(self._made_up_inputs(), len(xs))
            lookup = self._lookup(xs, extra)
        except OnnxsalError as exc:
            return [(v.name, str(exc)) for v in self._model.graph.outputs]
        found = []
        for v in self._model.graph.outputs:
            if not is_float(v) or v.dtype is None:
                found.append((v.name, f"{v.dtype} values (labels, indices): nothing to explain"))
                continue
            try:
                facts = lookup(v.name)
                found.append((v.name, (facts, describe(facts))))
            except OnnxsalError as exc:
                found.append((v.name, str(exc).splitlines()[0]))
        return found

    def _made_up_inputs(self) -> dict[str, np.ndarray]:
        """Zeros for the model's other inputs (symbolic sizes 1), to learn shapes."""
        made = {}
        for v in self._inputs():
            if v.name != self.input_name:
                dims = [d if isinstance(d, int) and d > 0 else 1 for d in static_dims(v) or ()]
                dtype = v.dtype.numpy() if v.dtype is not None else np.float32
                made[v.name] = np.zeros(dims, dtype)
        return made

    def saliency_model(
        self,
        method: str = "vanilla",
        target: Any = None,
        *,
        example: Any = None,
        wrt: str | None = None,
        composite: Any = None,
    ) -> onnx.ModelProto:
        """The gradient graph of a backprop modifier (or of LRP with `composite`) as a
        standalone ONNX model.

        Inputs: the model's inputs plus the target's run-time values (for a class:
        `target`, int64 [N], negative = top-1). Outputs: `score` [N], `target_index`,
        `unit_scores` and `attribution` (the input's shape).
        """
        return self.compiled(method, target, example=example, wrt=wrt, composite=composite)[0]

    def rewritten_nodes(
        self, method: str = "guided", *, example: Any = None, composite: Any = None
    ) -> list[Rewrite]:
        """The nodes whose backward the method's modifier replaced (empty for vanilla), and
        the rule each got (LRP: per composite); they do not depend on the target, so any
        element of the output serves. (The warning of a modifier that found nothing is for
        explaining; this call asks exactly that.)"""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OnnxsalWarning)
            graph = self._example_graph(method, Output(index=0), example, None, False, composite)[0]
        return list(graph.rewrites)

    # -- running -------------------------------------------------------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """x as the model's dtype, or an InputError saying what is wrong with it and the fix."""
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise InputError(f"x cannot be read as an array ({exc}).") from exc
        if arr.dtype.kind not in "fiub":
            raise InputError(f"x must hold real numbers, not {arr.dtype}.")
        if not self.input_shape and arr.ndim:
            self._declare_rank(arr.ndim)
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
                raise InputError(
                    f"x has shape {arr.shape} but input '{name}' expects {want}: axis {axis} "
                    f"must be {dim}, not {got}.{self._permuted_hint(arr.shape)}"
                )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(
                f"x holds {int((~np.isfinite(arr)).sum())} NaN or infinite values; gradients "
                "of those are meaningless. Clean the input first."
            )
        if self.integer_input and arr.dtype.kind == "f" and (arr != np.round(arr)).any():
            raise InputError(
                f"Input '{name}' takes integers ({self.input_dtype}: tokens, bytes or "
                "categories); x holds fractions."
            )
        return arr.astype(self.input_dtype, copy=False)

    def _declare_rank(self, rank: int) -> None:
        """A model whose input declares no shape: take x's rank (every size symbolic), so
        shapes downstream can be inferred and the rules that need ranks have them."""
        value = self._values[self.input_name]
        value.shape = ir.Shape([f"{self.input_name}_dim{i}" for i in range(rank)])
        with contextlib.suppress(Exception):  # shapes help; the run reads what is missing
            ShapeInferencePass(strict_mode=False)(self._model)
        self._base = ir.to_proto(self._model).SerializeToString()
        self._runner.facts = ModelFacts(self._base, self.input_name)

    def _permuted_hint(self, shape: tuple) -> str:
        want = self.input_shape
        if sorted(shape[1:]) != sorted(d for d in want[1:] if isinstance(d, int)):
            return ""
        fix = {
            "NCHW": " (NHWC -> NCHW: x.transpose(0, 3, 1, 2))",
            "NHWC": " (NCHW -> NHWC: x.transpose(0, 2, 3, 1))",
        }.get(self.layout or "", "")
        return f" The axes look permuted: the model wants {self.layout or 'another layout'}{fix}."

    def _wrt(self, wrt: str) -> str:
        """The tensor name `wrt=` stands for ("auto": the first embedding candidate)."""
        if wrt == "auto":
            found = self.embeddings()
            if not found:
                raise TargetError(
                    f"wrt='auto' looks for where input '{self.input_name}' becomes real numbers "
                    "(an embedding lookup, a OneHot, a Cast) and found none; name a tensor."
                )
            return found[0].value.name
        name = wrt if wrt == self.input_name else self._tensor(wrt)[0]
        if name == self.input_name:
            raise TargetError(f"wrt='{wrt}' is the input itself; leave wrt out.")
        return name

    def _verify_upgrade(self, xs: np.ndarray, extra: Mapping) -> None:
        if self._pending_check is None:
            return
        if self._upgrade_error is not None:
            raise self._upgrade_error
        first, others = feeds.first_copies(xs, extra, self._runner.fixed_batch or 1)
        try:
            self._pending_check({self.input_name: first, **feeds.arrays(others)})
        except NormalizationError as exc:  # every later call must refuse too
            self._upgrade_error = exc
            raise
        except Exception as exc:  # the original itself does not run on this input
            raise InputError(
                f"onnxruntime could not run the model on this input: {first_line(exc)}"
            ) from exc
        self._pending_check = None

    def predict(
        self,
        x: Any,
        target: Any = None,
        *,
        batch_size: int | None = RUN_BATCH,
        inputs: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Every candidate's score (N, K) for the target's kind (a class vector's logits,
        unless keep_softmax; a time step's symbols; a box's classes), forward only."""
        return self._scores(x, target, batch_size, inputs)[0]

    def probabilities(
        self,
        x: Any,
        target: Any = None,
        *,
        batch_size: int | None = RUN_BATCH,
        inputs: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Every candidate's probability (N, K): through the model's own final Softmax or
        Sigmoid, kept when its output already sums to one, else the softmax of the scores
        (a logit model, as the RISE authors append a softmax to theirs)."""
        scores, activation = self._scores(x, target, batch_size, inputs)
        probs = probabilities(scores, activation)
        return probs if probs is not None else probabilities(scores, "softmax")

    def _scores(
        self, x: Any, target: Any, batch_size: int | None, inputs: Mapping[str, Any] | None
    ) -> tuple[np.ndarray, str | None]:
        """(every candidate's score, the final activation the scores stepped over)."""
        batch_size = _batch_size(batch_size)
        xs = self.check_input(x)
        extra = self._extra_inputs(inputs, xs.shape[0])
        self._verify_upgrade(xs, extra)
        chosen = as_target(target)
        lookup = self._lookup(xs, extra)
        spec = GraphSpec(chosen.form(lookup), backward=False)
        if not spec.score.has_candidates:
            raise TargetError(
                f"A {chosen.kind} target has no candidates to score; its score is "
                "run(x, target=...).score."
            )
        out = self._runner.execute(
            spec, xs, chosen.feeds(len(xs), lookup), batch_size, extra, outputs=[UNIT_SCORES]
        )
        peeled = set(self._runner.peeled(spec))
        return out[UNIT_SCORES], (peeled.pop() if len(peeled) == 1 else None)

    def forward(self, x: Any, *, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The model's own outputs by name (onnxruntime on the normalised model)."""
        xs = self.check_input(x)
        extra = self._extra_inputs(inputs, xs.shape[0])
        names = [v.name for v in self._model.graph.outputs]
        return self._runner.values(names, xs, extra)

    def candidates(
        self,
        x: Any,
        *,
        top: int = 10,
        output: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        **layout: Any,
    ) -> list[list[Candidate]]:
        """The best candidate boxes of a raw detector head, per sample: anchor, class, score
        and the box's numbers as the model wrote them; pick one for Detection(anchor, ...).
        `layout`: Detection's boxes=, objectness=, anchor_axis=."""
        xs = self.check_input(x)
        extra = self._extra_inputs(inputs, xs.shape[0])
        spec = Detection(0, output=output, **layout)
        facts = self._lookup(xs, extra)(output)
        spec.form(lambda _: facts)  # refuses what is not a detector head
        head = self._runner.values([facts.name], xs, extra)[facts.name]
        if facts.batch_axis == NO_BATCH:
            head = head[None]
        elif facts.batch_axis > 0:
            head = np.moveaxis(head, facts.batch_axis, 0)
        return top_candidates(head, spec, top)

    def run(
        self,
        x: Any,
        method: str = "vanilla",
        target: Any = None,
        *,
        layer: str | None = None,
        unit: Any = None,
        wrt: str | None = None,
        batch_size: int | None = RUN_BATCH,
        inputs: Mapping[str, Any] | None = None,
        channel_axis: int | None = None,
        grad_modifier: str | Callable | None = None,
        **options: Any,
    ) -> Explanation:
        """Like `explain`, but returns an Explanation: the attribution, each sample's
        score and target, every candidate's score, and method extras."""
        chosen = get_method(method)
        allowed = set(chosen.options)
        if "base" in chosen.options:
            allowed |= get_method(options.get("base", "vanilla")).options
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise OptionError(
                f"Method '{method}' takes no option {', '.join(unknown)}; its options are: "
                + (", ".join(sorted(allowed)) or "none")
            )
        batch_size = _batch_size(batch_size)
        seed = options.get("seed")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise OptionError(f"seed must be an integer >= 0 (or None); got {seed!r}.")
        own_layer = layer if chosen.layer_is_own else None
        if chosen.layer_is_own and unit is not None:
            raise TargetError(f"'{method}' explains output classes: use target=, not unit=.")
        goal = as_target(target, layer=None if chosen.layer_is_own else layer, unit=unit)
        if channel_axis is not None:
            goal = _with_axis(goal, channel_axis)
        xs = self.check_input(x)
        extra = self._extra_inputs(inputs, xs.shape[0])
        self._verify_upgrade(xs, extra)
        lookup = self._lookup(xs, extra)
        if wrt is None and self.integer_input and chosen.needs_gradient:
            raise TargetError(self._integer_input_advice())
        req = Request(
            x=xs,
            target=goal,
            lookup=lookup,
            layer=own_layer,
            batch_size=batch_size,
            inputs=extra,
            layout=self.layout,
        )
        if wrt is not None:
            req = self._at_layer(req, self._wrt(wrt), chosen.needs_gradient, method)
        if method == LRP.name and "composite" in options:
            options["composite"] = self._lrp_composite(options["composite"])
        try:
            result = chosen.explain(self._runner, req, **options)
        except MemoryError as exc:
            raise OptionError(
                f"{method} ran out of memory on this batch ({exc}); lower batch_size or the "
                "method's counts (n_samples, steps, n_masks)."
            ) from exc
        except MissingRulesError as exc:
            free = [name for name, m in METHODS.items() if not m.needs_gradient]
            if free:
                exc.args = (
                    f"{exc.args[0]} Methods that need no gradient run on any model onnxruntime "
                    f"runs: {', '.join(free)}.",
                )
            raise
        if wrt is not None and self.integer_input:
            result.extras["layer_attribution"] = result.attribution
            result.attribution = _per_position(result.attribution, xs.shape)
        result.attribution = modify(result.attribution, grad_modifier)
        if not np.isfinite(result.attribution).all():
            why = (
                "the model's gradient is not finite at this input (a log or division at zero "
                "on the path)"
                if chosen.needs_gradient
                else f"the model's output is not finite on some of {method}'s perturbed "
                "copies (check its options: baselines=...)"
            )
            warnings.warn(
                f"The attribution holds NaN or infinite values: {why}.",
                OnnxsalWarning,
                stacklevel=2,
            )
        return result

    def _lrp_composite(self, composite: Any) -> Any:
        """epsilon_gamma_box by name takes its ZBox bounds from the model's preprocessing:
        pixels 0 and 255 in model space, per channel (of the first convolution's input, NCHW
        whatever the model's own layout)."""
        if composite != BOX_COMPOSITE:
            return composite
        pre = self.preprocess
        if pre is None:
            raise OptionError(
                f"{BOX_COMPOSITE} needs the input's bounds and this model records no "
                "preprocessing; pass composite=onnxsal.modifiers.lrp.epsilon_gamma_box(low, high) "
                "in model space."
            )
        mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
        low, high = (0.0 - mean) / std, (255.0 * pre.scale - mean) / std
        return epsilon_gamma_box(np.minimum(low, high), np.maximum(low, high))

    def _integer_input_advice(self) -> str:
        found = self.embeddings()
        listed = "; ".join(e.describe() for e in found[:5]) or "none found"
        return (
            f"Input '{self.input_name}' holds integers ({self.input_dtype}: tokens, bytes or "
            "categories), which have no gradient. Explain where they become real numbers with "
            f"wrt= (the CLI: --wrt): candidates {listed}. wrt='auto' takes the first; "
            "per-position scores are summed over the embedding axis."
        )

    def _at_layer(self, req: Request, name: str, needs_gradient: bool, method: str) -> Request:
        """The request with x replaced by the values of tensor `name` (wrt=)."""
        if not needs_gradient or not get_method(method).takes_wrt:
            able = [n for n, m in METHODS.items() if m.needs_gradient and m.takes_wrt]
            raise TargetError(
                f"'{method}' does not take wrt= (it perturbs x, or reads it as an image); "
                f"these do: {', '.join(able)}."
            )
        placement = self._placement_of(name, req.x, req.inputs)
        if placement.batch_axis != 0:
            raise TargetError(
                f"wrt='{name}' keeps its batch on axis {placement.batch_axis}; onnxsal explains "
                "tensors whose batch axis is first. Choose one before or after the transpose."
            )
        runner, inputs = self._runner, dict(req.inputs)
        values = runner.values([name], req.x, inputs, req.batch_size)[name]
        origin = {self.input_name: (req.x, 0)}

        source = self.input_name

        def to_wrt(baseline: Any, sub: Request) -> np.ndarray:
            """The layer's values for `baseline` given as the model's input (per sample
            of `sub`, whose own model inputs stand beside it)."""
            origin = sub.inputs[source][0]
            base = np.zeros_like(origin) if baseline is None else baseline
            base = np.broadcast_to(np.asarray(base, dtype=origin.dtype), origin.shape)
            others = {k: v for k, v in sub.inputs.items() if k != source}
            return runner.values([name], np.ascontiguousarray(base), others, sub.batch_size)[name]

        from dataclasses import replace

        return replace(
            req,
            x=values,
            inputs={**inputs, **origin},
            wrt=name,
            to_wrt=to_wrt,
            layout=None if values.ndim != 4 else req.layout,
        )

    def explain(
        self,
        x: Any,
        method: str = "vanilla",
        target: Any = None,
        *,
        layer: str | None = None,
        unit: Any = None,
        wrt: str | None = None,
        batch_size: int | None = RUN_BATCH,
        inputs: Mapping[str, Any] | None = None,
        channel_axis: int | None = None,
        grad_modifier: str | Callable | None = None,
        **options: Any,
    ) -> np.ndarray:
        """The attribution of each sample, float32, shaped like x (CAM-type methods:
        one channel, at x's spatial size; wrt= a layer: the layer's shape, or x's shape
        for integer inputs, summed over the embedding axis).

        Args:
            x: a batch shaped like the model input (batch first).
            method: a name in onnxsal.METHODS.
            target: what to explain: None (each sample's top class), a class index, one
                index per sample, {target: weight} for a weighted sum, or a target object
                from onnxsal.targets (Class, Region, Step, Sequence, Detection, Output,
                Scalar) for outputs that are not class vectors.
            layer, unit: explain unit `unit` of an intermediate tensor instead (the mean
                of channel `unit` for (N, C, ...) tensors; 0-based). For Grad-CAM, the
                layer whose activations are weighted.
            wrt: attribute to this tensor instead of the input (an embedding for integer
                inputs; "auto" finds it).
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
            wrt=wrt,
            batch_size=batch_size,
            inputs=inputs,
            channel_axis=channel_axis,
            grad_modifier=grad_modifier,
            **options,
        ).attribution

    def _extra_inputs(self, inputs: Mapping[str, Any] | None, n: int) -> dict[str, tuple]:
        """The model's other inputs as (array, batch axis or None), checked against x's n."""
        if inputs is not None and not isinstance(inputs, Mapping):
            raise InputError(
                "inputs= maps the model's other input names to arrays; got "
                f"{type(inputs).__name__}."
            )
        given = dict(inputs or {})
        if self.input_name in given:
            raise InputError(
                f"'{self.input_name}' is the input explained (x); inputs= takes the others."
            )
        others = {v.name: v for v in self._inputs() if v.name != self.input_name}
        unknown = sorted(set(given) - set(others))
        if unknown:
            raise InputError(
                f"The model has no input {', '.join(map(repr, unknown))}; its other inputs are: "
                + (", ".join(others) or "none")
                + "."
            )
        out = {}
        for name, v in others.items():
            if name not in given:
                raise InputError(
                    f"The model also needs input '{name}' {static_dims(v)}; pass it with "
                    f"inputs={{'{name}': array}} (the CLI: --feed {name}=FILE.npy)."
                )
            arr = np.asarray(given[name])
            if arr.dtype.kind not in "fiub":
                raise InputError(f"Input '{name}' must hold numbers, not {arr.dtype}.")
            if v.dtype is not None:
                arr = arr.astype(v.dtype.numpy(), copy=False)
            dims = static_dims(v)
            if dims is not None and arr.ndim != len(dims):
                raise InputError(
                    f"Input '{name}' has {arr.ndim} axes {arr.shape}; the model declares "
                    f"{len(dims)} {list(dims)}."
                )
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InputError(f"Input '{name}' holds NaN or infinite values.")
            out[name] = self._batched(name, v, arr, n)
        return out

    def _batched(self, name: str, v: ir.Value, arr: np.ndarray, n: int) -> tuple:
        """(array, batch axis) of another input: the axis whose symbolic size is the
        explained input's batch symbol (a state [2, batch, 128]), else a lone or first
        dynamic axis; none for inputs without one (a sample rate), passed whole. A batch
        of one is repeated to n; any other count than n is an error, never mixed."""
        dims = static_dims(v) or ()
        batch = self.input_shape[0] if self.input_shape else None
        shared = [a for a, d in enumerate(dims) if isinstance(d, str) and d == batch]
        symbolic = [a for a, d in enumerate(dims) if not isinstance(d, int)]
        axis = shared[0] if len(shared) == 1 else (symbolic[0] if symbolic else None)
        if axis is None or arr.ndim == 0:
            return arr, None
        count = arr.shape[axis]
        if count == n:
            return arr, axis
        if count == 1:
            return np.repeat(arr, n, axis=axis), axis
        raise InputError(
            f"Input '{name}' holds {count} samples along its batch axis {axis} (shape "
            f"{arr.shape}) but x holds {n}: give one per sample, or one for all."
        )


def _with_axis(target: Target, axis: int) -> Target:
    if not hasattr(target, "axis"):
        raise TargetError("channel_axis= applies to a class or a layer's unit.")
    return target.with_values(axis=axis)


def _per_position(attribution: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A layer's attribution summed over the axes an integer input does not have (the
    embedding axis): one score per token or byte. A layer whose leading axes are not the
    input's (a OneHot on axis 1, a tensor after a Transpose) keeps its own shape."""
    rank = len(shape)
    if attribution.ndim <= rank or attribution.shape[:rank] != tuple(shape):
        if attribution.ndim > rank:
            warnings.warn(
                f"The attribution of shape {attribution.shape} does not line up with the input's "
                f"{tuple(shape)}, so it is not summed per position; it keeps the layer's shape.",
                OnnxsalWarning,
                stacklevel=3,
            )
        return attribution
    return attribution.sum(axis=tuple(range(rank, attribution.ndim)))


def _digest_with(digest: str, values: Mapping[str, np.ndarray]) -> str:
    """The digest of a model whose initializers `values` replaced those of `digest`'s."""
    h = hashlib.sha256(digest.encode())
    for name in sorted(values):
        h.update(name.encode())
        h.update(np.ascontiguousarray(values[name]).tobytes())
    return h.hexdigest()


def _batch_size(value: Any) -> int | None:
    """Samples per runtime run: a positive int, or None for all at once."""
    return None if value is None else positive_int(value, "batch_size (or None)")


def load(model: ModelSource) -> onnx.ModelProto:
    """The model a source names (a file, a zoo name, bytes, a proto): a private copy, with
    its external data read in."""
    return load_model(_from_zoo(model), tuple(ZOO))


def _from_zoo(model: ModelSource) -> ModelSource:
    """A zoo name stands for its ONNX file (built and cached on first use)."""
    if isinstance(model, str) and model in ZOO and not Path(model).exists():
        try:
            return ZOO[model].locate()
        except ImportError as exc:
            raise ModelLoadError(f"Zoo model '{model}' cannot be built here: {exc}") from exc
    return model
