"""fleet.datasets: the catalog against the real data root, `fleet datasets list|verify|fetch`, and
fetches over a real loopback HTTP server — from a mirror of the data root (the shared copies)
and from origins (a SMART archive through the converter) — where any wrong byte leaves the data
root exactly as it was."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleet import cli
from fleet.datasets import catalog as cat
from fleet.datasets.catalog import get_dataset, load_catalog
from fleet.datasets.convert import smart_records
from fleet.datasets.fetch import fetch
from fleet.datasets.local import require, verify
from fleet.errors import FleetError
from fleet.paths import data_root
from fleet.runner.suite import load_suite

REPO = Path(__file__).resolve().parents[1]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of a real HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def tree(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) -> sha256: what a failed fetch must not change."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} | {
            str(p.relative_to(root)) + "/": "" for p in root.rglob("*") if p.is_dir()}


def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


# -- the catalog -------------------------------------------------------------------------------

def test_every_catalog_data_set_verifies_in_the_data_root():
    """The recorded sha256 and sizes are those of the real data (../shared/data here and in CI)."""
    for name in load_catalog():
        v = verify(name)
        assert v.ok, v.summary()
        assert v.hashed and v.extra == [], (name, v.extra)


def test_packaged_files_are_the_catalogs_bytes():
    for ds in load_catalog().values():
        for e in ds.files:
            if e.packaged:
                data = ds.packaged_file(e).read_bytes()
                assert (len(data), hashlib.sha256(data).hexdigest()) == (e.bytes, e.sha256), (ds.name, e.path)
            else:
                assert e.urls or (ds.convert and ds.sources), (ds.name, e.path)


def test_speech_urls_and_sha256_follow_the_per_clip_provenance():
    """Every clip's URL is the raw file at the commit its manifest row was copied from."""
    ds = get_dataset("speech")
    rows = [json.loads(x) for x in (ds.packaged_file(next(e for e in ds.files if e.path == "manifest.jsonl"))
                                    .read_text().splitlines()) if x.strip()]
    files = {e.path: e for e in ds.files}
    assert {r["audio"] for r in rows} | {"manifest.jsonl", "README.md"} == set(files)
    for r in rows:
        e = files[r["audio"]]
        assert e.sha256 == r["sha256"]
        assert e.urls == (f"https://raw.githubusercontent.com/{r['source_repo']}/{r['source_commit']}/{r['source_path']}",)
    assert set(ds.selections["smoke"]) <= set(files)


def test_catalog_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "demo.yml"
    bad.write_text("name: demo\npath: demo\nfiles:\n  - {path: a.txt, sha256: abc, bytes: 3}\n")
    with pytest.raises(FleetError, match=r"demo.yml: a.txt: sha256 'abc' is not 64"):
        cat.parse_dataset(bad)
    bad.write_text(f"name: demo\npath: demo\nfiles:\n  - {{path: a.txt, sha256: {'a' * 64}, bytes: 3}}\n")
    with pytest.raises(FleetError, match="no way to obtain a.txt"):
        cat.parse_dataset(bad)
    bad.write_text(f"name: demo\npath: ../up\nfiles:\n  - {{path: a.txt, sha256: {'a' * 64}, bytes: 3, urls: [http://x/a]}}\n")
    with pytest.raises(FleetError, match="relative to the data root"):
        cat.parse_dataset(bad)
    with pytest.raises(FleetError, match="did you mean 'speech'"):
        get_dataset("speach")


# -- verify and require ----------------------------------------------------------------------

def _copy(name: str, root: Path) -> Path:
    ds = get_dataset(name)
    dest = root / ds.path
    shutil.copytree(data_root() / ds.path, dest)
    return dest


