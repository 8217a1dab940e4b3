"""Server reflection, v1 and v1alpha, so grpcurl, ghz and Postman can list and call.

grpcio-reflection ships only v1alpha. v1 (which grpcurl tries first) is the same
protocol under another package name: the messages are identical field for field,
so the v1 method is served by the same servicer with the v1alpha message classes,
and a renamed copy of v1alpha's descriptor makes ``describe`` work for it too.

ghz and ``grpcurl describe pkg.Service.Method`` ask for the file of a *method*,
which protobuf's upb pool does not index as a symbol; ``_MethodAwarePool`` finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer  # reflection.aio, typed

V1ALPHA = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    v1.name, v1.package = _V1_FILE, "grpc.reflection.v1"
    for message in v1.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(v1)


class _MethodAwarePool:
    """The default pool, but a method's name also finds the file of its service."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> Any:  # the pool's own name
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    names = [*service_names, V1, V1ALPHA]
    pool = descriptor_pool.Default()
    _register_v1_descriptor(pool)
    servicer = ReflectionServicer(names, pool=_MethodAwarePool(pool))
    for service in (V1ALPHA, V1):
        handler = grpc.method_handlers_generic_handler(
            service,
            {
                "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                    servicer.ServerReflectionInfo,
                    request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                    response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
