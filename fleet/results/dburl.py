"""Where the results store lives: a SQLite file path, or a SQLAlchemy database URL.

``results/fleet.db`` or ``sqlite:///results/fleet.db``: a SQLite file (the default, one controller).
``postgresql+psycopg://fleet@db.lab/fleet``: a shared PostgreSQL server, for a lab where several
controllers write into one store (URL syntax: SQLAlchemy 2.0 "Database URLs",
https://docs.sqlalchemy.org/en/20/core/engines.html#database-urls). A bare ``postgresql://`` URL
means the psycopg 3 driver (SQLAlchemy alone would pick psycopg2, which fleet does not install).

A password belongs in libpq's ``PGPASSWORD`` or ``~/.pgpass`` (psycopg reads both); one written in
the URL works too, but fleet never prints, records or passes it on the command line: every URL it
shows goes through :func:`safe_url` / :func:`redact`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import FleetError

#: ``scheme://user:password@`` in free text (argv, driver messages): the password part is replaced.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):([^\s@]*)@")
#: ``password=...`` in a URL query string or a libpq conninfo string.
_QUERY_PASSWORD = re.compile(r"((?:^|[?&\s])password=)([^&\s]*)", re.IGNORECASE)

DRIVER_FIX = "install the PostgreSQL driver: pip install 'psycopg[binary]' (it is in fleet's `controller` extra)"


@dataclass(frozen=True)
class DbTarget:
    """A parsed store location.

    Attributes:
        url: the SQLAlchemy URL (``sqlalchemy.engine.URL``), password included: never print it.
        path: the SQLite file, or None for a server database.
        display: what messages show: the path, or the URL with its password as ``***``.
    """

    url: object
    path: Path | None
    display: str

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql`` (the SQLAlchemy dialect name)."""
        return self.url.get_backend_name()

    def location(self) -> str | Path:
        """What opens this store again (a lease store, a child process): the SQLite path, or the
        URL with its password -- for the environment or a constructor, never argv or a log."""
        return self.path if self.path is not None else self.secret_url()

    def secret_url(self) -> str:
        """The URL with its password, for a child process's environment (never argv or a log)."""
        return self.url.render_as_string(hide_password=False)


def is_url(target: str | Path) -> bool:
    """True when ``target`` is a URL (``scheme://...``) rather than a file path."""
    return isinstance(target, str) and "://" in target


def redact(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` and ``password=...`` password replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m.group(1)}***", text)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with database passwords replaced by ``***`` (for the runs table, logs)."""
    return [redact(str(a)) for a in argv]


def safe_url(url) -> str:
    """A SQLAlchemy URL as text with its password (also a ``password=`` query item) as ``***``."""
    return redact(url.render_as_string(hide_password=True))


def parse_target(target: str | Path) -> DbTarget:
    """Parse a store location: a file path (SQLite) or a SQLAlchemy URL.

    Raises:
        FleetError: a malformed URL, an unsupported database, or a URL that names no database.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not is_url(target):
        path = Path(target)
        return DbTarget(make_url("sqlite:///" + str(path)), path, str(path))
    shown = redact(str(target))
    try:
        url = make_url(str(target))
    except (ArgumentError, ValueError) as e:  # ValueError: a port that is not a number
        raise FleetError(f"malformed database URL {shown}: {redact(str(e))}",
                         "write it as postgresql+psycopg://USER@HOST[:PORT]/DB or sqlite:///PATH, "
                         "or give a SQLite file path") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise FleetError(f"database URL {safe_url(url)} names no SQLite file",
                             "write it as sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return DbTarget(url, Path(url.database), str(Path(url.database)))
    if backend != "postgresql":
        raise FleetError(f"database URL {safe_url(url)}: fleet's results store runs on SQLite or PostgreSQL, "
                         f"not {backend}", "use postgresql+psycopg://USER@HOST/DB, or a SQLite file path")
    if "+" not in url.drivername:
        url = url.set(drivername="postgresql+psycopg")
    if not url.database:
        raise FleetError(f"database URL {safe_url(url)} names no database",
                         "add the database name: postgresql+psycopg://USER@HOST/DBNAME")
    return DbTarget(url, None, safe_url(url))
