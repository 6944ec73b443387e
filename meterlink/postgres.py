"""A throwaway PostgreSQL server on a loopback port, for the tests, the benchmarks and the demo.

Debian's server binaries (``apt-get install postgresql``) make a cluster in a temporary
folder (``initdb``) and run it on 127.0.0.1 on a port chosen free, with its Unix socket in
that folder too: nothing of the machine's own PostgreSQL (if any runs) is touched. The
server refuses to run as root, so under root (CI) the cluster belongs to the ``postgres``
account that the Debian package creates. ``trust`` authentication on loopback only: this
server lives for one test session and holds nothing but test data.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .procs import Proc, free_port

__all__ = ["PostgresCluster", "postgres_bindir"]

USER = "meterlink"  # the cluster's superuser; databases are made for it


def postgres_bindir() -> Path:
    """The folder of Debian's ``initdb`` and ``postgres`` (newest major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError(
        "the PostgreSQL server is not installed: run  sudo apt-get install postgresql  (or "
        "`make test`, which installs it when run as root)"
    )


def _major(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


class PostgresCluster:
    """``initdb`` + ``postgres`` in a temporary folder; ``stop()`` ends it and removes it.

    ``durable=False`` (tests) turns off fsync: a test never survives a power cut of the
    machine it runs on; benchmarks keep the default (``durable=True``), as in production.
    """

    def __init__(self, durable: bool = False, port: int | None = None) -> None:
        self.durable = durable
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="meterlink-pg-"))
        self.data = self.root / "data"
        self.proc: Proc | None = None
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root and there is no 'postgres' account "
                    "(it comes with Debian's postgresql package)"
                ) from None
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._user = "postgres"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` on this server."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        bindir = postgres_bindir()
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            capture_output=True, text=True, user=self._user, check=False,
        )  # fmt: skip
        if initdb.returncode != 0:
            self._remove()
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stderr[-2000:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "100",
            "shared_buffers": "128MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        args = [str(bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        self.proc = Proc(args, "postgres", user=self._user)
        try:
            # the server says so on its log once it takes connections: an event, not a poll
            self.proc.wait_line(lambda line: "ready to accept connections" in line, 60)
        except BaseException:
            self.stop()
            raise
        return self

    def create_database(self, name: str) -> str:
        """Make an empty database ``name``; returns its URL."""
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` with psql (as the cluster's superuser); returns its output."""
        done = subprocess.run(
            [str(postgres_bindir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(database), "-c", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions ended, no waiting for clients), then the folder."""
        if self.proc is not None:
            # to the postmaster only: its children take SIGINT for other things
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.popen.pid, signal.SIGINT)
            try:
                self.proc.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
