"""Wire format (device_agent.protocol): round trips, malformed lines, size limit, unknown op."""

import json

import pytest

from device_agent import protocol as p


def test_request_round_trip():
    line = p.encode_request(p.Request(id=7, op="run", args={"pipeline": "asr.whisper_hybrid",
                                                             "input": "data/x.wav", "options": {}}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    req = p.decode_request(line)
    assert req == p.Request(id=7, op="run", args={"pipeline": "asr.whisper_hybrid",
                                                   "input": "data/x.wav", "options": {}})
    assert p.decode_request(line.decode()) == req  # str lines too
    assert p.decode_request(b'{"id": 1, "op": "info"}').args == {}


def test_reply_round_trip_success_and_error():
    ok = p.Reply.success(3, {"text": "héllo"}, {"handle_ms": 1.5})
    d = p.decode_reply(p.encode_reply(ok))
    assert d == {"id": 3, "ok": True, "result": {"text": "héllo"}, "timings": {"handle_ms": 1.5}}
    assert p.Reply.from_dict(d) == ok

    err = p.Reply.failure(4, p.ModelError("sha256 mismatch", "redeploy"), {"handle_ms": 0.2})
    d = p.decode_reply(p.encode_reply(err))
    assert d["ok"] is False and d["error"] == {"type": "ModelError", "message": "sha256 mismatch",
                                               "fix": "redeploy"}
    e = p.error_from_dict(d["error"])
    assert isinstance(e, p.ModelError) and e.exit_code == p.EXIT_RUNTIME and e.fix == "redeploy"


@pytest.mark.parametrize("line, cls, words", [
    (b"not json\n", p.BadInput, "not valid JSON"),
    (b"[1, 2]\n", p.BadInput, "not an object"),
    (b'{"id": 1}\n', p.BadInput, "no 'op'"),
    (b'{"id": 1, "op": "info", "args": [1]}\n', p.BadInput, "args must be"),
    (b'{"id": true, "op": "info"}\n', p.BadInput, "id must be"),
    (b'{"id": 1, "op": "explode"}\n', p.UnknownOp, "unknown op"),
    (b"\xff\xfe\n", p.BadInput, "UTF-8"),
    (b"   \n", p.BadInput, "empty"),
])
def test_malformed_requests(line, cls, words):
    with pytest.raises(cls) as ei:
        p.decode_request(line)
    assert words in ei.value.message and ei.value.fix
    assert type(ei.value).__name__ == ei.value.type


def test_unknown_op_is_bad_input_exit_code():
    assert p.UnknownOp("x").exit_code == p.EXIT_BAD_INPUT == 2
    assert p.ModelError("x").exit_code == 3


def test_oversized_request_and_reply():
    big = json.dumps({"id": 1, "op": "info", "args": {"x": "a" * p.MAX_MESSAGE_BYTES}}).encode()
    with pytest.raises(p.Oversized):
        p.decode_request(big)
    with pytest.raises(p.Oversized):
        p.encode_reply(p.Reply.success(1, {"x": "a" * p.MAX_MESSAGE_BYTES}))
    with pytest.raises(p.Oversized):
        p.encode_request({"id": 1, "op": "info", "args": {"x": "a" * p.MAX_MESSAGE_BYTES}})
    # just under the limit passes
    pad = p.MAX_MESSAGE_BYTES - len(p.encode_request({"id": 1, "op": "info", "args": {"x": ""}}))
    assert p.decode_request(p.encode_request({"id": 1, "op": "info", "args": {"x": "a" * pad}})).op == "info"


def test_reply_with_nan_is_internal_error():
    with pytest.raises(p.Internal):
        p.encode_reply(p.Reply.success(1, {"x": float("nan")}))


def test_decode_reply_rejects_foreign_output():
    with pytest.raises(p.BadInput, match="no boolean 'ok'"):
        p.decode_reply('{"hello": 1}')
    with pytest.raises(p.BadInput):
        p.decode_reply("onnxruntime warning: blah")


def test_request_id_best_effort():
    assert p.request_id(b'{"id": 5, "op": "nope"}') == 5
    assert p.request_id(b"garbage") is None
