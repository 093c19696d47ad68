"""A real PostgreSQL server for the tests of the results store over a URL.

``FLEET_TEST_PG_URL`` (a superuser, or a role with CREATEDB and CREATEROLE, e.g.
``postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql``) names a server to use.
Otherwise the session starts a private throwaway cluster from Debian's ``postgresql`` package
(``/usr/lib/postgresql/<ver>/bin/initdb`` and ``pg_ctl``) in a temporary folder, as the
``postgres`` user when run as root (PostgreSQL refuses to run as root), and removes it at the end.
The superuser connects over a unix socket in that folder (mode 0700, trust); TCP on 127.0.0.1
asks for a password (scram-sha-256), which the secrets test uses.

Each test gets its own database (:meth:`PgServer.create_db`), dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_FIX = "apt-get install postgresql (Debian's package; `make system-deps` does it), or set FLEET_TEST_PG_URL"


def _psycopg_url(sa_url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as a libpq URI psycopg can connect with."""
    from sqlalchemy.engine import make_url

    u = make_url(sa_url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create databases and roles on.

    Attributes:
        admin_url: SQLAlchemy URL of a superuser on its maintenance database.
        port: TCP port on 127.0.0.1 (None for an external server: then TCP roles use admin_url's host).
    """

    admin_url: str
    port: int | None = None
    dbs: list[str] = field(default_factory=list)

    def _admin(self):
        import psycopg

        return psycopg.connect(_psycopg_url(self.admin_url), autocommit=True)

    def sql(self, statement: str, params: tuple = ()) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        with self._admin() as conn:
            conn.execute(statement, params)

    def url_for(self, db: str) -> str:
        """The superuser's SQLAlchemy URL on database ``db``."""
        from sqlalchemy.engine import make_url

        return make_url(self.admin_url).set(database=db).render_as_string(hide_password=False)

    def create_db(self, owner: str | None = None) -> str:
        """A new empty database (owned by ``owner`` if given); returns its name. Its collation is
        ICU en-US where the server has ICU (Debian's does), as on a real lab server, so text order
        differs from byte order ("b_2" < "bA") unless the store asks for "C"."""
        import psycopg

        name = "fleet_t_" + uuid.uuid4().hex[:12]
        tail = f' OWNER "{owner}"' if owner else ""
        try:
            self.sql(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'" + tail)
        except psycopg.Error:  # a server without ICU (or before PostgreSQL 15)
            self.sql(f"CREATE DATABASE {name}" + tail)
        self.dbs.append(name)
        return name

    def drop_db(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if name in self.dbs:
            self.dbs.remove(name)

    def password_role(self, password: str) -> tuple[str, str]:
        """A login role with ``password`` and a database it owns; returns (role, database)."""
        role = "fleet_pw_" + uuid.uuid4().hex[:8]
        with self._admin() as conn:
            # the password is a bound literal in the server's own syntax (no SQL text interpolation)
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
            conn.execute(f'ALTER ROLE "{role}" PASSWORD ' + conn.execute("SELECT quote_literal(%s)",
                                                                        (password,)).fetchone()[0])
        return role, self.create_db(owner=role)


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        pytest.fail("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) for the results-store tests: "
                    + INSTALL_FIX, pytrace=False)
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """initdb + pg_ctl start/stop of a throwaway cluster."""

    def __init__(self):
        self.bin = _binaries()
        self.root = os.geteuid() == 0
        # mode 0700; under /tmp when root, so the postgres user can reach it whatever $TMPDIR is
        self.base = Path(tempfile.mkdtemp(prefix="fleet-pg-", dir="/tmp" if self.root else None))
        self.data = self.base / "data"
        self.port = _free_port()
        if self.root:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("no `postgres` user to run the test PostgreSQL server as: " + INSTALL_FIX, pytrace=False)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, cwd=self.base, capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "LC_ALL": "C.UTF-8"})
        if p.returncode != 0:
            log = self.base / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}{tail}", pytrace=False)
        return p

    def start(self) -> PgServer:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions")
        opts = f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.base / "log"), "-w", "-t", "60", "start")
        return PgServer(f"postgresql+psycopg://postgres@/postgres?host={self.base}&port={self.port}", port=self.port)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (:class:`PgServer`)."""
    url = os.environ.get("FLEET_TEST_PG_URL")
    if url:
        srv = PgServer(url)
        yield srv
        for db in list(srv.dbs):
            srv.drop_db(db)
        return
    cluster = _Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server):
    """A SQLAlchemy URL of a fresh, empty database on the session's server (dropped afterwards)."""
    db = pg_server.create_db()
    yield pg_server.url_for(db)
    pg_server.drop_db(db)
