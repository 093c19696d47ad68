"""Run inside the rknn-toolkit2 venv: ONNX + calibration list -> .rknn (and optionally simulate).

Usage: ``<toolchain venv>/bin/python rknn_worker.py REQUEST.json RESULT.json``

This file is executed by the toolchain venv's Python (numpy 1.26, onnx 1.18, rknn-toolkit2
2.5.0), never imported by fleet: it uses only the standard library, numpy and ``rknn.api``.
The call sequence is rknn-toolkit2's documented one (API reference 2.3.2 §3, rknn_model_zoo
examples/whisper/python/convert.py; docs/reference/device_apis.md §3.2):
``RKNN(verbose)`` -> ``config(target_platform, quantized_dtype, quantized_algorithm,
quantized_method)`` -> ``load_onnx(model, inputs, input_size_list)`` ->
``build(do_quantization=True, dataset=LIST, auto_hybrid)`` -> ``export_rknn(path)``; with ``simulate``:
``init_runtime()`` (target None = the toolkit's simulator) -> ``inference(inputs, data_format)``.
rknn-toolkit2 reports failures by return value (0 / -1), so each call's value is checked.

REQUEST keys: onnx, out, inputs (names), input_size_list, dataset (list file), target_platform,
quantized_dtype, quantized_algorithm, quantized_method, auto_hybrid, verbose, simulate_inputs (an .npz of one
sample per input, or null), simulate_out (.npz for the simulator's outputs).
RESULT: {"ok": bool, "stage": failed stage or "done", "message", "version", "seconds": {...}}.
"""

import json
import sys
import time
import traceback


def main(req_path: str, res_path: str) -> int:
    with open(req_path) as f:
        req = json.load(f)
    res = {"ok": False, "stage": "import", "message": "", "version": None, "seconds": {}}

    def finish(code: int) -> int:
        with open(res_path, "w") as f:
            json.dump(res, f)
        return code

    try:
        from importlib import metadata

        res["version"] = metadata.version("rknn-toolkit2")
        from rknn.api import RKNN
    except Exception as e:  # noqa: BLE001  (ImportError, or the toolkit's own import-time errors)
        res["message"] = f"{type(e).__name__}: {e}"
        return finish(1)

    rk = RKNN(verbose=bool(req.get("verbose", False)))

    def call(stage, fn, *args, **kw):
        res["stage"] = stage
        t0 = time.perf_counter()
        try:
            ret = fn(*args, **kw)
        except Exception as e:  # the toolkit raises from deep inside on some errors
            raise RuntimeError(f"{stage} raised {type(e).__name__}: {e}") from e
        res["seconds"][stage] = round(time.perf_counter() - t0, 3)
        return ret

    try:
        ret = call("config", rk.config, target_platform=req["target_platform"],
                   quantized_dtype=req["quantized_dtype"],
                   quantized_algorithm=req["quantized_algorithm"],
                   quantized_method=req["quantized_method"])
        if ret not in (0, None):
            raise RuntimeError(f"config returned {ret}")
        ret = call("load_onnx", rk.load_onnx, model=req["onnx"], inputs=req["inputs"],
                   input_size_list=req["input_size_list"])
        if ret != 0:
            raise RuntimeError(f"load_onnx returned {ret}")
        ret = call("build", rk.build, do_quantization=True, dataset=req["dataset"],
                   auto_hybrid=bool(req.get("auto_hybrid", False)))
        if ret != 0:
            raise RuntimeError(f"build returned {ret}")
        ret = call("export_rknn", rk.export_rknn, req["out"])
        if ret != 0:
            raise RuntimeError(f"export_rknn returned {ret}")
        if req.get("simulate_inputs"):
            import numpy as np

            ret = call("init_runtime", rk.init_runtime)  # target=None: the simulator
            if ret != 0:
                raise RuntimeError(f"init_runtime (simulator) returned {ret}")
            with np.load(req["simulate_inputs"]) as z:
                feeds = [z[name] for name in req["inputs"]]
            fmt = "nchw" if any(a.ndim == 4 for a in feeds) else None
            outs = call("inference", rk.inference, inputs=feeds, data_format=fmt)
            if outs is None:
                raise RuntimeError("inference (simulator) returned None")
            np.savez(req["simulate_out"], *[np.asarray(o) for o in outs])
        res["stage"], res["ok"] = "done", True
        return finish(0)
    except Exception as e:  # noqa: BLE001  (reported to the caller in RESULT)
        res["message"] = f"{e}\n{traceback.format_exc(limit=3)}"
        return finish(1)
    finally:
        try:
            rk.release()
        except Exception:  # noqa: BLE001, S110  (release after a failed build may raise; nothing to recover)
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
