"""Apply the rights table (tools/trust/rights.py) to the parties below the gRPC ports.

    python -m tools.trust etcd --endpoint 127.0.0.1:12379 --tls-dir .stack/dev/tls

Each subcommand is idempotent, for devstack and for a Kubernetes Job alike.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import grpc


def _etcd(args: argparse.Namespace) -> int:
    from tools.trust.etcd_auth import apply_at

    try:
        report = asyncio.run(apply_at(args.endpoint, args.tls_dir))
    except grpc.aio.AioRpcError as exc:
        print(f"etcd at {args.endpoint}: {exc.details()}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"etcd at {args.endpoint} did not answer in time", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"no root identity: {exc}", file=sys.stderr)
        return 1
    print(f"etcd: {len(report.changes)} change(s); authentication on")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.trust", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    etcd = commands.add_parser("etcd", help="etcd's users, roles and authentication")
    etcd.add_argument("--endpoint", required=True, help="etcd host:port")
    etcd.add_argument("--tls-dir", required=True, type=Path, help="holds ca.pem and root.pem")
    etcd.set_defaults(run=_etcd)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
