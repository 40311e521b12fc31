"""Float64 torch oracles for whole models: autograd, Captum, and hook-based modifiers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Modules acting as rectifiers, matching onnxsal.modifiers.RECTIFIERS.
RECTIFIER_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Hardswish,
    nn.GELU,
    nn.Mish,
    nn.Softplus,
    nn.SiLU,
)


def logits64(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.double()(torch.tensor(x, dtype=torch.float64))


def vanilla(model: nn.Module, x: np.ndarray, target) -> np.ndarray:
    model = model.double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = model(xt)
    score = out[torch.arange(len(x)), torch.as_tensor(target)].sum()
    (grad,) = torch.autograd.grad(score, xt)
    return grad.numpy()


def captum(method: str, model: nn.Module, x: np.ndarray, target) -> np.ndarray:
    from captum.attr import Deconvolution, GuidedBackprop

    cls = {"guided": GuidedBackprop, "deconv": Deconvolution}[method]
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    return cls(model.double()).attribute(xt, target=torch.as_tensor(target)).detach().numpy()


def hooked(method: str, model: nn.Module, x: np.ndarray, target) -> np.ndarray:
    """onnxsal's documented modifier rule, applied to every rectifier module with hooks:

    guided: f'(x) * [x > 0] * relu(g); deconv: relu(g). For nn.ReLU this is exactly
    Captum's rule (a test checks that), and it extends it to ReLU6, HardSwish, GELU...
    """
    model = model.double()
    saved: dict[nn.Module, torch.Tensor] = {}
    handles = []

    def remember(module, inputs, output):
        saved[module] = inputs[0].detach()

    def backward(module, grad_input, grad_output):
        g = torch.relu(grad_output[0])
        if method == "deconv":
            return (g,)
        x_in = saved[module].clone().requires_grad_(True)
        with torch.enable_grad():
            y = module.forward(x_in)  # not __call__: that would re-enter these hooks
            (slope,) = torch.autograd.grad(y, x_in, torch.ones_like(y))
        return (slope * (x_in.detach() > 0) * g,)

    for m in model.modules():
        if isinstance(m, RECTIFIER_MODULES):
            handles.append(m.register_forward_hook(remember))
            handles.append(m.register_full_backward_hook(backward))
    try:
        return vanilla(model, x, target)
    finally:
        for h in handles:
            h.remove()
