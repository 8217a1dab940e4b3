"""Every RPC of every ``shop.<svc>.v1.*Service``, read from the generated descriptors.

No list of methods is written down anywhere: a method (or a service) added to
a proto is fuzzed as soon as ``make deps`` has generated its ``*_pb2`` module.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message

from tests.fuzz.strategies import message_class

SERVICE_NAME = re.compile(r"^shop\.(?P<service>[a-z_]+)\.v1\.\w+Service$")


@dataclass(frozen=True)
class Rpc:
    service: str  # the registry name, e.g. "order"
    service_full_name: str  # "shop.order.v1.OrderService"
    name: str  # "WatchOrder"
    input: Descriptor
    output: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service_full_name}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.service}.{self.name}"


def _pb2_modules() -> list[str]:
    import shop  # the generated package under gen/ (a namespace package)

    names = set()
    for root in map(Path, shop.__path__):
        for path in root.glob("*/v1/*_pb2.py"):
            names.add(f"shop.{path.parent.parent.name}.v1.{path.stem}")
    return sorted(names)


def services() -> list[ServiceDescriptor]:
    found: dict[str, ServiceDescriptor] = {}
    for module_name in _pb2_modules():
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            if SERVICE_NAME.match(service.full_name):
                found[service.full_name] = service
    return [found[name] for name in sorted(found)]


def discover() -> list[Rpc]:
    rpcs = []
    for service in services():
        match = SERVICE_NAME.match(service.full_name)
        assert match is not None
        for method in service.methods:
            rpcs.append(
                Rpc(
                    service=match["service"],
                    service_full_name=service.full_name,
                    name=method.name,
                    input=method.input_type,
                    output=message_class(method.output_type),
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                )
            )
    return rpcs
