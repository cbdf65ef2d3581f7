"""Certificates for the TLS tests, made by ``openssl`` in the test's directory.

``make_ca(dir)`` makes a CA; ``make_cert(dir, name, cn, ca)`` a key and certificate it signs,
valid for 127.0.0.1 and localhost (a server's) or carrying a CN only (a client's). Each call
takes well under a second (EC P-256 keys).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=TIMEOUT_S)


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
             cwd=path.parent)


def make_ca(directory: Path, cn: str = "test-ca") -> Pem:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{cn}.key", directory / f"{cn}.pem"
    _key(key)
    _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=directory)
    return Pem(cert, key)


def make_cert(directory: Path, name: str, cn: str, ca: Pem, server: bool = True) -> Pem:
    """A key and a certificate signed by ``ca``: for a server (SAN 127.0.0.1, localhost) or a client."""
    key, csr, cert, ext = (directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem",
                           directory / f"{name}.ext")
    _key(key)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}", cwd=directory)
    usage = "serverAuth" if server else "clientAuth"
    san = "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else ""
    ext.write_text(f"{san}extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory)
    return Pem(cert, key)
