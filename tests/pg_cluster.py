"""A throwaway PostgreSQL cluster on 127.0.0.1 for the tests and the benchmark.

``start(base_dir)`` runs Debian's ``initdb`` and ``pg_ctl`` (``/usr/lib/postgresql/N/bin``)
on a fresh data directory and returns a ``Cluster`` whose ``url`` is
``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust authentication, loopback only,
``fsync=off``: nothing here must survive a power cut). ``Cluster.stop()`` stops the server
and removes its files.

``initdb`` and ``pg_ctl`` refuse to run as root, and sessions and CI run as root: they then
run as the ``postgres`` user (``runuser -u postgres``, the account Debian's package creates)
on directories that user owns. As any other user they run directly.

``ClusterUnavailable`` says why no server could be started (no binaries, no ``postgres``
user, initdb or start failed); the tests skip on it outside CI and fail on it in CI.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def find_bin_dir() -> str | None:
    """The newest installed ``.../bin`` holding ``initdb`` and ``pg_ctl``, or None."""
    found = [d for d in glob.glob(BIN_GLOB)
             if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(
                 os.path.join(d, "pg_ctl"))]
    return max(found, key=_major_version) if found else None


def _major_version(bin_dir: str) -> int:
    try:
        return int(os.path.basename(os.path.dirname(bin_dir)))
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    bin_dir: str
    base_dir: str   # removed by stop(): data/ and sock/ live inside
    port: int
    as_postgres: bool

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base_dir, "data")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_of(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def run(self, tool: str, *args: str, timeout: float = START_TIMEOUT_S
            ) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bin_dir, tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and remove its files."""
        try:
            self.run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start(base_dir: str | None = None) -> Cluster:
    """initdb + start a server on a free loopback port; ``ClusterUnavailable`` if impossible."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ClusterUnavailable(f"no PostgreSQL binaries ({BIN_GLOB}/initdb): install "
                                 "Debian's postgresql package (.ci/run does)")
    as_postgres = os.geteuid() == 0
    if as_postgres and shutil.which("runuser") is None:
        raise ClusterUnavailable("running as root without runuser: initdb refuses root")
    base_dir = tempfile.mkdtemp(prefix="pg-", dir=base_dir)
    os.makedirs(os.path.join(base_dir, "sock"))
    if as_postgres:
        try:
            import pwd
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base_dir, ignore_errors=True)
            raise ClusterUnavailable("running as root and there is no 'postgres' user to "
                                     "run initdb as") from None
        os.chmod(base_dir, 0o755)
        for path in (base_dir, os.path.join(base_dir, "sock")):
            os.chown(path, user.pw_uid, user.pw_gid)
    cluster = Cluster(bin_dir, base_dir, _free_port(), as_postgres)
    init = cluster.run("initdb", "-D", cluster.data_dir, "-A", "trust", "-U", "postgres",
                       "--no-sync", "-E", "UTF8", "--locale=C")
    if init.returncode != 0:
        shutil.rmtree(base_dir, ignore_errors=True)
        raise ClusterUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    options = (f"-k {os.path.join(base_dir, 'sock')} -p {cluster.port} "
               "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    started = cluster.run("pg_ctl", "-D", cluster.data_dir, "-o", options,
                          "-l", os.path.join(base_dir, "server.log"), "-w", "start")
    if started.returncode != 0:
        log_text = ""
        try:
            with open(os.path.join(base_dir, "server.log")) as log_file:
                log_text = log_file.read()[-500:]
        except OSError:
            pass
        shutil.rmtree(base_dir, ignore_errors=True)
        raise ClusterUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]} "
                                 f"{log_text}")
    return cluster
