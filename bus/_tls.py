"""TLS contexts for the bus clients, from `TlsSettings` (the same keys for NATS and Kafka)."""

import ssl

from temporal_executor.bus.errors import TransportConfigError
from temporal_executor.schemas.config import TlsSettings


def ssl_context(tls: TlsSettings, where: str) -> ssl.SSLContext:
    """A client context that verifies the server against `ca_file` (else the system's CAs)
    and, with `cert_file` and `key_file`, presents a client certificate (mutual TLS)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        msg = f"{where}: cannot load the TLS files: {exc}"
        raise TransportConfigError(msg) from exc
    return context
