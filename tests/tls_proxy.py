"""A TLS-terminating gRPC proxy in front of the dev server, for the connection tests: the
dev server speaks no TLS, so Debian's nginx (`grpc_pass`) plays the mTLS cluster / Temporal
Cloud: it requires a client certificate signed by the test CA and an `authorization:
Bearer <API key>` header, answering a wrong key with gRPC UNAUTHENTICATED as Temporal
Cloud does. Certificates are made here with `cryptography`.

nginx comes from Debian's package `nginx-light` (`make test` installs it when it runs as
root; otherwise `apt-get install nginx-light`)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stack.net import free_port, wait_for_port

API_KEY = "tls-test-api-key"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    other_ca: Path  # a CA nobody uses: the "wrong CA"
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(issuer).public_key(public_key)  # type: ignore[arg-type]
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (builder(name, subject, k.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .sign(k, hashes.SHA256()))
        return k, cert

    def leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str,
             server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = (builder(name, ca_cert.subject, k.public_key())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    def cert_pem(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    def key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key, ca_cert = ca("Refund Desk test CA")
    _, other_cert = ca("Some other CA")
    server_key, server_cert = leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = leaf(ca_key, ca_cert, "refund-desk-worker", server=False)
    return Certificates(
        ca=write("ca.pem", cert_pem(ca_cert)), other_ca=write("other-ca.pem", cert_pem(other_cert)),
        server_cert=write("server.pem", cert_pem(server_cert)),
        server_key=write("server.key", key_pem(server_key)),
        client_cert=write("client.pem", cert_pem(client_cert)),
        client_key=write("client.key", key_pem(client_key)),
    )


_CONFIG = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp;
  proxy_temp_path {dir}/tmp;
  fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp;
  scgi_temp_path {dir}/tmp;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {certs.server_cert};
    ssl_certificate_key {certs.server_key};
    ssl_client_certificate {certs.ca};
    ssl_verify_client on;
    # workers long-poll for up to a minute and more
    grpc_read_timeout 300s;
    grpc_send_timeout 300s;
    location @unauthenticated {{
      default_type application/grpc;
      add_header grpc-status 16 always;
      add_header grpc-message "API key refused by the proxy" always;
      return 204;
    }}
    location / {{
      if ($http_authorization != "Bearer {api_key}") {{ return 401; }}
      error_page 401 = @unauthenticated;
      grpc_pass grpc://{upstream};
    }}
  }}
}}
"""


class TLSProxy:
    """nginx on a free loopback port, forwarding to `upstream` (host:port)."""

    def __init__(self, nginx: str, directory: Path, certs: Certificates, upstream: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        (directory / "tmp").mkdir(exist_ok=True)
        self.config = directory / "nginx.conf"
        self.config.write_text(_CONFIG.format(dir=directory, port=self.port, certs=certs,
                                              api_key=API_KEY, upstream=upstream))
        self.log = directory / "error.log"
        self._proc = subprocess.Popen(
            [nginx, "-c", str(self.config), "-p", str(directory), "-e", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {self._stderr()}") from None

    def _stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
