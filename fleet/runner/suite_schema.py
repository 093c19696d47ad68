"""suite.yml's validator: pydantic models of every key, and the JSON Schema generated from them.

``validate(f, data)`` checks a parsed suite.yml and raises one FleetError listing every problem
(key path, what is wrong, the fix, "did you mean" for a misspelt key or name) before anything
else happens: no lease, no results store, no run folder. The same models give
docs/suite.schema.json for editors (``make suite-schema`` or
``python -m fleet.runner.suite_schema > docs/suite.schema.json`` regenerates it; a test checks
the committed file is current).

Pipeline options are not typed here: each device_agent pipeline declares its own
(``Pipeline.OPTIONS``: name, type, choices, help), so both the check and the schema's
per-pipeline ``options`` come from those declarations.

JSON Schema draft 2020-12 (https://json-schema.org/draft/2020-12), what pydantic v2 emits.
"""

from __future__ import annotations

import difflib
import json
import sys
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator
from pydantic_core import PydanticCustomError

from fleet.errors import FleetError
from fleet.families import registry
from fleet.inventory import accelerators, board_classes
from fleet.measure.protocol import REMOVED_KEYS as REMOVED_MEASUREMENT_KEYS
from fleet.remote.session import RECONNECT_TIMEOUT_S

SCHEMA_FILE = "docs/suite.schema.json"  # relative to the repository root
#: the generic pipeline whose model is any imported (or built) model, and which needs no data set
BENCH_PIPELINE = "model.bench"
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def did_you_mean(word: str, choices) -> str:
    """``"did you mean 'x'? "`` for the closest of ``choices`` (difflib ratio >= 0.6), else ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"did you mean '{close[0]}'? " if close else ""


class _Strict(BaseModel):
    # strict: YAML's 'yes' or "5" is not silently a bool or a number; extra keys are refused
    model_config = ConfigDict(extra="forbid", strict=True)


def _one_of(what: str, choices, listing: str):
    """A string that must be one of ``choices`` (an ``enum`` in the schema); the error names the
    closest choice and where the list comes from (``listing``)."""
    names = sorted(choices)

    def check(v: str) -> str:
        if v not in names:
            raise PydanticCustomError("unknown_name", "unknown {what} '{value}'",
                                      {"what": what, "value": v,
                                       "fix": f"{did_you_mean(v, names)}known {what}s: {', '.join(names)} ({listing})"})
        return v

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"enum": names})]


def _limits(name: str, keys: dict, doc: str) -> type[BaseModel]:
    """A mapping of optional limits (one field per key of ``keys``: (metric, "max"|"min", unit))."""
    fields = {}
    for k, (metric, sense, unit) in keys.items():
        example = 0.05 if unit in ("ratio", "") else 800
        fields[k] = (Optional[float], Field(None, description=(
            f"{metric} {'at most' if sense == 'max' else 'at least'} this"
            f"{f' ({unit})' if unit else ''}; null = reported, not enforced"), examples=[example]))
    return create_model(name, __base__=_Strict, __doc__=doc, **fields)


def _per_class(name: str, limits: type[BaseModel], classes, doc: str) -> type[BaseModel]:
    """One optional ``limits`` mapping per board class."""
    fields = {c: (Optional[limits], None) for c in sorted(classes)}
    return create_model(name, __base__=_Strict, __doc__=doc, **fields)


def _options_schema() -> list[dict]:
    """``if pipeline is P then options has P's declared options only``, one clause per pipeline;
    the model is a built one (enum) except for model.bench, where it is any model name (imported)."""
    from device_agent.pipelines import PIPELINES
    from fleet.models.build import KNOWN_MODELS
    from fleet.models.importer import NAME_RE

    out = []
    for name, cls in sorted(PIPELINES.items()):
        props = {}
        for o in cls.OPTIONS:
            p: dict[str, Any] = {"description": o.help}
            t = _JSON_TYPES.get(o.type, "string")
            p["type"] = [t, "null"]
            if o.choices is not None:
                p["enum"] = [*o.choices, None]
            if o.default is None or isinstance(o.default, (int, float, str, bool)):
                p["default"] = o.default
            props[o.name] = p
        model = ({"type": "string", "pattern": NAME_RE.pattern} if name == BENCH_PIPELINE
                 else {"enum": sorted(KNOWN_MODELS)})
        then: dict[str, Any] = {"properties": {"options": {"type": ["object", "null"], "properties": props,
                                                           "additionalProperties": False}, "model": model}}
        if name != BENCH_PIPELINE:
            then["required"] = ["dataset"]
        out.append({"if": {"properties": {"pipeline": {"const": name}}, "required": ["pipeline"]}, "then": then})
    return out


def suite_model() -> type[BaseModel]:
    """The pydantic model of suite.yml (built once per board-family registry: the names come from
    the pipelines, the board families, the model registry and the data-set catalog)."""
    return _suite_model(registry())


@lru_cache(maxsize=2)
def _suite_model(_families) -> type[BaseModel]:
    from device_agent.pipelines import PIPELINES
    from fleet.datasets.catalog import load_catalog
    from fleet.models.build import KNOWN_MODELS
    from fleet.runner.suite import ARM_PARITY_BOUND_KEYS, PARITY_BOUND_KEYS, THRESHOLD_KEYS, threshold_classes

    Accelerator = _one_of("accelerator", accelerators(), "fleet.families")
    BoardClass = _one_of("board", board_classes(), "fleet.families")
    THRESHOLD_CLASSES = threshold_classes()
    PipelineName = _one_of("pipeline", PIPELINES, "device_agent.pipelines")
    known_models = sorted(KNOWN_MODELS)
    from fleet.models.importer import NAME_RE

    DatasetName = _one_of("dataset", load_catalog(), "fleet datasets list")

    class Requires(_Strict):
        """Which boards the suite runs on (default: all)."""

        accelerators: Optional[list[Accelerator]] = Field(None, description="accelerators admitted (default: all)")
        boards: Optional[list[BoardClass]] = Field(None, description="board classes admitted (default: all)")

    class Cooldown(_Strict):
        """Wait before measuring until the zone is below ``below_c``."""

        below_c: float = Field(description="wait until the zone is below this (°C)")
        zone: Optional[str] = Field(None, min_length=1, description="telemetry channel (e.g. cpu-thermal); null = the hottest")
        timeout_s: float = Field(300.0, gt=0, description="give up after this (s); the measurement is then INVALID")
        poll_s: float = Field(2.0, gt=0, description="polling interval (s)")

    class Measurement(_Strict):
        """The latency protocol (fleet.measure.protocol, after MLPerf LoadGen SingleStream)."""

        min_queries: int = Field(1, ge=1, description="minimum measured queries")
        min_duration_s: float = Field(0.0, ge=0, description="minimum measured duration (s)")
        max_duration_s: Optional[float] = Field(None, gt=0, description="stop issuing queries after this (s)")
        start_temp_max_c: Optional[float] = Field(None, description="INVALID when the start temperature is above this (°C)")
        sample_hz: float = Field(10.0, gt=0, le=100, description="telemetry sampling rate (Hz)")
        cooldown: Optional[Cooldown] = None

    Thresholds = _per_class("Thresholds", _limits("Limits", THRESHOLD_KEYS, "Limits of one board class."),
                            THRESHOLD_CLASSES, "Limits per board class (emulated = any emulated board).")
    ParityBounds = _per_class("ParityBounds", _limits("ParityLimits", PARITY_BOUND_KEYS, "Parity bounds of one board class."),
                        THRESHOLD_CLASSES, "Parity bounds per board class.")

    class Parity(_Strict):
        """The NPU-stage parity test: CPU fp32 reference vs the board's NPU stage."""

        inputs: int = Field(6, ge=1, description="evaluation items compared")
        bounds: Optional[ParityBounds] = None

    class SmokeMeasurement(_Strict):
        """Measurement keys laid over the suite's for the smoke selection (smaller minimums)."""

        min_queries: Optional[int] = Field(None, ge=1, description="minimum measured queries")
        min_duration_s: Optional[float] = Field(None, ge=0, description="minimum measured duration (s)")
        max_duration_s: Optional[float] = Field(None, gt=0, description="stop issuing queries after this (s)")
        start_temp_max_c: Optional[float] = Field(None, description="INVALID when the start temperature is above this (°C)")
        sample_hz: Optional[float] = Field(None, gt=0, le=100, description="telemetry sampling rate (Hz)")

    class Smoke(_Strict):
        """The smoke selection: a few items, run on boards whose CPU is emulated (inventory
        cpu_emulated: qemu-user) and by `fleet test --smoke` on any board (fleet.runner.emulation)."""

        items: Optional[list[Annotated[str, Field(min_length=1)]]] = Field(
            None, min_length=1, description="data set item ids (manifest.jsonl id), or collection names for a "
                                            "suite whose items are collections; null = the suite's own")
        warmup_requests: Optional[int] = Field(None, ge=0, description="warm-up requests of the smoke run")
        options: Optional[dict[str, Any]] = Field(None, description="pipeline options laid over the suite's")
        measurement: Optional[SmokeMeasurement] = None
        parity_inputs: Optional[int] = Field(None, ge=1, description="NPU-stage parity inputs in a smoke run")

    ArmParityBounds = _per_class("ArmParityBounds", _limits("ArmParityLimits", ARM_PARITY_BOUND_KEYS,
                                                            "ARM-kernel parity bounds of one board class."),
                                 THRESHOLD_CLASSES, "ARM-kernel parity bounds per board class.")

    class ArmParity(_Strict):
        """ARM-kernel parity: an aarch64 board's outputs on the smoke items against the same
        artifacts run by the controller's x86_64 ONNX Runtime (fleet.runner.emulation)."""

        bounds: Optional[ArmParityBounds] = None

    class Suite(_Strict):
        """A fleet test suite: suite.yml beside test_*.py (fleet/runner/suite.py has the keys' meaning)."""

        model_config = ConfigDict(title="fleet suite.yml", json_schema_extra={"allOf": _options_schema()})

        name: Optional[str] = Field(None, min_length=1, description="suite name (default: the folder name)")
        description: Optional[str] = None
        pipeline: PipelineName = Field(description="a device_agent pipeline")
        model: str = Field(description="the artifact set the pipeline loads: a built model (fleet models build), "
                                       f"or for {BENCH_PIPELINE} any model name, e.g. one given to fleet models import")
        dataset: Optional[DatasetName] = Field(None, description="a catalog data set, read from the data root "
                                               f"($FLEET_DATA); required except for {BENCH_PIPELINE}")
        requires: Optional[Requires] = None
        options: Optional[dict[str, Any]] = Field(None, description="pipeline options sent with every request "
                                                  "(the pipeline's declared options: fleet-agent info)")
        request_timeout_s: float = Field(120.0, gt=0, description="per-request timeout (s)")
        reconnect_timeout_s: float = Field(RECONNECT_TIMEOUT_S, ge=0, description=(
            "how long (s) to retry SSH, with backoff, to a board that does not answer or whose link dropped "
            "(rebooting, sshd restarted); 0 = never retry; the inventory host var fleet_reconnect_timeout_s "
            "wins for its board"))
        warmup_requests: int = Field(1, ge=0, description="requests run first and left out of latency figures")
        measurement: Optional[Measurement] = None
        thresholds: Optional[Thresholds] = None
        parity: Optional[Parity] = None
        smoke: Optional[Smoke] = None
        arm_parity: Optional[ArmParity] = None

        @field_validator("model")
        @classmethod
        def _model(cls, v: str, info: ValidationInfo) -> str:
            if info.data.get("pipeline") == BENCH_PIPELINE:
                if not NAME_RE.match(v):
                    raise PydanticCustomError("unknown_name", "'{value}' is not a model name",
                                              {"value": v, "fix": "use lower-case letters, digits, '.', '_' or '-' "
                                                                  "(the --name given to fleet models import)"})
                return v
            if v not in known_models:
                raise PydanticCustomError("unknown_name", "unknown {what} '{value}'",
                                          {"what": "model", "value": v,
                                           "fix": f"{did_you_mean(v, known_models)}known models: "
                                                  f"{', '.join(known_models)} (the model recipes: fleet models build "
                                                  f"--help; pipeline {BENCH_PIPELINE} takes imported models)"})
            return v

    return Suite


