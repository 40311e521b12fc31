"""Recipe for the digits-cnn twins: one network, trained in PyTorch, copied into Keras 3.

    python -m onnxsal.models.digits_recipe [--out models/]

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to
[0, 255] and resized to 32x32 bilinearly; a stratified 25% held out (seed 0).
The PyTorch network is trained from seed 0, then the Keras model of the same
architecture receives its weights (kernels transposed, the first Dense's rows
permuted from C,H,W to H,W,C flattening order), so the two are twins. Each is
exported through onnxsal's converters (PyTorch: torch's exporter, NCHW; Keras:
the TensorFlow backend and tf2onnx, NHWC) with metadata and written next to
this file. Needs torch, keras, tensorflow-cpu, tf2onnx and scikit-learn.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SIZE = 32
SEED = 0
LABELS = [str(d) for d in range(10)]


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), images (N, 32, 32) in [0, 1]."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    big = np.stack(
        [
            np.asarray(
                Image.fromarray((img * 255 / 16).astype(np.uint8)).resize(
                    (SIZE, SIZE), resample=Image.BILINEAR
                ),
                dtype=np.float32,
            )
            / 255.0
            for img in digits.images
        ]
    )
    x_tr, x_te, y_tr, y_te = train_test_split(
        big, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target
    )
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


def preprocessing(layout: str):
    from onnxsal.metadata import Preprocess

    return Preprocess(
        size=(SIZE, SIZE),
        resize="bilinear",
        scale=1 / 255,
        mean=[0.0],
        std=[1.0],
        channel_order="L",
        layout=layout,
    )


def torch_net():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(64, 10),
        nn.Softmax(dim=1),
    )


def train_torch(x: np.ndarray, y: np.ndarray, epochs: int = 30):
    import torch

    torch.manual_seed(SEED)
    net = torch_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x[:, None]), torch.tensor(y)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            logits = net[:-1](xt[idx])  # train on logits; the Softmax is for deployment
            torch.nn.functional.cross_entropy(logits, yt[idx]).backward()
            opt.step()
    return net.eval()


def keras_twin(net):
    """The Keras model of the same architecture, carrying the torch weights."""
    import keras

    inp = keras.Input((SIZE, SIZE, 1), name="image")
    h = inp
    for i, (conv, bn) in enumerate(((net[0], net[1]), (net[4], net[5])), start=1):
        h = keras.layers.Conv2D(conv.out_channels, 3, padding="same", name=f"conv{i}")(h)
        h = keras.layers.BatchNormalization(epsilon=bn.eps, name=f"bn{i}")(h)
        h = keras.layers.ReLU(name=f"relu{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool{i}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, name="fc1")(h)
    h = keras.layers.ReLU(name="relu3")(h)
    h = keras.layers.Dropout(0.2, name="dropout")(h)
    h = keras.layers.Dense(10, name="fc2")(h)
    out = keras.layers.Softmax(name="softmax")(h)
    model = keras.Model(inp, out, name="digits_cnn")

    def np_(t):
        return t.detach().numpy()

    for i, (conv, bn) in enumerate(((net[0], net[1]), (net[4], net[5])), start=1):
        model.get_layer(f"conv{i}").set_weights(
            [np_(conv.weight).transpose(2, 3, 1, 0), np_(conv.bias)]
        )
        model.get_layer(f"bn{i}").set_weights(
            [np_(bn.weight), np_(bn.bias), np_(bn.running_mean), np_(bn.running_var)]
        )
    fc1 = np_(net[9].weight)  # (64, C*H*W) in torch's C,H,W order -> H,W,C rows
    fc1 = fc1.reshape(64, 32, 8, 8).transpose(2, 3, 1, 0).reshape(-1, 64)
    model.get_layer("fc1").set_weights([fc1, np_(net[9].bias)])
    model.get_layer("fc2").set_weights([np_(net[12].weight).T, np_(net[12].bias)])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    import torch

    from onnxsal.converters import from_keras, from_torch

    x_tr, y_tr, x_te, y_te = dataset()
    net = train_torch(x_tr, y_tr)
    with torch.no_grad():
        acc_torch = (net(torch.tensor(x_te[:, None])).argmax(1).numpy() == y_te).mean()
    twin = keras_twin(net)
    acc_keras = (np.asarray(twin(x_te[..., None])).argmax(1) == y_te).mean()
    print(f"held-out accuracy: torch {acc_torch:.4f}, keras {acc_keras:.4f}")
    out = Path(args.out)
    from_torch(
        net,
        (1, SIZE, SIZE),
        out / "digits-cnn-torch.onnx",
        preprocess=preprocessing("NCHW"),
        labels=LABELS,
    )
    from_keras(twin, out / "digits-cnn-keras.onnx", preprocess=preprocessing("NHWC"), labels=LABELS)
    print(f"wrote {out / 'digits-cnn-torch.onnx'} and {out / 'digits-cnn-keras.onnx'}")


if __name__ == "__main__":
    main()
