"""The OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): the issuer is the
public origin (the gateway's), and every endpoint is the issuer plus its fixed path."""

from __future__ import annotations

from typing import Any

from shared.auth.scopes import ALL_SCOPES

AUTHORIZE = "/oauth2/authorize"
TOKEN = "/oauth2/token"
REVOKE = "/oauth2/revoke"
USERINFO = "/oauth2/userinfo"
LOGOUT = "/oauth2/logout"
JWKS = "/.well-known/jwks.json"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]


def document(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZE,
        "token_endpoint": issuer + TOKEN,
        "revocation_endpoint": issuer + REVOKE,
        "userinfo_endpoint": issuer + USERINFO,
        "end_session_endpoint": issuer + LOGOUT,
        "jwks_uri": issuer + JWKS,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": sorted(ALL_SCOPES),
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email"],
    }
