"""ARM-kernel parity of whisper_hybrid on every clip of the speech set (not only the smoke clips):
an aarch64 board's transcripts against the same artifacts on the controller's x86_64 ONNX Runtime
(fleet.runner.emulation.X86Reference), as test_arm_parity compares them. It measures what
suites/whisper_hybrid/suite.yml ``arm_parity.bounds`` is set from.

    fleet sim up --boards 1 --arch aarch64
    fleet deploy --models whisper-tiny.en --datasets speech
    python benchmarks/arm_parity.py [--inventory inventory/sim.yml] [--clips N]

Prints one row per clip (raw transcripts, identical or not, after Whisper's normaliser) and the WER
of each side; under qemu-user a clip takes ~5-15 s on the board.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from fleet.inventory import load_inventory
    from fleet.metrics.asr import normalize, wer_cer
    from fleet.remote.session import AgentSession
    from fleet.runner.emulation import X86Reference, same_artifacts
    from fleet.runner.suite import load_suite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inventory", default="inventory/sim.yml")
    ap.add_argument("--clips", type=int, default=0, help="at most N clips (0 = all)")
    args = ap.parse_args(argv)
    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "whisper_hybrid")
    board = next(b for b in load_inventory(args.inventory) if b.arch == "aarch64")
    items = suite.dataset_items()[: args.clips or None]
    ref = X86Reference(board, suite)
    refs, arm, x86 = [], [], []
    with AgentSession(board, request_timeout_s=600) as s:
        info = s.info()
        same_artifacts(board, info, ref, suite.model)
        s.request("load", {"pipeline": suite.pipeline, "options": suite.options})
        for it in items:
            path = f"data/{suite.dataset}/{it['audio']}"
            t0 = time.monotonic()
            a = s.request("run", {"pipeline": suite.pipeline, "input": path, "options": suite.options}).result["text"]
            dt = time.monotonic() - t0
            x = ref.run(suite.pipeline, path, suite.options)["text"]
            refs.append(it["text"])
            arm.append(a)
            x86.append(x)
            same = "same" if a.strip() == x.strip() else ("same normalised" if normalize(a) == normalize(x) else "DIFFER")
            print(f"{it['id']:<26} {dt:6.1f} s  {same:<16} arm: {a.strip()!r}" +
                  ("" if same == "same" else f"\n{'':<44} x86: {x.strip()!r}"), flush=True)
    ref.close()
    w_arm, _ = wer_cer(refs, arm)
    w_x86, _ = wer_cer(refs, x86)
    changed = sum(a.strip() != x.strip() for a, x in zip(arm, x86))
    changed_n = sum(normalize(a) != normalize(x) for a, x in zip(arm, x86))
    print(f"{len(items)} clips on {board.name} ({board.arch}, cpu_emulated={board.cpu_emulated or 'no'}): "
          f"WER arm {w_arm:.4f} x86 {w_x86:.4f} delta {w_arm - w_x86:+.4f}; raw transcripts changed {changed}, "
          f"after the normaliser {changed_n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
