"""Run in a subprocess (Keras picks its backend per process): convert a Keras CNN and report.

    KERAS_BACKEND=torch|tensorflow python -m tests.keras_check OUTDIR

Prints one JSON line: what the converted models say and how their gradients
compare with the backend's own autodiff.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np


def build():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(5, name="logits")(h)
    out = keras.layers.Softmax(name="probs")(h)
    model = keras.Model(inp, out)
    # non-trivial BatchNorm statistics
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(0)
    bn.set_weights(
        [
            rng.uniform(0.5, 1.5, 8),
            rng.uniform(-0.2, 0.2, 8),
            rng.uniform(-0.5, 0.5, 8),
            rng.uniform(0.5, 2.0, 8),
        ]
    )
    return model


def framework_gradient(model, x, target):
    """d logit[target] / d x with the backend's autodiff (the softmax is skipped)."""
    import keras

    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        out = logits(xt)
        out[torch.arange(len(x)), torch.tensor(target)].sum().backward()
        return xt.grad.numpy()
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = logits(xt)
        score = tf.reduce_sum(tf.gather(out, target, axis=1, batch_dims=1))
    return tape.gradient(score, xt).numpy()


def main() -> None:
    warnings.filterwarnings("ignore")
    out = Path(sys.argv[1])
    import keras

    import onnxsal
    from onnxsal import metadata
    from onnxsal.converters import from_keras

    model = build()
    model.save(out / "cnn.keras")
    model.save(out / "cnn.h5")
    report = {"backend": keras.backend.backend()}
    x = np.random.default_rng(1).standard_normal((3, 16, 16, 3)).astype(np.float32)
    target = [0, 2, 4]
    grad = framework_gradient(model, x, target)
    for name, source, layout in (
        ("object", model, "NHWC"),
        ("keras_file", out / "cnn.keras", "NHWC"),
        ("h5_file", out / "cnn.h5", "NHWC"),
        ("nchw", model, "NCHW"),
    ):
        path = out / f"{name}.onnx"
        proto = from_keras(source, path, layout=layout, labels=list("abcde"))
        md = metadata.read(proto)
        ex = onnxsal.Explainer(path)
        xin = x.transpose(0, 3, 1, 2) if layout == "NCHW" else x
        got = ex.explain(xin, "vanilla", target)
        if layout == "NCHW":
            got = got.transpose(0, 2, 3, 1)
        err = float(np.linalg.norm(got - grad) / np.linalg.norm(grad))
        unit = ex.explain(xin, layer="relu1", unit=3)
        report[name] = {
            "written": path.exists(),
            "sidecar": any(out.glob(f"{name}.onnx.data")),
            "source": md["source"],
            "layout": md["layout"],
            "ex_layout": ex.layout,
            "verified": md["verified"],
            "labels": md["labels"],
            "layers": sorted(md["layers"]),
            "rel_l2_vs_framework": err,
            "unit_map_shape": list(unit.shape),
            "input_shape": [d if isinstance(d, int) else "sym" for d in ex.input_shape],
        }
    # A functional model built on [input]: converting it must not call it the wrong way.
    listed = keras.Model([model.inputs[0]], model.outputs[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proto = from_keras(listed, out / "listed.onnx")
    report["listed"] = {
        "layers": sorted(metadata.read(proto)["layers"]),
        "structure_warnings": [
            str(w.message).splitlines()[0] for w in caught if "structure of" in str(w.message)
        ],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
