"""Profiles: separate ports and data dirs so a test stack never clobbers a running dev stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Resolved from the package location (not CWD) so `make` targets work from any directory.
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
STACK_ROOT: Final = REPO_ROOT / ".stack"
# What devstack hands to the servers it runs: Kafka's jar manifest and its logging config.
FILES_DIR: Final = Path(__file__).resolve().parent / "files"
HOST: Final = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    postgres: int
    etcd_client: int
    etcd_peer: int
    kafka_broker: int
    kafka_controller: int
    zipkin: int
    prometheus: int

    @property
    def etcd_metrics(self) -> int:
        """etcd's plaintext /health and /metrics (its client port speaks TLS only)."""
        return self.etcd_client + 2


@dataclass(frozen=True)
class Profile:
    name: str
    ports: Ports
    # etcd, Kafka and PostgreSQL with TLS and authentication (docs/decisions/
    # trust-below-grpc.md). False only for `bench-plain`, the baseline of `make bench-trust`:
    # plaintext etcd without auth, PLAINTEXT Kafka without ACLs, PostgreSQL without TLS
    # (trust). gRPC's mTLS between the services stays on either way.
    infra_tls: bool = True

    @property
    def dir(self) -> Path:
        return STACK_ROOT / self.name

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def marker(self) -> str:
        """Substring of every daemon's command line that proves it belongs to this profile.

        The trailing slash keeps `.stack/test/` from matching a hypothetical `.stack/testing/`.
        """
        return f"{self.dir}/"


PROFILES: Final[dict[str, Profile]] = {
    "dev": Profile("dev", Ports(15432, 12379, 12380, 19092, 19093, 19411, 19090)),
    "test": Profile("test", Ports(25432, 22379, 22380, 29092, 29093, 29411, 29090)),
    # Every port below is under Linux's ephemeral range (32768-60999): a port in it can be
    # held by any outgoing connection of the moment, and a server then fails to bind it
    # (Kafka of bench-plain on 36092 did, after a bench's burst of client connections).
    # `make bench` measures on its own stack, so figures never mix with a dev session's data.
    "bench": Profile("bench", Ports(16432, 16379, 16380, 16092, 16093, 16411, 16090)),
    # `make bench-trust`'s baseline: the same stack with no TLS or auth below gRPC. It
    # exists for that measurement only; nothing else may run on it.
    "bench-plain": Profile(
        "bench-plain", Ports(17432, 17379, 17380, 17092, 17093, 17411, 17090), infra_tls=False
    ),
    # `make fuzz` too, so a long fuzz run never shares data with tests or a dev session.
    "fuzz": Profile("fuzz", Ports(18432, 18379, 18380, 18092, 18093, 18411, 18090)),
    # Spare test stacks (SHOP_TEST_PROFILE=test2 ...), so two test runs can go side by side.
    "test2": Profile("test2", Ports(23432, 23379, 23380, 23092, 23093, 23411, 23090)),
    "test3": Profile("test3", Ports(24432, 24379, 24380, 24092, 24093, 24411, 24090)),
    "test4": Profile("test4", Ports(26432, 26379, 26380, 26092, 26093, 26411, 26090)),
    "test5": Profile("test5", Ports(27432, 27379, 27380, 27092, 27093, 27411, 27090)),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown profile {name!r} (known: {known})") from None
