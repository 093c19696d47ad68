"""NPU compiler toolchains on the controller: ``fleet toolchain install rknn`` / ``status``.

- ``rknn``: rknn-toolkit2 (PyPI) in a venv of its own (it pins numpy/onnx/torch versions the
  project cannot share); fleet drives it as a subprocess (fleet.models.compile.rknn).
- The Hailo Dataflow Compiler (``hailo_sdk_client``) is not on PyPI and cannot be installed by
  fleet: ``status`` says whether it imports in fleet's own venv and where to get it.
"""
