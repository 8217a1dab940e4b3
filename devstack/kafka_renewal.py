"""A renewed certificate for a running Kafka broker.

Kafka reads its keystore at start and whenever a dynamic broker config changes: then
every listener's SSL factory reloads a keystore file that changed, even at the same
path, and so does the broker's client side, which talks to its controller. Setting
listener.name.ssl.ssl.keystore.location to the path it already has is that change
(the CONTROLLER listener reloads with it). Nothing else makes a running broker look:
a renewed file alone is not noticed.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from cryptography import x509

from ops.trust.kafka_acls import operator_admin
from pki.authority import keystore_file
from pki.identities import KAFKA
from shared.messaging.kafka import KafkaIdentity

# The listener whose name the dynamic config carries (devstack/kafka.py's listeners).
LISTENER = "ssl"


def served_serial(host: str, port: int, tls_dir: Path) -> int:
    """The serial number of the certificate the listener at host:port presents now."""
    context = KafkaIdentity.operator(tls_dir).ssl_context()
    with (
        socket.create_connection((host, port), 5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ValueError(f"{host}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der).serial_number


async def reload_keystore(bootstrap: str, tls_dir: Path, broker_id: int = 1) -> None:
    """Asks the broker, as the operator, to read its keystore again. AlterConfigs
    replaces the broker's whole set of dynamic configs: devstack sets no other."""
    path = str(keystore_file(tls_dir, KAFKA))
    config = {f"listener.name.{LISTENER}.ssl.keystore.location": path}
    admin = operator_admin(bootstrap, tls_dir, request_timeout_ms=5000, client_id="devstack")
    try:
        await admin.start()
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(broker_id), configs=config)]
        )
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    for response in responses:
        for code, message, *_ in response.resources:
            if code:
                raise RuntimeError(f"reloading Kafka's keystore failed: error {code} {message}")
