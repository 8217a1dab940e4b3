"""RSA key pairs for signing tokens, and their key ids (kid)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes


def generate_keypair(directory: Path) -> None:
    """Writes private.pem and public.pem unless both exist already.

    private.pem is the user service's bootstrap signing key (jwt_private_key_file);
    no service reads public.pem (they verify against the JWKS in etcd), but tests
    build local verifiers from it.
    """
    private_path, public_path = directory / "private.pem", directory / "public.pem"
    if private_path.exists() and public_path.exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def load_public_key(path: Path) -> PublicKeyTypes:
    return serialization.load_pem_public_key(path.read_bytes())


def key_id(public_key: PublicKeyTypes) -> str:
    """A stable kid: the SHA-256 of the DER public key, shortened."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]