def test_verify_finds_missing_truncated_and_changed_files(tmp_path, capsys):
    speech = _copy("speech", tmp_path)
    (speech / "jfk.flac").unlink()
    (speech / "LJ001-0001.flac").write_bytes((speech / "LJ001-0001.flac").read_bytes()[:-10])
    b = bytearray((speech / "LJ002-0020.wav").read_bytes())
    b[-1] ^= 0xFF  # same size, one bit pattern changed: only sha256 sees it
    (speech / "LJ002-0020.wav").write_bytes(bytes(b))
    (speech / "notes.txt").write_text("mine")
    v = verify("speech", tmp_path)
    status = {c.path: c.status for c in v.problems}
    assert status == {"jfk.flac": "missing", "LJ001-0001.flac": "size", "LJ002-0020.wav": "sha256"}
    assert v.extra == ["notes.txt"] and not v.ok
    assert verify("speech", tmp_path, hashed=False).problems[-1].path != "LJ002-0020.wav"  # size check only

    assert run_cli("datasets", "verify", "speech", "--data-root", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "3 of 22 files wrong" in out and "jfk.flac missing" in out and "fleet datasets fetch speech" in out
    assert run_cli("datasets", "verify", "speech", "--data-root", str(tmp_path), "--json") == 1
    got = json.loads(capsys.readouterr().out)["datasets"][0]
    assert got["ok"] is False and got["extra"] == ["notes.txt"]


def test_missing_data_set_is_a_clear_error_naming_fleet_data_and_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_DATA", str(tmp_path / "empty"))
    with pytest.raises(FleetError) as e:
        require("speech")
    assert str(tmp_path / "empty") in e.value.message and "missing" in e.value.message
    assert "fleet datasets fetch speech" in e.value.fix and "FLEET_DATA" in e.value.fix
    suite = load_suite(REPO / "suites" / "whisper_hybrid")
    with pytest.raises(FleetError, match="fleet datasets fetch speech"):
        suite.dataset_items()


def test_list_shows_the_data_root_and_what_it_holds(tmp_path, capsys):
    _copy("cisi", tmp_path)
    assert run_cli("datasets", "list", "--data-root", str(tmp_path), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    state = {d["name"]: d["present"] for d in out["datasets"]}
    assert out["data_root"] == str(tmp_path.resolve()) and out["data_root_from"] == "--data-root"
    assert state == {"cisi": True, "cranfield": False, "speech": False, "wikitext-2-v1": False}


# -- fetch -------------------------------------------------------------------------------------

def test_fetch_from_a_loopback_mirror_of_the_shared_copies(tmp_path, serve, capsys):
    """Every data set of the catalog fetched over real HTTP into an empty data root, verified."""
    url = serve(data_root())
    root = tmp_path / "data"
    assert run_cli("datasets", "fetch", "--data-root", str(root), "--mirror", url, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] == [] and {d["status"] for d in out["datasets"]} == {"fetched"}
    for name in load_catalog():
        assert verify(name, root).ok
    assert not list(root.glob(".fetch-*"))
    # a second fetch only verifies
    assert run_cli("datasets", "fetch", "speech", "--data-root", str(root), "--mirror", url) == 0
    assert "present (sha256 verified)" in capsys.readouterr().out


def test_fetch_replaces_only_the_wrong_files(tmp_path, serve):
    url = serve(data_root())
    speech = _copy("speech", tmp_path)
    (speech / "jfk.flac").write_bytes(b"not audio")
    keep = (speech / "LJ002-0020.wav").stat().st_mtime_ns
    r = fetch("speech", tmp_path, mirror=url)
    assert r.status == "fetched" and r.fetched == ["jfk.flac"]
    assert verify("speech", tmp_path).ok and (speech / "LJ002-0020.wav").stat().st_mtime_ns == keep


def test_a_wrong_byte_from_the_mirror_leaves_nothing_behind(tmp_path, serve):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root() / "speech", mirror / "speech")
    b = bytearray((mirror / "speech" / "jfk.flac").read_bytes())
    b[1000] ^= 0x01
    (mirror / "speech" / "jfk.flac").write_bytes(bytes(b))
    url = serve(mirror)

    empty = tmp_path / "fresh" / "data"          # neither it nor its parent exist yet
    with pytest.raises(FleetError) as e:
        fetch("speech", empty, mirror=url)
    assert e.value.exit_code == 3 and "jfk.flac" in e.value.message and "sha256" in e.value.message
    assert not (tmp_path / "fresh").exists()       # no folder, no temporary download, nothing

    partial = tmp_path / "partial"
    _copy("speech", partial)
    (partial / "speech" / "jfk.flac").unlink()
    (partial / "speech" / "LJ001-0001.flac").unlink()
    before = tree(partial)
    with pytest.raises(FleetError, match="jfk.flac"):
        fetch("speech", partial, mirror=url)
    assert tree(partial) == before                 # LJ001-0001.flac was fine, but nothing moved in


def test_fetch_of_an_unreachable_origin_names_the_url_and_the_fix(tmp_path, serve):
    url = serve(tmp_path / "nothing-here")
    with pytest.raises(FleetError) as e:
        fetch("cisi", tmp_path / "data", mirror=url)
    assert "404" in e.value.message and url in e.value.message and "--mirror" in e.value.fix
    assert not (tmp_path / "data").exists()


# -- from the origin: public URLs, fallbacks, a SMART archive through the converter ------------

CRAN_ALL = """.I 1
.T
experimental   investigation of a
wing .
.A
brenckman,m.
.B
j. ae. scs. 25, 1958, 324.
.W
experimental investigation of a
wing .
  an experimental study of a wing in a propeller slipstream .
.I 2
.T
.A
.B
.W
.I 3
.T
simple shear flow .
.W
simple shear flow .  the first part
.A
stray marker kept as text
.W
second part .
"""
CRAN_QRY = """.I 001
.W
what similarity laws must be obeyed
when constructing aeroelastic models .
.I 004
.W
what problems of heat conduction have been solved .
"""
CRAN_QREL = "1 3 2 \n1 1 -1 \n2 3 4 \n2 1 1 \n"


def _tar(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _entry(path: str, data: bytes, urls: list[str] | None = None) -> dict:
    e = {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return {**e, "urls": urls} if urls is not None else e


EXPECTED = {
    "corpus.jsonl": (
        '{"id": "1", "title": "experimental investigation of a wing .", "text": "experimental investigation '
        'of a wing . an experimental study of a wing in a propeller slipstream ."}\n'
        '{"id": "2", "title": "", "text": ""}\n'
        '{"id": "3", "title": "simple shear flow .", "text": "simple shear flow . the first part stray marker '
        'kept as text second part ."}\n'),
    "queries.jsonl": ('{"id": "1", "text": "what similarity laws must be obeyed when constructing aeroelastic models ."}\n'
                      '{"id": "2", "text": "what problems of heat conduction have been solved ."}\n'),
    "qrels.tsv": "1\t3\t3\n2\t3\t1\n2\t1\t4\n",
    "qrels_original.tsv": "1\t3\t2\n1\t1\t-1\n2\t3\t4\n2\t1\t1\n",
}


def test_fetch_from_origins_with_fallback_urls_and_the_smart_converter(tmp_path, serve, monkeypatch):
    """A catalog like the real one, its origins on a loopback server: a file whose first URL is
    gone (404) comes from the second; a Cranfield-format archive is downloaded, checked and
    converted; a packaged README is copied from the catalog."""
    origin = tmp_path / "origin"
    (origin / "repo").mkdir(parents=True)
    arc = _tar({"cran.all.1400": CRAN_ALL, "cran.qry": CRAN_QRY, "cranqrel": CRAN_QREL})
    (origin / "repo" / "cran.tar.gz").write_bytes(arc)
    clip = (data_root() / "speech" / "LJ002-0020.wav").read_bytes()
    (origin / "repo" / "clip.wav").write_bytes(clip)
    url = serve(origin)

    catalog = tmp_path / "catalog"
    (catalog / "mini").mkdir(parents=True)
    (catalog / "mini" / "README.md").write_text("ours\n")
    files = [_entry(k, v.encode()) for k, v in EXPECTED.items()]
    files += [_entry("clip.wav", clip, [f"{url}/gone/clip.wav", f"{url}/repo/clip.wav"]),
              {**_entry("README.md", b"ours\n"), "packaged": True}]
    doc = {"name": "mini", "path": "rag/mini", "deploy": False, "convert": "cranfield",
           "sources": [_entry("cran.tar.gz", arc, [f"{url}/repo/cran.tar.gz"])], "files": files}
    (catalog / "mini.yml").write_text(json.dumps(doc))  # JSON is YAML
    monkeypatch.setattr(cat, "CATALOG_DIR", catalog)
    cat.load_catalog.cache_clear()
    try:
        root = tmp_path / "data"
        r = fetch("mini", root)
        assert r.status == "fetched" and sorted(r.fetched) == sorted([*EXPECTED, "README.md", "clip.wav"])
        folder = root / "rag" / "mini"
        for name, text in EXPECTED.items():
            assert (folder / name).read_text() == text, name
        assert verify("mini", root).ok and verify("mini", root).extra == []
        assert sorted(p.name for p in root.iterdir()) == ["rag"]  # no .sources or temporary folder left

        # the archive changed upstream: its sha256 no longer matches, nothing is converted or written
        (origin / "repo" / "cran.tar.gz").write_bytes(_tar({"cran.all.1400": "", "cran.qry": "", "cranqrel": ""}))
        (folder / "qrels.tsv").unlink()
        before = tree(root)
        with pytest.raises(FleetError, match="cran.tar.gz"):
            fetch("mini", root)
        assert tree(root) == before

        # the archive is right but the converter's output is not what the catalog records
        (origin / "repo" / "cran.tar.gz").write_bytes(arc)
        doc["files"][2]["sha256"] = "f" * 64       # qrels.tsv
        (catalog / "mini.yml").write_text(json.dumps(doc))
        cat.load_catalog.cache_clear()
        with pytest.raises(FleetError, match="qrels.tsv made here differ from the catalog"):
            fetch("mini", root)
        assert tree(root) == before
    finally:
        cat.load_catalog.cache_clear()


def test_smart_records_keep_stray_markers_inside_sticky_text():
    recs = smart_records(CRAN_ALL, sticky_text=True)
    assert [i for i, _ in recs] == ["1", "2", "3"]
    assert recs[2][1]["W"] == ["simple shear flow .  the first part", "stray marker kept as text", "second part ."]
    plain = smart_records(CRAN_ALL)
    assert plain[2][1]["W"] == ["simple shear flow .  the first part", "second part ."]
    assert plain[2][1]["A"] == ["stray marker kept as text"]
    with pytest.raises(FleetError, match="before the first .I"):
        smart_records("stray text\n.I 1\n")
