"""Who may call which method (``AccessPolicy``), and the interceptor that enforces it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from shared.auth.identity import Identity, Role, set_current_identity
from shared.auth.tokens import TokenVerifier
from shared.errors import PermissionDenied, Unauthenticated
from shared.rpc.interceptors.base import HEALTH_AND_REFLECTION, AdmissionInterceptor, Context
from shared.tls import GATEWAY, OPERATOR, peer_identity


class Access(enum.Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    ADMIN = "admin"


# The party (the client certificate's name) of people and tools; services never do admin work.
OPERATOR_ONLY = frozenset({OPERATOR})
# The admin work a person may also do in the storefront's admin page: the gateway calls
# with the admin's token, which must carry the method's scope as well.
OPERATOR_OR_GATEWAY = frozenset({OPERATOR, GATEWAY})


class AccessPolicy:
    """Who may call which method, on two layers.

    ``rules``: which user (from the JWT) may call; methods not listed need any
    valid token. ``scopes``: the OAuth2 scope (shared/auth/scopes.py) a method's token
    must carry, on top of its rule, so a client granted less (a script that may only
    read orders) cannot do more than it was granted. ``parties``: which parties
    (the mTLS client certificate's name: a service, ``gateway`` or ``operator``) may
    call; methods not listed take any party whose certificate our CA signed. A stolen
    admin token is no use from inside the order service, since admin methods take
    the operator's or the gateway's certificate only.
    """

    def __init__(
        self,
        rules: Mapping[str, Access],
        parties: Mapping[str, frozenset[str]] | None = None,
        scopes: Mapping[str, str] | None = None,
    ) -> None:
        self._rules = dict(rules)
        self._parties = dict(parties or {})
        self._scopes = dict(scopes or {})
        public = {m for m in self._scopes if self._rules.get(m) is Access.PUBLIC}
        if public:
            raise ValueError(f"a public method cannot require a scope: {sorted(public)}")

    def access_for(self, method: str) -> Access:
        if method.startswith(HEALTH_AND_REFLECTION):
            return Access.PUBLIC
        return self._rules.get(method, Access.AUTHENTICATED)

    def scope_for(self, method: str) -> str | None:
        """The scope a token needs for this method, or None."""
        return self._scopes.get(method)

    def parties_for(self, method: str) -> frozenset[str] | None:
        """The parties allowed, or None for any party with a certificate of our CA."""
        return self._parties.get(method)


class AuthInterceptor(AdmissionInterceptor):
    """Checks the calling party (mTLS) and the bearer token; makes the user current."""

    def __init__(self, verifier: TokenVerifier, policy: AccessPolicy) -> None:
        self._verifier = verifier
        self._policy = policy

    def admit(self, method: str, context: Context) -> None:
        parties = self._policy.parties_for(method)
        if parties is not None and (party := peer_identity(context)) not in parties:
            raise PermissionDenied(
                f"this call is not open to {party or 'a caller without a certificate'};"
                f" it takes {', '.join(sorted(parties))}"
            )
        access = self._policy.access_for(method)
        if access is Access.PUBLIC:
            set_current_identity(None)
            return
        identity = self._authenticate(context.invocation_metadata())
        if access is Access.ADMIN and identity.role is not Role.ADMIN:
            raise PermissionDenied("this call needs the admin role")
        scope = self._policy.scope_for(method)
        if scope is not None and not identity.has_scope(scope):
            raise PermissionDenied(f"this call needs a token with the scope {scope}")
        # The wrapper runs in the call's own task, so this context variable is the
        # caller's for exactly this RPC.
        set_current_identity(identity)

    def _authenticate(self, metadata: Any) -> Identity:
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
                return self._verifier.verify(token)
        raise Unauthenticated("this call needs a bearer token in 'authorization' metadata")
