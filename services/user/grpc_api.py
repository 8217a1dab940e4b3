"""UserService over gRPC: the access policy, and requests and replies mapped to and
from the use cases. Nothing else."""

from __future__ import annotations

import grpc

from services.user import use_cases
from services.user.domain import Passwords, SigningKeyStatus, User
from services.user.ports import SigningKeys, UnitOfWorkFactory
from shared.auth.identity import Role, current_identity
from shared.proto_convert import timestamp
from shared.rpc.interceptors.auth import OPERATOR_ONLY, Access, AccessPolicy
from shared.validation import parse_uuid
from shop.user.v1 import user_pb2, user_pb2_grpc

_SERVICE = "/shop.user.v1.UserService/"
ACCESS = AccessPolicy(
    {
        _SERVICE + "Register": Access.PUBLIC,
        _SERVICE + "Login": Access.PUBLIC,
        _SERVICE + "RotateSigningKey": Access.ADMIN,
        _SERVICE + "ListSigningKeys": Access.ADMIN,
    },
    parties={
        _SERVICE + "RotateSigningKey": OPERATOR_ONLY,
        _SERVICE + "ListSigningKeys": OPERATOR_ONLY,
    },
)

_ROLE_TO_PROTO = {
    Role.CUSTOMER: user_pb2.ROLE_CUSTOMER,
    Role.ADMIN: user_pb2.ROLE_ADMIN,
}


def user_to_proto(u: User) -> user_pb2.User:
    return user_pb2.User(
        user_id=str(u.user_id),
        email=u.email,
        role=_ROLE_TO_PROTO[u.role],
        created_at=timestamp(u.created_at),
    )


def signing_key_to_proto(k: SigningKeyStatus) -> user_pb2.SigningKey:
    key = user_pb2.SigningKey(kid=k.kid, created_at=timestamp(k.created_at), signing=k.signing)
    if k.retired_at is not None:
        key.retired_at.CopyFrom(timestamp(k.retired_at))
    if k.removes_at is not None:
        key.removes_at.CopyFrom(timestamp(k.removes_at))
    return key


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(
        self, unit_of_work: UnitOfWorkFactory, signing_keys: SigningKeys, passwords: Passwords
    ) -> None:
        self._uow = unit_of_work
        self._signing_keys = signing_keys
        self._passwords = passwords

    async def Register(
        self, request: user_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RegisterResponse:
        user = await use_cases.register(
            self._uow, self._passwords, email=request.email, password=request.password
        )
        return user_pb2.RegisterResponse(user=user_to_proto(user))

    async def Login(
        self, request: user_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.LoginResponse:
        session = await use_cases.login(
            self._uow,
            self._passwords,
            self._signing_keys,
            email=request.email,
            password=request.password,
        )
        return user_pb2.LoginResponse(
            access_token=session.access_token,
            expires_at=timestamp(session.expires_at),
            user=user_to_proto(session.user),
        )

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.GetUserResponse:
        user_id = parse_uuid(request.user_id, "user_id")
        user = await use_cases.get_user(self._uow, current_identity(), user_id)
        return user_pb2.GetUserResponse(user=user_to_proto(user))

    async def RotateSigningKey(
        self, request: user_pb2.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RotateSigningKeyResponse:
        keys = await use_cases.rotate_signing_key(self._signing_keys)
        return user_pb2.RotateSigningKeyResponse(keys=[signing_key_to_proto(k) for k in keys])

    async def ListSigningKeys(
        self, request: user_pb2.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.ListSigningKeysResponse:
        keys = await use_cases.list_signing_keys(self._signing_keys)
        return user_pb2.ListSigningKeysResponse(keys=[signing_key_to_proto(k) for k in keys])
