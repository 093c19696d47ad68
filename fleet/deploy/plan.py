"""What `fleet deploy` puts on each board, decided on the controller before Ansible starts.

The plan is handed to playbooks/site.yml as the extra var ``fleet_plan_by_host``; the roles
read ``fleet_plan`` (this host's entry) and only ship, unpack, install and verify.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleet.deploy import artifacts as art
from fleet.deploy.bundle import Bundle, folder_members, pack
from fleet.deploy import preflight
from fleet.deploy.wheelhouse import PYTHON_VERSION, NoWheel, Wheelhouse, ensure_wheelhouse
from fleet.inventory import Board

SUMS = "SHA256SUMS"


@dataclass
class HostPlan:
    """One board's share of a deploy (``src`` paths are on the controller, ``dest`` under fleet_root).

    Attributes:
        host: inventory hostname.
        wheelhouse: the wheelhouse bundle for the board's platform: {name, src, key, dest}.
        fleet_wheel: the fleet wheel's file name in it.
        wheelhouse_key: the wheelhouse's source hash (marks what the board's venv holds).
        models: one bundle per model: {name, src, key, dest, model, files, verify} (``files`` =
            names); each holds the artifacts, manifest.json (only these entries) and SHA256SUMS,
            which the board checks on every deploy (``verify``).
        datasets: one bundle per data set: {name, src, key, dest, verify}; each holds the data
            set's files (or a selection of them) and SHA256SUMS, checked on the board.
        family: the board's family as data (``BoardFamily.to_dict``) when it comes from a plug-in
            package (entry point ``fleet.board_families``), which the board need not have: the
            agent role writes it into agent.yml; None for a built-in family.
    """

    host: str
    wheelhouse: dict
    fleet_wheel: str
    wheelhouse_key: str
    models: list[dict] = field(default_factory=list)
    datasets: list[dict] = field(default_factory=list)
    family: dict | None = None

    def to_vars(self) -> dict:
        """The host's entry of the ``fleet_plan_by_host`` extra var."""
        return asdict(self)


@dataclass
class Plan:
    """The whole deploy: per-host plans, the wheelhouses used, and notes for the user.

    ``refused`` holds the boards the agent cannot be installed on (their Python/platform has no
    wheel of a pinned dependency, or is outside requires-python): they have no entry in ``hosts``
    and get nothing. ``boards`` are the boards planned, with the Python each was planned for.
    """

    hosts: dict[str, HostPlan]
    wheelhouses: list[Wheelhouse]
    notes: list[str]
    refused: dict[str, preflight.Refusal] = field(default_factory=dict)
    boards: list[Board] = field(default_factory=list)


def plugin_family(board) -> dict | None:
    """The board's family as data when it is a plug-in's (HostPlan.family), else None."""
    from fleet.families import registry

    reg = registry()
    fam = reg.find(board.accelerator)
    if fam is None or reg.origin.get(fam.name) == "built-in":
        return None
    return fam.to_dict()


def model_bundle(arts: list[art.Artifact], model: str, schema: int, cache: Path) -> Bundle:
    """Pack one model's artifacts (already sha256-verified) with its board manifest and SHA256SUMS."""
    mine = [a for a in arts if a.model == model]
    manifest = (json.dumps(art.board_manifest(mine, model, schema), indent=2, sort_keys=True) + "\n").encode()
    files = {a.name: a for a in mine}  # entries sharing one file (same name, same sha256) ship it once
    sums = "".join(f"{a.sha256}  {name}\n" for name, a in sorted(files.items())).encode()
    key = hashlib.sha256(manifest + sums).hexdigest()[:16]  # the sums pin every file's content
    members = [(name, a.src) for name, a in sorted(files.items())] + [("manifest.json", manifest), (SUMS, sums)]
    return pack(members, cache, f"model-{model}", key)


def dataset_specs(datasets: tuple[str, ...] | None) -> list[tuple[str, str | None]]:
    """(name, selection or None) for each ``NAME[:SELECTION]``; None means the catalog's
    ``deploy: true`` data sets.

    Raises:
        FleetError: unknown data set (with the closest name).
    """
    from fleet.datasets.catalog import get_dataset, load_catalog

    if datasets is None:
        return [(ds.name, None) for ds in load_catalog().values() if ds.deploy]
    out = []
    for spec in datasets:
        name, _, selection = spec.partition(":")
        get_dataset(name)
        out.append((name, selection or None))
    return out


