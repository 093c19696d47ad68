"""``fleet-agent``: the board-side command.

    fleet-agent [--root DIR] info [--json]
    fleet-agent [--root DIR] serve
    fleet-agent [--root DIR] run PIPELINE --input PATH [--model-dir DIR] [--option k=v ...] [--json]

``--root`` is fleet_root (default $FLEET_ROOT, else the folder holding this venv when it has
agent.yml, else the current directory). ``input`` and ``--model-dir`` are relative to fleet_root
or absolute inside it. Exit codes: 0 ok, 2 bad input, 3 runtime/model error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Before numpy is imported (by .agent): OpenBLAS would start one thread per core at import and
# spin them after each call. The agent's heavy math runs in ONNX Runtime / CTranslate2, which keep
# their own thread pools; its own numpy BLAS calls are tiny (norms, a [docs, 384] x [384] score),
# so one BLAS thread loses nothing and the pool's start-up (~70 ms of CPU per agent start on this
# machine: `python -c "import numpy"` 0.16 s user vs 0.09 s with OPENBLAS_NUM_THREADS=1) and its
# contention with ONNX Runtime's threads go away. An explicit setting on the board wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from . import __version__
from .agent import Agent, serve, watch_reply_reader
from .config import load_config
from .protocol import EXIT_OK, AgentError, BadInput


def _parse_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--option {text!r} is not key=value", "write e.g. --option precision=int8")
    return key.strip(), value


def _report_error(e: AgentError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": e.to_dict()}))
    print(f"fleet-agent: {e.type}: {e.message}" + (f"\n  fix: {e.fix}" if e.fix else ""), file=sys.stderr)
    return e.exit_code


def _serve(agent: Agent) -> int:
    """Keep fd 1 for protocol lines only: duplicate it for the replies, then point fd 1 (and
    sys.stdout) at stderr so any library chatter, Python or C, lands on stderr. A watchdog ends
    the process once nobody reads the replies (``agent.watch_reply_reader``): a hung request
    never sees stdin's EOF."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    watch_reply_reader(proto.fileno())
    try:
        return serve(agent, sys.stdin.buffer, proto)
    finally:
        proto.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet-agent", description="fleet board agent")
    p.add_argument("--root", help="fleet_root (holds agent.yml, models/, data/)")
    p.add_argument("--version", action="version", version=f"fleet-agent {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info", help="board, backends, models")
    pi.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("serve", help="JSON lines on stdin/stdout (device_agent.protocol)")
    pr = sub.add_parser("run", help="run a pipeline once")
    pr.add_argument("pipeline")
    pr.add_argument("--input", help="input file (relative to fleet_root)")
    pr.add_argument("--collection", help="rag.hybrid: collection folder (same as --input)")
    pr.add_argument("--model-dir", help="model folder (default models/<pipeline's model>)")
    pr.add_argument("--option", action="append", default=[], metavar="K=V", help="pipeline option")
    pr.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fleet-agent``. Returns the exit status: 0 ok, 2 bad input (also argparse
    usage errors), 3 runtime/model error."""
    args = build_parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    try:
        config = load_config(args.root)
        agent = Agent(config)
        if args.cmd == "serve":
            return _serve(agent)
        if args.cmd == "info":
            info = agent.info()
            if as_json:
                print(json.dumps(info, indent=2))
            else:
                _print_info(info)
            return EXIT_OK
        options = dict(_parse_option(o) for o in args.option)
        try:
            result = agent.run({"pipeline": args.pipeline, "input": args.input or args.collection,
                                "model_dir": args.model_dir, "options": options}, {})
        finally:
            agent.close()
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            print(result.get("text", ""))
            st = result.get("stages", {})
            print("  " + "  ".join(f"{k} {v.get('ms', 0):.1f} ms ({v.get('backend')})" for k, v in st.items())
                  + f"  total {result.get('total_ms', 0):.1f} ms  rtf {result.get('rtf')}", file=sys.stderr)
        return EXIT_OK
    except AgentError as e:
        return _report_error(e, as_json)


def _print_info(info: dict) -> None:
    print(f"board {info['board']}  accelerator {info['accelerator']}  emulated {info['emulated']}  "
          f"root {info['fleet_root']}")
    print(f"agent {info['agent']['version']}  python {info['python']['version']}  "
          f"cpu {info['cpu']['model']} x{info['cpu']['count']}  memory {info['memory'].get('total_mb')} MiB")
    for name, b in info["backends"].items():
        print(f"  backend {name}: " + (f"available {b['version']}" if b["available"] else f"absent: {b['reason']}"))
    for model, m in info["models"].items():
        files = m.get("files", {})
        print(f"  model {model}: " + (m["error"] if "error" in m else f"{len(files)} files"))


if __name__ == "__main__":
    sys.exit(main())
