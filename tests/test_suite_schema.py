"""docs/suite.schema.json: generated from the validator (fleet.runner.suite_schema), committed for
editors; every shipped suite validates against it, and the corpus's bad suites do not."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from fleet.runner.suite import load_suite
from fleet.runner.suite_schema import SCHEMA_FILE, json_schema

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted(ROOT.glob("suites/*/suite.yml"))
BAD = ROOT / "tests" / "bad_input" / "suite"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((ROOT / SCHEMA_FILE).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_generated_one():
    assert json.loads((ROOT / SCHEMA_FILE).read_text()) == json_schema(), \
        "docs/suite.schema.json is stale: run `make suite-schema` and commit it"


def test_there_are_suites():
    assert len(SUITES) >= 3


@pytest.mark.parametrize("f", SUITES, ids=[f.parent.name for f in SUITES])
def test_every_suite_validates(f, validator):
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(f.read_text()))]
    assert errors == []
    assert load_suite(f.parent).name   # and the validator itself takes it
    assert f.read_text().startswith("# yaml-language-server: $schema=../../docs/suite.schema.json\n")


# the corpus files that are YAML mappings and break the schema itself (no_tests.yml is a valid
# suite.yml in a folder without tests; truncated.yml is not YAML)
SCHEMA_BAD = [p.name for p in sorted(BAD.glob("*.yml")) if p.name not in ("no_tests.yml", "truncated.yml")]


@pytest.mark.parametrize("name", SCHEMA_BAD)
def test_bad_suites_break_the_schema(name, validator):
    assert list(validator.iter_errors(yaml.safe_load((BAD / name).read_text())))


def test_options_schema_follows_the_pipeline(validator):
    """The per-pipeline options clause: an option of another pipeline is refused."""
    base = {"pipeline": "asr.whisper_hybrid", "model": "whisper-tiny.en", "dataset": "speech"}
    assert not list(validator.iter_errors({**base, "options": {"precision": "int8", "pad_to": 1500}}))
    assert list(validator.iter_errors({**base, "options": {"fusion": "rrf"}}))   # rag.hybrid's
    assert list(validator.iter_errors({**base, "options": {"precision": "int4"}}))
