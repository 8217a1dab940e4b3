"""Passwords, SCRAM verifiers and pg_hba.conf for PostgreSQL's roles, without a server."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devstack.postgres_auth import hba
from ops.trust.postgres_roles import (
    ensure_passwords,
    read_password,
    scram_matches,
    scram_verifier,
)


def test_passwords_are_generated_once_and_private(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    first = ensure_passwords(secrets_dir, ("shop", "shop_order"))
    again = ensure_passwords(secrets_dir, ("shop", "shop_order"))
    assert first == again
    assert len(first["shop"]) == 48 and first["shop"] != first["shop_order"]
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((secrets_dir / "shop").stat().st_mode) == 0o600
    assert read_password(secrets_dir, "shop_order") == first["shop_order"]


def test_a_missing_or_empty_password_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no password for PostgreSQL role 'shop_user'"):
        read_password(tmp_path, "shop_user")
    (tmp_path / "shop_user").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_password(tmp_path, "shop_user")


def test_a_verifier_matches_its_password_only() -> None:
    verifier = scram_verifier("secret", salt=b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert scram_matches(verifier, "secret")
    assert not scram_matches(verifier, "Secret")
    assert not scram_matches(None, "secret")
    assert not scram_matches("md5abcdef", "secret")
    assert not scram_matches("SCRAM-SHA-256$garbage", "secret")
    assert scram_verifier("secret") != scram_verifier("secret")  # a fresh salt each time


def test_hba_rejects_plaintext_first_and_everyone_unlisted_last() -> None:
    rules = [line.split() for line in hba("127.0.0.1", ("shop_a", "shop_b")).splitlines()]
    rules = [r for r in rules if r and not r[0].startswith("#")]
    assert rules == [
        ["local", "all", "all", "reject"],
        ["hostnossl", "all", "all", "all", "reject"],
        ["hostssl", "all", "shop", "127.0.0.1/32", "scram-sha-256"],
        ["hostssl", "sameuser", "shop_a,shop_b", "127.0.0.1/32", "scram-sha-256"],
        # The audit: only the saga's databases (where pg_read_all_data lets it only read).
        [
            "hostssl",
            "shop_inventory,shop_order,shop_payment",
            "shop_audit",
            "127.0.0.1/32",
            "scram-sha-256",
        ],
        ["host", "all", "all", "all", "reject"],
    ]