def json_schema() -> dict:
    """The JSON Schema of suite.yml (draft 2020-12), as committed in docs/suite.schema.json."""
    schema = suite_model().model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# ----------------------------------------------------------------------------- error messages
def _unwrap(ann) -> list:
    """``ann`` and every type nested in it (Optional[...], list[...], Annotated[...])."""
    out = [ann]
    for a in typing.get_args(ann):
        out += _unwrap(a)
    return out


def _field_at(loc: tuple):
    """(parent model, FieldInfo or None) of ``loc`` in the suite model (list indices skipped)."""
    model, info = suite_model(), None
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model is not None else None
        if info is None:
            return model, None
        nested = [t for t in _unwrap(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        model = nested[0] if nested else None
    return model, info


def _kind(info, item: bool = False) -> str:
    """What the field at hand takes (``item``: an item of that list field), in words: "a number
    or null", "a list", "a mapping" ..."""
    ann = info.annotation if info is not None else None
    nullable = False
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = typing.get_args(ann)
        nullable = type(None) in args
        ann = next((a for a in args if a is not type(None)), None)
    if item and typing.get_origin(ann) is list:
        ann, nullable = typing.get_args(ann)[0], False
    if typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    ann = typing.get_origin(ann) or ann
    kind = {int: "a whole number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(ann)
    if kind is None:
        kind = "a mapping" if isinstance(ann, type) and issubclass(ann, BaseModel) else "another type"
    return kind + (" or null" if nullable else "")


def _where(loc: tuple) -> str:
    """A key path as written in messages: ``requires.accelerators[0]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _issue(err: dict) -> tuple[str, str]:
    """(message, fix) for one pydantic error."""
    loc = tuple(err["loc"])
    where = _where(loc)
    t, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if t == "extra_forbidden":
        parent, _ = _field_at(loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        of = f" of {_where(loc[:-1])}" if len(loc) > 1 else ""
        if loc[:-1] == ("measurement",) and loc[-1] in REMOVED_MEASUREMENT_KEYS:  # say why it went
            return f"'{where}' is no longer a key", REMOVED_MEASUREMENT_KEYS[loc[-1]]
        return f"unknown key '{where}'", f"{did_you_mean(loc[-1], known)}known keys{of}: {', '.join(known)}"
    if t == "unknown_name":
        return f"{where}: {err['msg']}", ctx["fix"]
    if t == "missing":
        return f"missing key '{where}'", f"set {where}: in suite.yml (docs/suite.schema.json)"
    _, info = _field_at(loc)
    desc = f"{where}: {info.description}" if info is not None and info.description else f"see {where} in docs/suite.schema.json"
    example = f" (e.g. {loc[-1]}: {info.examples[0]})" if info is not None and info.examples else ""
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if t in bounds:
        limit = next(iter(ctx.values()))
        return f"{where} must be {bounds[t]} {limit:g}, got {got!r}", desc + example
    if t == "string_too_short":
        return f"{where} must not be empty", desc
    kind = _kind(info, item=isinstance(loc[-1], int))
    return f"{where} must be {kind}, got {got!r}", f"write {kind}{example}; {desc}"


def _option_issues(data: dict) -> list[tuple[str, str]]:
    """Problems of ``options:`` against the pipeline's declared options (none if the pipeline is unknown)."""
    from device_agent.pipelines import PIPELINES
    from device_agent.protocol import BadInput

    cls = PIPELINES.get(data.get("pipeline")) if isinstance(data.get("pipeline"), str) else None
    if cls is None:
        return []
    smoke = data.get("smoke") if isinstance(data.get("smoke"), dict) else {}
    declared = {o.name: o for o in cls.OPTIONS}
    out = []
    for where, opts in (("options", data.get("options")), ("smoke.options", smoke.get("options"))):
        if not isinstance(opts, dict):
            continue
        for k, v in opts.items():
            if k not in declared:
                out.append((f"unknown option '{where}.{k}' of pipeline {cls.name}",
                            f"{did_you_mean(k, declared)}options of {cls.name}: {', '.join(declared)}"))
                continue
            try:
                declared[k].coerce(v)
            except BadInput as e:
                hint = did_you_mean(v, declared[k].choices) if declared[k].choices else ""
                out.append((f"{where}.{k}: {e.message}", hint + (e.fix or declared[k].help)))
    return out


def validate(f: Path, data: dict) -> None:
    """Check a parsed suite.yml (``data``, read from ``f``) against the schema and the pipeline's options.

    Raises:
        FleetError: exit 2, naming ``f`` and every problem with its key path and fix.
    """
    issues: list[tuple[str, str]] = []
    try:
        suite_model().model_validate(data)
    except ValidationError as e:
        issues += [_issue(err) for err in e.errors(include_url=False)]
    issues += _option_issues(data)
    if isinstance(data.get("pipeline"), str) and data.get("pipeline") != BENCH_PIPELINE and "dataset" not in data:
        issues.append(("missing key 'dataset'", "set dataset: in suite.yml (docs/suite.schema.json); only "
                                                f"{BENCH_PIPELINE} runs without one"))
    if len(issues) == 1:
        raise FleetError(f"{f}: {issues[0][0]}", issues[0][1])
    if issues:
        lines = "".join(f"\n  - {m} ({fix})" for m, fix in issues)
        raise FleetError(f"{f}: {len(issues)} problems:{lines}",
                         "correct each key named above (docs/suite.schema.json describes every key)")


def main() -> int:
    """Print the JSON Schema (``python -m fleet.runner.suite_schema > docs/suite.schema.json``)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
