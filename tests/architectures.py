"""Small torch models in the style of the architectures users explain.

Every activation is a fresh module (Captum's GuidedBackprop only rewrites
nn.ReLU modules, and only where each use has its own module). The same
classes serve the parity tests (32x32 inputs) and the benchmarks (224x224).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class VGGish(nn.Module):
    """AlexNet/VGG: overlapping 3x3/2 MaxPool, LRN, Flatten, Dropout, Gemm; ends in Softmax."""

    def __init__(self, classes: int = 10, softmax: bool = True, image: int = 32, width: int = 1):
        super().__init__()
        c1, c2, hidden = 16 * width, 32 * width, 64 * width
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 5, 2, 2),
            nn.ReLU(),
            nn.LocalResponseNorm(5),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, image, image)).numel()
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(flat, hidden),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(hidden, classes),
        )
        self.softmax = softmax

    def forward(self, x):
        logits = self.classifier(torch.flatten(self.features(x), 1))
        return torch.softmax(logits, dim=1) if self.softmax else logits


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride), nn.ReLU(), *_conv_bn(cout, cout))
        self.skip = (
            nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        )
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + (x if self.skip is None else self.skip(x)))


class ResNetish(nn.Module):
    """ResNet: 7x7/2 stem, BatchNorm, 3x3/2 MaxPool, residual Adds, global average pool."""

    def __init__(self, classes: int = 10, width: int = 1):
        super().__init__()
        width *= 16
        self.stem = nn.Sequential(*_conv_bn(3, width, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(c // 4, 4), 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(max(c // 4, 4), c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type, se: bool):
        super().__init__()
        mid = cin * expand
        layers = [*_conv_bn(cin, mid, 1), act(), *_conv_bn(mid, mid, 3, stride, groups=mid), act()]
        if se:
            layers.append(SqueezeExcite(mid))
        layers += _conv_bn(mid, cout, 1)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetish(nn.Module):
    """MobileNetV2/V3: depthwise convs, ReLU6 and HardSwish, squeeze-excite, residuals."""

    def __init__(self, classes: int = 10, width: int = 1):
        super().__init__()
        c = [8 * width * k for k in (2, 3, 5, 8)]  # 16, 24, 40, 64 at width 1
        self.stem = nn.Sequential(*_conv_bn(3, c[0], 3, 2), nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidual(c[0], c[0], 1, 2, nn.ReLU6, False),
            InvertedResidual(c[0], c[1], 2, 3, nn.ReLU6, False),
            InvertedResidual(c[1], c[1], 1, 3, nn.Hardswish, True),
            InvertedResidual(c[1], c[2], 2, 3, nn.Hardswish, True),
        )
        self.head = nn.Sequential(*_conv_bn(c[2], c[3], 1), nn.Hardswish())
        self.classifier = nn.Linear(c[3], classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(self.relu(self.norm(x)))], 1)


class DenseNetish(nn.Module):
    """DenseNet: Concat, BN-ReLU-Conv, AvgPool 2x2 transitions, global max pool head."""

    def __init__(self, classes: int = 10, width: int = 1):
        super().__init__()
        growth = 8 * width
        self.stem = nn.Conv2d(3, 16 * width, 3, padding=1)
        c = 16 * width
        blocks = []
        for i in range(2):
            for _ in range(2):
                blocks.append(DenseLayer(c, growth))
                c += growth
            if i == 0:
                blocks += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1), nn.AvgPool2d(2)]
                c //= 2
        self.features = nn.Sequential(*blocks, nn.BatchNorm2d(c), nn.ReLU())
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.classifier(torch.flatten(F.adaptive_max_pool2d(x, 1), 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTish(nn.Module):
    """A small ViT: Conv patchify, class token, LayerNorm, MatMul attention, Softmax, GELU."""

    def __init__(self, classes: int = 10, image: int = 32, patch: int = 8, width: int = 1):
        super().__init__()
        dim = 32 * width
        self.patchify = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(Encoder(dim, 4), Encoder(dim, 4))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patchify(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class UpsampleHead(nn.Module):
    """A segmentation-style head: strided convs, bilinear and nearest Resize, pooled logits."""

    def __init__(self, classes: int = 10, width: int = 1):
        super().__init__()
        c1, c2 = 16 * width, 32 * width
        self.down = nn.Sequential(
            nn.Conv2d(3, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU()
        )
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.mid = nn.Sequential(nn.Conv2d(c2, c1, 3, padding=1), nn.ReLU())
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(c1, classes, 1)

    def forward(self, x):
        y = self.out(self.up2(self.mid(self.up1(self.down(x)))))
        return y.mean((2, 3))


# Benchmark configurations: 224x224 inputs, channel counts of real networks
# (ResNet-18-like 64/128/256, ViT-Tiny's 192-wide tokens...).
FULL_SIZE = {
    "vgg": dict(image=224, width=4, classes=1000),
    "resnet": dict(width=4, classes=1000),
    "mobilenet": dict(width=2, classes=1000),
    "densenet": dict(width=4, classes=1000),
    "vit": dict(image=224, patch=16, width=6, classes=1000),
    "upsample": dict(width=4, classes=21),  # a segmentation head: 21 classes (VOC)
}

ARCHITECTURES = {
    "vgg": VGGish,
    "resnet": ResNetish,
    "mobilenet": MobileNetish,
    "densenet": DenseNetish,
    "vit": ViTish,
    "upsample": UpsampleHead,
}


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """An eval-mode model with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ARCHITECTURES[name](**kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def export(
    model: nn.Module, example: torch.Tensor, path: str, *, dynamo: bool, opset: int | None = None
) -> None:
    """Export with a symbolic batch dimension and weights inside the file."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=True,
                external_data=False,
                opset_version=opset,
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                opset_version=opset or 11,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
