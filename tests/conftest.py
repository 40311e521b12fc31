import os

import pytest
from hypothesis import HealthCheck, settings

EXPORTERS = {"torchscript": dict(dynamo=False, opset=11), "dynamo": dict(dynamo=True, opset=25)}
SIZE = 32

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,  # reproducible in CI; HYPOTHESIS_PROFILE=explore searches afresh
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore", deadline=None, max_examples=300, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


from tests.support import torchvision_or_stand_in  # noqa: E402

torchvision_or_stand_in()


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Each (architecture, exporter) exported once per session: (torch model, path, Explainer)."""
    import torch

    import onnxsal
    from tests.architectures import build, export

    cache: dict = {}
    folder = tmp_path_factory.mktemp("exports")

    def get(arch: str, exporter: str):
        if (arch, exporter) not in cache:
            model = build(arch)
            path = str(folder / f"{arch}-{exporter}.onnx")
            export(model, torch.randn(2, 3, SIZE, SIZE), path, **EXPORTERS[exporter])
            cache[arch, exporter] = (model, path, onnxsal.Explainer(path))
        return cache[arch, exporter]

    return get
