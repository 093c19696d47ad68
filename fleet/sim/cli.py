"""`fleet sim up|status|down`: the emulated fleet from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fleet import paths


def _default_state_dir() -> Path:
    return paths.state_dir() / "sim"


def _default_inventory() -> Path:
    return paths.project_root() / "inventory" / "sim.yml"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fleet sim` and its sub-commands to the `fleet` parser."""
    p = subparsers.add_parser("sim", help="emulated boards: real sshd per board in a network namespace")
    sub = p.add_subparsers(dest="sim_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    def common(sp: argparse.ArgumentParser) -> None:
        """Options every sim action takes."""
        sp.add_argument("--state-dir", type=Path, default=None, help="sim state folder (default .fleet/sim)")

    up = sub.add_parser("up", help="start emulated boards and write their inventory")
    common(up)
    up.add_argument("--boards", type=int, default=None, help="number of boards (default 3)")
    up.add_argument("--mix", default=None, help="board families and counts, e.g. pi5-hailo8l:2,rk3588:1 "
                    "(families: pi5-hailo8l, pi5-hailo8, pi5-hailo10h, rk3588, cpu, and plug-ins')")
    up.add_argument("--inventory", type=Path, default=None, help="inventory to write (default inventory/sim.yml)")
    up.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"),
                    help="architecture of the boards (a --mix entry may name its own: pi5-hailo8l:1@aarch64); "
                         "aarch64 = a Debian arm64 image under qemu-user (default x86_64)")
    up.add_argument("--suite", default=None, metavar="SUITE",
                    help="Debian suite of the aarch64 boards' image: bullseye (Python 3.9), bookworm (3.11, "
                         "the default) or trixie (3.13); a --mix entry may name its own: rk3588:1@aarch64:bullseye")
    up.add_argument("--no-netns", action="store_true", help="sshd on 127.0.0.1 instead of network namespaces")
    up.add_argument("--replace", action="store_true", help="take a running sim down first")
    up.add_argument("--bastion", action="store_true",
                    help="put the boards behind an emulated jump host reachable only through it "
                         "(inventory: -F SSH_CONFIG -o ProxyJump=sim-bastion; needs root)")
    up.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the sshds (default 15)")
    up.add_argument("--json", action="store_true", help="print the boards as JSON")
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="show the emulated boards")
    common(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    im = sub.add_parser("image", help="the cached Debian arm64 image aarch64 boards start from")
    im_sub = im.add_subparsers(dest="image_command", metavar="ACTION")
    im.set_defaults(func=lambda a: (im.print_help(), 2)[1])
    ib = im_sub.add_parser("build", help="debootstrap the image into the cache (once; ~4.5 min)")
    ib.add_argument("--suite", default="bookworm", help="Debian suite: bullseye, bookworm (default) or trixie")
    ib.add_argument("--rebuild", action="store_true", help="build again even when it is cached")
    ib.add_argument("--mirror", default=None, help="Debian mirror (default $FLEET_DEBIAN_MIRROR or deb.debian.org)")
    ib.add_argument("--json", action="store_true", help="print image.json")
    ib.set_defaults(func=cmd_image_build)
    ish = im_sub.add_parser("show", help="print the cached image's image.json")
    ish.add_argument("--suite", default="bookworm", help="Debian suite: bullseye, bookworm (default) or trixie")
    ish.add_argument("--verify", action="store_true", help="re-hash the tree against its sha256")
    ish.set_defaults(func=cmd_image_show)

    dn = sub.add_parser("down", help="stop the emulated boards and remove their namespaces")
    common(dn)
    dn.add_argument("--purge", action="store_true", help="also delete keys and board roots")
    dn.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    """Handler of `fleet sim up`."""
    from rich.console import Console

    from fleet.sim import lifecycle

    t0 = time.monotonic()
    state = lifecycle.up(
        args.state_dir or _default_state_dir(),
        args.inventory or _default_inventory(),
        mix=args.mix,
        boards=args.boards,
        use_netns=False if args.no_netns else None,
        replace=args.replace,
        timeout=args.timeout,
        bastion=args.bastion,
        arch=args.arch,
        suite=args.suite,
        log=lambda line: print(f"fleet sim: {line}", file=sys.stderr, flush=True),
    )
    took = time.monotonic() - t0
    if args.json:
        print(json.dumps({**state.to_dict(), "seconds": round(took, 2)}, indent=2))
        return 0
    con = Console()
    if state.bastion:
        b = state.bastion
        con.print(f"[green]up[/] {b.name:<14} {'jump host':<12} {b.address}:{b.port} (netns {b.netns}); "
                  f"ssh_config {state.ssh_config}", soft_wrap=True, highlight=False)
    for b in state.boards:
        where = f"{b.address}:{b.port}" + (f" (netns {b.netns})" if b.netns else "")
        root = f"root {b.root}" + (f" in {b.chroot} (aarch64, qemu-user)" if b.chroot else "")
        con.print(f"[green]up[/] {b.name:<14} {b.board:<12} {where}  {root}", soft_wrap=True, highlight=False)
    con.print(
        f"{len(state.boards)} boards up in {took:.1f} s; inventory {state.inventory}, known_hosts {state.known_hosts}",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    """Handler of `fleet sim image build`."""
    from fleet.sim import rootfs

    t0 = time.monotonic()
    meta = rootfs.build(rootfs.image_spec(args.suite), rebuild=args.rebuild, mirror=args.mirror,
                        log=lambda line: print(f"fleet sim: {line}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(f"image {meta['root']}: {meta['suite']} {meta['arch']} {meta['variant']}, {meta['packages']} packages, "
              f"Python {meta['python']}, {meta['size_bytes'] / 1e6:.0f} MB, tree sha256 {meta['tree_sha256'][:16]}… "
              f"({time.monotonic() - t0:.0f} s)")
    return 0


def cmd_image_show(args: argparse.Namespace) -> int:
    """Handler of `fleet sim image show`: exit 1 when there is no image (or --verify finds it changed)."""
    from fleet.sim import rootfs

    spec = rootfs.image_spec(args.suite)
    meta = rootfs.load_image(spec)
    if meta is None:
        print(f"no cached image in {rootfs.image_dir(spec)} (build it: fleet sim image build --suite {args.suite})",
              file=sys.stderr)
        return 1
    print(json.dumps(meta, indent=2))
    if args.verify:
        ok, msg = rootfs.verify(spec)
        print(("ok: " if ok else "CHANGED: ") + msg, file=sys.stderr)
        return 0 if ok else 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Handler of `fleet sim status`: exit 0 when every board answers, 3 when one does not, 1 when no sim."""
    from rich.console import Console
    from rich.table import Table

    from fleet.sim import lifecycle

    state, rows = lifecycle.status(args.state_dir or _default_state_dir())
    healthy = bool(rows) and all(r.alive and r.answering for r in rows)
    if args.json:
        print(
            json.dumps(
                {
                    "running": state is not None,
                    "inventory": state.inventory if state else None,
                    "boards": [r.__dict__ for r in rows],
                },
                indent=2,
            )
        )
        return 0 if healthy else (1 if state is None else 3)
    con = Console()
    if state is None:
        con.print("no emulated fleet is running (start one with `fleet sim up`)")
        return 1
    table = Table(title=f"emulated fleet ({state.inventory})")
    for col in ("board", "class", "address", "pid", "alive", "answering"):
        table.add_column(col, no_wrap=True)
    yes, no = "[green]yes[/]", "[red]no[/]"
    for r in rows:
        table.add_row(r.name, r.board, f"{r.address}:{r.port}", str(r.pid), yes if r.alive else no, yes if r.answering else no)
    con.print(table)
    return 0 if healthy else 3


def cmd_down(args: argparse.Namespace) -> int:
    """Handler of `fleet sim down`."""
    from rich.console import Console

    from fleet.sim import lifecycle

    rep = lifecycle.down(args.state_dir or _default_state_dir(), purge=args.purge)
    con = Console()
    if not (rep.stopped or rep.removed or rep.skipped):
        con.print("no emulated fleet was running")
        return 0
    for s in rep.stopped:
        con.print(f"[green]stopped[/] {s}")
    for s in rep.removed:
        con.print(f"[green]removed[/] {s}")
    for s in rep.skipped:
        con.print(f"[yellow]left alone[/] {s}")
    return 0