def dataset_bundle(spec: tuple[str, str | None], data_root: Path | None, cache: Path) -> dict:
    """One data set (or a selection of it) from the data root, sha256-verified against the catalog,
    packed with a SHA256SUMS the board checks on every deploy; the role's view
    {name, src, key, dest: data/<name>, verify}.

    Raises:
        FleetError: the data set is missing or a file differs from the catalog (names FLEET_DATA
            and ``fleet datasets fetch``), or the selection is unknown.
    """
    from fleet.datasets.catalog import get_dataset
    from fleet.datasets.local import require

    name, selection = spec
    folder = require(name, data_root, hashed=True, selection=selection)
    files = sorted(get_dataset(name).selected(selection), key=lambda e: e.path)
    sums = "".join(f"{e.sha256}  {e.path}\n" for e in files).encode()
    members = [(e.path, folder / e.path) for e in files] + [(SUMS, sums)]
    # the sums pin every file's content; the name keeps a selection's bundle apart from the whole set's
    key = hashlib.sha256(f"{name}:{selection or ''}\n".encode() + sums).hexdigest()[:16]
    return {**pack(members, cache, f"data-{name}", key).to_vars(f"data/{name}"), "verify": True}


def make_plan(
    boards: list[Board],
    *,
    project: Path,
    wheel_cache: Path,
    bundle_cache: Path,
    artifacts_dir: Path,
    data_root: Path | None = None,
    datasets: tuple[str, ...] | None = None,
    models: tuple[str, ...] | None = None,
    gather=None,
) -> Plan:
    """Build wheelhouses, check artifact sha256s and decide what each board gets.

    Args:
        boards: the boards to deploy (already validated and limited).
        project: the fleet checkout (for the wheel).
        wheel_cache: ``.fleet/wheelhouse``.
        bundle_cache: where tars are cached (``.fleet/bundles``).
        artifacts_dir: folder with manifest.json.
        data_root: where the data sets are read from (default ``fleet.paths.data_root()``).
        datasets: data sets every board gets, each ``NAME`` or ``NAME:SELECTION`` (default: every
            catalog data set marked ``deploy: true``; ``()`` for none).
        models: models every board gets (default: every model in the manifest).
        gather: called with the boards once artifacts and data sets are verified and before any
            wheelhouse is built; returns the boards to plan, each with its ``python_version``
            (fleet.deploy.run gathers it from boards whose inventory does not say it). None =
            plan the boards as given (a board with no Python said gets 3.11).

    A board whose (platform, Python) has no wheelhouse (fleet.deploy.preflight.refusal) is put in
    ``refused`` and gets no plan; the other boards are planned as usual.

    Raises:
        FleetError: a missing/corrupt artifact or data set (before anything is deployed; a data
            set's error names FLEET_DATA and ``fleet datasets fetch``), a manifest without the
            model, or a failed wheelhouse build (other than a missing wheel).
    """
    manifest = art.load_manifest(artifacts_dir)
    selected = {b.name: art.select(b, manifest, artifacts_dir, models) for b in boards}
    art.verify([a for arts in selected.values() for a in arts])
    notes: list[str] = []
    bundles = [dataset_bundle(spec, data_root, bundle_cache) for spec in dataset_specs(datasets)]
    if not bundles:
        notes.append("no data sets deployed (--datasets none): suites that read data/<name>/ will fail")
    if gather is not None:
        boards = gather(boards)
    houses: dict[tuple, Wheelhouse] = {}
    tars: dict[tuple, dict] = {}
    refusals: dict[tuple, preflight.Refusal] = {}

    def house_of(b):  # the board's platform and Python (host var fleet_python_version or gathered, else 3.11)
        return (b.wheel_platform, b.python_version or PYTHON_VERSION)

    for b in boards:
        target = house_of(b)
        if target in houses or target in refusals:
            continue
        no = preflight.refusal(project, *target)  # requires-python: refused before any pip work
        if no is None:
            try:
                wh = houses[target] = ensure_wheelhouse(project, wheel_cache, *target)
            except NoWheel as e:
                no = preflight.refusal(project, *target, no_wheel=e)
                if no is None:
                    raise
        if no is not None:
            refusals[target] = no
            continue
        tar = pack(folder_members(wh.path), bundle_cache, f"wheelhouse-{wh.path.name}", wh.key[:16])
        tars[target] = {**tar.to_vars("wheelhouse"), "name": "wheelhouse"}
    refused = {b.name: refusals[house_of(b)] for b in boards if house_of(b) in refusals}
    hosts = {}
    model_tars: dict[tuple, dict] = {}
    for b in boards:
        if b.name in refused:
            continue
        wh = houses[house_of(b)]
        arts = selected[b.name]
        plan = HostPlan(host=b.name, wheelhouse=tars[house_of(b)], fleet_wheel=wh.fleet_wheel, wheelhouse_key=wh.key[:16],
                        family=plugin_family(b))
        for model in dict.fromkeys(a.model for a in arts):
            sel = tuple(str(a.src) for a in arts if a.model == model)
            if (model, sel) not in model_tars:
                t = model_bundle(arts, model, manifest.get("schema", 1), bundle_cache)
                files = [a.name for a in arts if a.model == model]
                model_tars[(model, sel)] = {**t.to_vars(f"models/{model}"), "model": model, "files": files, "verify": True}
            plan.models.append(model_tars[(model, sel)])
        plan.datasets = list(bundles)
        hosts[b.name] = plan
    return Plan(hosts=hosts, wheelhouses=list(houses.values()), notes=notes, refused=refused, boards=list(boards))
