"""fleet's board-side agent: backends (onnx, hailo, rknn), pipelines and the `fleet-agent` CLI.

This package is installed alone on a board (numpy, onnxruntime, tokenizers, soundfile, soxr,
pyyaml). It must never import `fleet`, torch, transformers or ansible.
"""

__version__ = "0.1.0"
