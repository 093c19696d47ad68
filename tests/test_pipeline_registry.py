"""The pipeline registry finds every pipeline module of device_agent.pipelines: a new pipeline is
one new file, and a name declared twice is refused."""

import sys

import pytest

import device_agent.pipelines as pipelines
from device_agent.pipelines.base import Pipeline

PIPELINE_FILE = '''
from device_agent.pipelines.base import Option, Pipeline


class Echo(Pipeline):
    name = "{name}"
    default_model = "echo"
    OPTIONS = (Option("gain", float, 1.0, "scale"),)

    def load(self, model_dir, backends, options):
        return {{}}

    def run(self, input_path, options):
        return {{"echo": str(input_path)}}

    def unload(self):
        pass
'''


def test_the_built_in_pipelines_are_found():
    assert {"asr.whisper_hybrid", "rag.hybrid", "vc.pitch_shift", "model.bench"} <= set(pipelines.PIPELINES)
    for name, cls in pipelines.PIPELINES.items():
        assert issubclass(cls, Pipeline) and cls.name == name


def _with_module(tmp_path, monkeypatch, mod, text):
    (tmp_path / f"{mod}.py").write_text(text)
    monkeypatch.setattr(pipelines, "__path__", [*pipelines.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"device_agent.pipelines.{mod}", raising=False)


def test_a_new_file_is_a_new_pipeline(tmp_path, monkeypatch):
    _with_module(tmp_path, monkeypatch, "zz_echo", PIPELINE_FILE.format(name="lab.echo"))
    found = pipelines._discover()
    assert found["lab.echo"].__name__ == "Echo"
    assert set(found) - {"lab.echo"} == set(pipelines.PIPELINES)  # imported bases are not redeclared
    sys.modules.pop("device_agent.pipelines.zz_echo", None)


def test_a_name_declared_twice_is_refused(tmp_path, monkeypatch):
    _with_module(tmp_path, monkeypatch, "zz_dup", PIPELINE_FILE.format(name="rag.hybrid"))
    with pytest.raises(RuntimeError, match="'rag.hybrid' declared twice"):
        pipelines._discover()
    sys.modules.pop("device_agent.pipelines.zz_dup", None)
