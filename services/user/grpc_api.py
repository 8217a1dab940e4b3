"""UserService over gRPC: validate, call the domain, map back. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import grpc

from services.user.adapters.keyring import SigningKeyring
from services.user.domain import (
    Passwords,
    SigningKeyStatus,
    User,
    new_password,
    new_user,
    normalise_email,
    offered_password,
)
from services.user.persistence import UserUnitOfWork
from shared.auth.identity import Role, current_identity
from shared.errors import NotFound, PermissionDenied, Unauthenticated
from shared.rpc.convert import timestamp
from shared.rpc.interceptors import OPERATOR_ONLY, Access, AccessPolicy
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
# One message for both causes, so Login cannot be used to find out who has an account.
_BAD_CREDENTIALS = "email or password is incorrect"


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
        self,
        unit_of_work: Callable[[], UserUnitOfWork],
        signing_keys: SigningKeyring,
        passwords: Passwords,
    ) -> None:
        self._uow = unit_of_work
        self._signing_keys = signing_keys
        self._passwords = passwords

    async def Register(
        self, request: user_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RegisterResponse:
        email = normalise_email(request.email)
        password = new_password(request.password)
        # argon2 is slow on purpose; on the loop it would stall every other RPC.
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        user = new_user(email=email, password_hash=password_hash)
        async with self._uow() as uow:
            await uow.users.add(user)
        return user_pb2.RegisterResponse(user=user_to_proto(user))

    async def Login(
        self, request: user_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.LoginResponse:
        email = normalise_email(request.email)
        password = offered_password(request.password)
        # The connection goes back to the pool before hashing: a verify takes far
        # longer than the query and must not hold one.
        async with self._uow() as uow:
            user = await uow.users.get_by_email(email)
        if user is None:
            await asyncio.to_thread(self._passwords.verify_decoy, password)
            raise Unauthenticated(_BAD_CREDENTIALS)
        if not await asyncio.to_thread(self._passwords.verify, user.password_hash, password):
            raise Unauthenticated(_BAD_CREDENTIALS)
        if self._passwords.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        token, expires_at = self._signing_keys.issue(user.user_id, user.role)
        return user_pb2.LoginResponse(
            access_token=token, expires_at=timestamp(expires_at), user=user_to_proto(user)
        )

    async def _rehash(self, user: User, password: str) -> None:
        """Upgrades a hash made with older parameters, now that the password is known."""
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        async with self._uow() as uow:
            await uow.users.update_password_hash(
                user.with_password_hash(password_hash), expected_hash=user.password_hash
            )

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.GetUserResponse:
        user_id = parse_uuid(request.user_id, "user_id")
        caller = current_identity()
        if not caller.is_admin and caller.user_id != user_id:
            raise PermissionDenied("only admins may read another user's account")
        async with self._uow() as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user_pb2.GetUserResponse(user=user_to_proto(user))

    async def RotateSigningKey(
        self, request: user_pb2.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.RotateSigningKeyResponse:
        keys = await self._signing_keys.rotate()
        return user_pb2.RotateSigningKeyResponse(keys=[signing_key_to_proto(k) for k in keys])

    async def ListSigningKeys(
        self, request: user_pb2.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.ListSigningKeysResponse:
        keys = await self._signing_keys.statuses()
        return user_pb2.ListSigningKeysResponse(keys=[signing_key_to_proto(k) for k in keys])


def unit_of_work_factory(pool: asyncpg.Pool) -> Callable[[], UserUnitOfWork]:
    return lambda: UserUnitOfWork(pool)
