"""HailoRT (``hailo_platform``, .hef) for Hailo-8L / Hailo-8.

Call sequence (docs/reference/device_apis.md §1.1, HailoRT 4.23 ``hailo8`` branch, async API)::

    params = VDevice.create_params(); params.scheduling_algorithm = HailoSchedulingAlgorithm.ROUND_ROBIN
    vd = VDevice(params)
    im = vd.create_infer_model(path); im.input(name).set_format_type(FormatType.FLOAT32) ...
    cim = im.configure(); b = cim.create_bindings()
    b.input(name).set_buffer(x); b.output(name).set_buffer(np.empty(im.output(name).shape, np.float32))
    cim.run([b], timeout_ms)

FLOAT32 user formats make HailoRT (de)quantise on the host. Stream shapes are per frame, without
batch ((H, W, C) by default); ``run`` reshapes the caller's [1, ...] arrays to them and returns
outputs as [1, *shape]. One process owns the device (pitfall §5.2), so one VDevice is shared by
every model this process loads.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import numpy as np

from ..protocol import BadInput, ModelError
from .base import Backend, LoadedModel, TensorInfo, check_inputs, require_file

INSTALL_HINT = ("install python3-hailort matching HailoRT and hailo-dkms "
                "(apt hailo-all on Raspberry Pi OS)")
DEFAULT_TIMEOUT_MS = 10000  # pyhailort DEFAULT_VSTREAM_TIMEOUT_MS


def _hailo():
    return importlib.import_module("hailo_platform")


def declared_input_names(hef_names: list[str], declared) -> dict[str, str]:
    """``{declared name: HEF input stream name}``, or ``{}`` (keep the HEF's names) when the manifest
    declares no names or not as many inputs as the HEF has.

    The Hailo DFC names a network's inputs ``<net>/input_layer<i>``, 1-based in the ONNX graph's
    input order (hailo-whisper feeds its decoder ``…/input_layer1``, ``…/input_layer2``;
    fleet/models/compile/hailo.py builds calibration sets the same way), so the i-th declared input
    is stream ``input_layer<i>``. Names without that suffix keep HailoRT's order.
    """
    names = [d.get("name") for d in (declared or []) if isinstance(d, dict)]
    if not names or not all(names) or len(names) != len(hef_names):
        return {}

    def layer_index(stream: str) -> int:
        tail = stream.rsplit("input_layer", 1)
        return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0

    ordered = sorted(hef_names, key=layer_index) if all(layer_index(n) for n in hef_names) else hef_names
    return {str(ours): stream for ours, stream in zip(names, ordered)}


class HailoModel(LoadedModel):
    """A configured HEF on the shared VDevice."""

    backend = "hailo"

    def __init__(self, path: Path, infer_model, configured, timeout_ms: int, input_names: dict | None = None):
        self.path = path
        self._im = infer_model
        self._cim = configured
        self.timeout_ms = timeout_ms
        #: our input name -> the HEF's stream name (identity unless the manifest declared names)
        hef_names = {n: n for n in infer_model.input_names} if not input_names else input_names
        self._stream = dict(hef_names)
        self.inputs = [TensorInfo(ours, tuple(infer_model.input(stream).shape), "float32")
                       for ours, stream in hef_names.items()]
        self.outputs = [TensorInfo(n, tuple(infer_model.output(n).shape), "float32")
                        for n in infer_model.output_names]

    def _bind(self, inputs: dict[str, np.ndarray]):
        """(bindings, output buffers) for one frame: FLOAT32 C-contiguous input buffers in the stream
        shape, empty FLOAT32 output buffers. Raises BadInput on a size mismatch."""
        bindings = self._cim.create_bindings()
        for t in self.inputs:
            x = np.asarray(inputs[t.name], dtype=np.float32)
            if x.size != int(np.prod(t.shape)):
                raise BadInput(f"{self.path.name}: input {t.name} has {x.size} values, the HEF "
                               f"stream {t.shape} needs {int(np.prod(t.shape))}",
                               "feed one frame in the HEF's layout (NHWC without batch)")
            bindings.input(self._stream[t.name]).set_buffer(np.ascontiguousarray(x.reshape(t.shape)))
        outs = {t.name: np.empty(t.shape, dtype=np.float32) for t in self.outputs}
        for name, buf in outs.items():
            bindings.output(name).set_buffer(buf)
        return bindings, outs

    def _failed(self, e: Exception) -> ModelError:
        return ModelError(f"{self.path.name}: HailoRT run failed: {type(e).__name__}: {e}",
                          "check `hailortcli fw-control identify` and dmesg | grep hailo; "
                          "HailoRT, hailo-dkms and python3-hailort must be the same version")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self, inputs)
        if self._cim is None:
            raise ModelError(f"{self.path.name}: model was closed", "load it again")
        try:
            bindings, outs = self._bind(inputs)
            self._cim.run([bindings], self.timeout_ms)
        except BadInput:
            raise
        except Exception as e:  # HailoRTException and friends
            raise self._failed(e) from None
        return {name: buf[None] for name, buf in outs.items()}

    def run_stream(self, feeds: list[dict[str, np.ndarray]], count: int | None = None,
                   duration_s: float | None = None, clock=None) -> dict:
        """Asynchronous inferences, as many in flight as HailoRT's queue takes (HailoRT Async
        Inference tutorial: ``wait_for_async_ready(timeout_ms)`` before each ``run_async([bindings],
        callback)``, then ``job.wait(timeout_ms)``): the throughput ``hailortcli benchmark`` reports.
        Each job's bindings and buffers are kept until it completes.

        Args:
            feeds: input sets, cycled.
            count: inferences to submit; or ``duration_s``: submit until then (s).
            clock: monotonic seconds (default time.perf_counter).

        Returns:
            {"inferences", "seconds" (first submission to last completion), "queue_size"}.

        Raises:
            ModelError: the binding has no run_async, a job failed or timed out.
        """
        import collections
        import time

        clock = clock or time.perf_counter
        cim = self._cim
        if cim is None:
            raise ModelError(f"{self.path.name}: model was closed", "load it again")
        if not hasattr(cim, "run_async") or not hasattr(cim, "wait_for_async_ready"):
            raise ModelError(f"{self.path.name}: this HailoRT binding has no run_async", "upgrade HailoRT to 4.16+, "
                             "or measure throughput with mode=stream")
        for f in feeds:
            check_inputs(self, f)
        try:
            depth = int(cim.get_async_queue_size()) if hasattr(cim, "get_async_queue_size") else 4
        except Exception:
            depth = 4
        errors: list = []

        def done(completion_info=None):
            exc = getattr(completion_info, "exception", None)
            if exc:
                errors.append(exc)

        pending: collections.deque = collections.deque()
        k, t0 = 0, clock()
        try:
            while (count is not None and k < count) or (count is None and clock() - t0 < (duration_s or 0)):
                cim.wait_for_async_ready(timeout_ms=self.timeout_ms)
                bindings, outs = self._bind(feeds[k % len(feeds)])
                pending.append((cim.run_async([bindings], done), bindings, outs))
                k += 1
                while len(pending) > max(depth, 1):
                    pending.popleft()[0].wait(self.timeout_ms)
            while pending:
                pending.popleft()[0].wait(self.timeout_ms)
        except BadInput:
            raise
        except Exception as e:
            raise self._failed(e) from None
        if errors:
            raise self._failed(errors[0])
        return {"inferences": k, "seconds": clock() - t0, "queue_size": depth}

    def close(self) -> None:
        if self._cim is not None:
            try:
                self._cim.shutdown()
            except Exception:
                pass
            self._cim = None
            self._im = None


class HailoBackend(Backend):
    """Hailo NPU backend (HEF files). ``timeout_ms`` bounds each run."""

    name = "hailo"
    suffix = ".hef"

    def __init__(self, timeout_ms: int = DEFAULT_TIMEOUT_MS):
        self.timeout_ms = timeout_ms
        self._vdevice = None

    def available(self) -> tuple[bool, str]:
        try:
            hp = _hailo()
        except Exception as e:  # ImportError, or a binding/library version mismatch (pitfall §5.1)
            return False, f"hailo_platform not importable: {INSTALL_HINT} ({type(e).__name__}: {e})"
        try:
            devices = hp.Device.scan()
        except Exception as e:
            return False, (f"Hailo device scan failed: {type(e).__name__}: {e}; check the driver "
                           "(dmesg | grep hailo) and that hailo-dkms matches HailoRT")
        if not devices:
            return False, "no Hailo device found (Device.scan() returned nothing); check the PCIe link"
        return True, ""

    def version(self) -> str | None:
        for dist in ("hailort", "hailo_platform", "hailo-platform"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        try:
            return str(getattr(_hailo(), "__version__", "unknown"))
        except Exception:
            return None

    def vdevice(self):
        """The process's single VDevice (created on first use, ROUND_ROBIN scheduler)."""
        if self._vdevice is None:
            hp = _hailo()
            try:
                params = hp.VDevice.create_params()
                params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
                self._vdevice = hp.VDevice(params)
            except Exception as e:
                raise ModelError(f"cannot open the Hailo device: {type(e).__name__}: {e}",
                                 "another process may own it (HAILO_OUT_OF_PHYSICAL_DEVICES): stop it, "
                                 "or use the multi-process service") from None
        return self._vdevice

    def load(self, path: str | Path, inputs=None, **_options) -> HailoModel:
        """Create, set FLOAT32 formats on, and configure an InferModel from a .hef.

        Args:
            inputs: the manifest entry's declared inputs (dicts with ``name``, in ONNX graph order),
                optional: when they are as many as the HEF's input streams, the model's inputs
                take those names (``input_ids`` rather than ``minilm/input_layer1``; see
                :func:`declared_input_names`), so a pipeline feeds a HEF as it feeds the ONNX model.

        Raises:
            ModelError: hailo_platform missing, device busy, HEF for another arch, etc.
        """
        ok, reason = self.available()
        if not ok:
            raise ModelError(f"hailo backend not available: {reason}", INSTALL_HINT)
        p = require_file(path, self.name)
        hp = _hailo()
        try:
            im = self.vdevice().create_infer_model(str(p))
            for n in im.input_names:
                im.input(n).set_format_type(hp.FormatType.FLOAT32)
            for n in im.output_names:
                im.output(n).set_format_type(hp.FormatType.FLOAT32)
            cim = im.configure()
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"HailoRT cannot load {p.name}: {type(e).__name__}: {e}",
                             "compile the HEF for this device's arch (hw_arch hailo8l on a Hailo-8L) "
                             "with a DFC matching the board's HailoRT") from None
        return HailoModel(p, im, cim, self.timeout_ms, declared_input_names(list(im.input_names), inputs))

    def close(self) -> None:
        if self._vdevice is not None:
            try:
                self._vdevice.release()
            except Exception:
                pass
            self._vdevice = None
