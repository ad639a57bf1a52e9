"""TLS for the gRPC and HTTP listeners: an ``ssl.SSLContext`` from :class:`TlsSettings`.

Both endpoints take the same settings under the same flag names (``--grpc-use-ssl``,
``--grpc-server-cert``, ... as tritonserver names them for gRPC; ``--http-use-ssl``, ... mirror
them for HTTP, which tritonserver cannot serve over TLS). Everything is checked once, when the
endpoint starts, so a wrong path or a key that does not match its certificate stops ``kernel
serve`` with a message naming the flag instead of failing on the first client's handshake.

The context follows what HTTP/2 requires of TLS (RFC 9113 section 9.2): TLS 1.2 or newer, no
TLS-level compression, no renegotiation, and for TLS 1.2 only the AEAD ECDHE suites (the CBC
suites are on the RFC's block list; TLS 1.3 suites are all acceptable). The HTTP/1.1 endpoint
uses the same context so one audit covers both. ALPN offers ``h2`` on the gRPC port (grpc
clients refuse a server that does not select it) and ``http/1.1`` on the HTTP port.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Literal

from kernel._errors import KernelError, Status
from kernel._options import TlsSettings

__all__ = ["listener_context", "server_context"]

# TLS 1.2 suites HTTP/2 accepts: ephemeral key exchange with an AEAD cipher (RFC 9113 9.2.2);
# security level 2: no RSA or DH keys under 2048 bits, no SHA-1 signatures.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:@SECLEVEL=2"

_ALPN = {"grpc": ["h2"], "http": ["http/1.1"]}


def _readable(path: Path, flag: str) -> None:
    """Open ``path`` once so a missing or unreadable file is reported with its flag."""
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KernelError(Status.INVALID_ARG, f"{flag}: cannot read '{path}': {reason}") from exc


def _no_password() -> bytes:
    return b""


def _reason(exc: ssl.SSLError) -> str:
    return exc.reason or str(exc)


def server_context(
    settings: TlsSettings | None, endpoint: Literal["grpc", "http"]
) -> ssl.SSLContext | None:
    """The server-side context of ``endpoint`` (``"grpc"`` or ``"http"``, naming the flags);
    ``None`` (plain TCP) without settings.

    :raises KernelError: ``INVALID_ARG`` when a file is missing or unreadable, is not PEM, or
        the key does not match the certificate, or when mutual TLS has no root certificate.
    """
    if settings is None:
        return None
    cert_flag, key_flag = f"--{endpoint}-server-cert", f"--{endpoint}-server-key"
    root_flag = f"--{endpoint}-root-cert"
    if settings.cert is None or settings.key is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"--{endpoint}-use-ssl needs {cert_flag} and {key_flag} (PEM files)",
        )
    if settings.mutual and settings.root_cert is None:
        raise KernelError(
            Status.INVALID_ARG,
            f"--{endpoint}-use-ssl-mutual needs {root_flag}: the PEM certificate(s) of the"
            " authority that signs client certificates",
        )
    _readable(settings.cert, cert_flag)
    _readable(settings.key, key_flag)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(_TLS12_CIPHERS)
    context.set_alpn_protocols(_ALPN[endpoint])
    try:
        # A password callback keeps OpenSSL from prompting on the terminal for an encrypted key.
        context.load_cert_chain(settings.cert, settings.key, password=_no_password)
    except ssl.SSLError as exc:
        raise KernelError(
            Status.INVALID_ARG,
            f"{cert_flag} '{settings.cert}' with {key_flag} '{settings.key}': not a PEM"
            f" certificate and its matching unencrypted private key ({_reason(exc)})",
        ) from exc
    if settings.root_cert is not None:
        _readable(settings.root_cert, root_flag)
        try:
            context.load_verify_locations(cafile=settings.root_cert)
        except ssl.SSLError as exc:
            raise KernelError(
                Status.INVALID_ARG,
                f"{root_flag} '{settings.root_cert}': not a PEM certificate ({_reason(exc)})",
            ) from exc
    # tritonserver asks for client certificates only with mutual TLS, and then requires them.
    context.verify_mode = ssl.CERT_REQUIRED if settings.mutual else ssl.CERT_NONE
    return context


def listener_context(
    settings: TlsSettings | None, endpoint: Literal["grpc", "http"], sock: socket.socket
) -> ssl.SSLContext | None:
    """:func:`server_context` for a frontend about to serve on ``sock``; closes ``sock`` when
    it raises, since the frontend that was handed it will never serve or close it.

    :raises KernelError: as :func:`server_context`.
    """
    try:
        return server_context(settings, endpoint)
    except KernelError:
        sock.close()
        raise
