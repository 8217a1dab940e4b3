"""The fuzzer: real services on a real stack, Hypothesis requests, three properties.

The five services run in this process (``tests.support.services.run_service``)
against the stack's PostgreSQL, etcd and Kafka, on fresh databases seeded with
the demo catalogue, so the fuzzer has real product ids, SKUs, users and orders
to aim at. They run with ``consume_events=False`` and no saga timeout, so while
the fuzzer sends one request at a time nothing else writes to their databases
except the outbox relay, which marks the outbox rows of an accepted request as
sent (the fuzzer waits for it to be idle before each snapshot; see ``Database``).

For every request (``Fuzzer.exercise``):

1. *status*: the answer is never UNKNOWN or INTERNAL, nor (unary) no answer at
   all within 30 s; and nothing the caller sees (details, trailing metadata)
   names an exception class, a traceback, or SQL (``leaks``);
2. *rows*: a rejected request (any status but OK) leaves every table of its
   service's database as it was: md5 of every table's ordered rows, before and after;
3. *health*: the service still answers SERVING on the health protocol.

Hypothesis runs in a worker thread; each example is sent on the services'
event loop. A broken property raises ``PropertyFailed`` (one subclass per kind
of failure, so Hypothesis shrinks and reports distinct bugs separately), and
Hypothesis shrinks the request to a minimal one that still breaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import re
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from devstack import launcher
from devstack.stack import Stack
from ops.seed import ADMIN, CUSTOMER, seed
from ops.shop_client import ShopClient
from shared.auth.identity import Role
from shared.money import MAX_AMOUNT_MINOR
from shared.registry.discovery import Instance
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.common.v1 import money_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from tests.fuzz.rpcs import Rpc, discover
from tests.fuzz.strategies import FuzzRequest, MessageStrategies, Vocabulary
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

log = logging.getLogger(__name__)

SERVICES = launcher.SERVICES  # product before order: order prices through product
UNARY_DEADLINE = 30.0  # a unary call unanswered by then is a hang
STREAM_DEADLINE = 1.0  # a stream may legitimately wait (WatchOrder of a pending order)
MAX_STREAM_MESSAGES = 100
RELAY_IDLE_TIMEOUT = 15.0
HEALTH_TIMEOUT = 5.0
C = grpc.StatusCode
# Valid UUIDs of no user, product or order.
NOBODY, NOBODY_ADMIN = uuid.UUID(int=0xF00D), uuid.UUID(int=0xBEEF)

# Rows the relay deletes once they were sent an hour ago: a request under test
# cannot have written a row that old, so leaving them out hides nothing from
# the check, and a run longer than an hour does not see them vanish as a "change".
SNAPSHOT_FILTERS = {"outbox": "WHERE sent_at IS NULL OR sent_at > now() - interval '30 minutes'"}


# --- callers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    name: str
    kind: str = "token"  # token | none | expired | malformed
    role: Role | None = None
    user_id: uuid.UUID | None = None

    def __str__(self) -> str:
        return self.name


class Tokens:
    """Tokens minted with the test keys (as the user service would sign them), cached."""

    REFRESH_SECONDS = 600.0

    def __init__(self, keys: TestKeys) -> None:
        self._keys = keys
        self._cache: dict[Caller, tuple[float, tuple[tuple[str, str], ...]]] = {}

    def metadata(self, caller: Caller) -> tuple[tuple[str, str], ...]:
        if caller.kind == "none":
            return ()
        if caller.kind == "malformed":
            return (("authorization", "Bearer not.a.token"),)
        cached = self._cache.get(caller)
        if cached is None or time.monotonic() - cached[0] > self.REFRESH_SECONDS:
            assert caller.role is not None
            ttl = timedelta(seconds=-60) if caller.kind == "expired" else timedelta(minutes=30)
            token = self._keys.token(caller.role, caller.user_id, ttl=ttl)
            cached = (time.monotonic(), bearer(token))
            self._cache[caller] = cached
        return cached[1]


# --- database snapshots ---------------------------------------------------------------------

Snapshot = dict[str, tuple[int, str]]  # table -> (rows, md5 of the ordered rows)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Database:
    """One service's database, seen through a connection of the fuzzer's own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None, "database not open"
        return self._conn

    async def snapshot(self) -> Snapshot:
        """Every table in pg_tables (outside the catalogs), listed afresh each time."""
        tables = await self.conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        parts = []
        for row in tables:
            schema, table = row["schemaname"], row["tablename"]
            name = f"{schema}.{table}"
            parts.append(
                f"SELECT {_literal(name)} AS name, count(*) AS n,"
                " md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS digest"
                f" FROM {_ident(schema)}.{_ident(table)} t {SNAPSHOT_FILTERS.get(table, '')}"
            )
        if not parts:
            return {}
        rows = await self.conn.fetch(" UNION ALL ".join(parts))
        return {r["name"]: (int(r["n"]), str(r["digest"])) for r in rows}

    async def wait_relay_idle(self, timeout: float = RELAY_IDLE_TIMEOUT) -> bool:
        """True once no outbox row is waiting for the relay (or there is no outbox)."""
        has_outbox = await self.conn.fetchval("SELECT to_regclass('outbox') IS NOT NULL")
        deadline = time.monotonic() + timeout
        while has_outbox:
            pending = await self.conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            if not pending:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


def _rows(state: tuple[int, str] | None) -> str:
    return "absent" if state is None else f"{state[0]} rows"


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """The tables that differ, with their row counts (equal counts: rows changed)."""
    return [
        f"{table}: {_rows(before.get(table))} -> {_rows(after.get(table))}"
        for table in sorted(set(before) | set(after))
        if before.get(table) != after.get(table)
    ]


# --- what the caller may see ----------------------------------------------------------------

LEAK_PATTERNS = [
    re.compile(r"Traceback"),
    re.compile(r"<class '"),
    re.compile(r'File "[^"]*", line \d+'),
    re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b"),
    re.compile(r"\b(?:asyncpg|psycopg|sqlalchemy|postgres|postgresql)\b", re.IGNORECASE),
    re.compile(r"\b(?:SELECT|INSERT INTO|UPDATE|DELETE FROM|WHERE|RETURNING|ON CONFLICT)\b"),
    re.compile(
        r"violates \S+ constraint|duplicate key value|invalid byte sequence"
        r"|invalid input syntax|value too long for type|out of range for type"
        r"|null value in column|syntax error at or near|current transaction is aborted"
        r'|relation "|column "',
        re.IGNORECASE,
    ),
]
_ECHO_PREFIXES = (None, 10, 20, 30, 40, 50, 64, 70, 80, 100, 200)


def request_strings(message: Message) -> Iterator[str]:
    """Every string value in the message, nested ones and map keys included."""
    for f, value in message.ListFields():
        values = value if f.is_repeated else [value]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            for k, v in value.items():
                if isinstance(k, str):
                    yield k
                if isinstance(v, str):
                    yield v
                elif isinstance(v, Message):
                    yield from request_strings(v)
            continue
        for v in values:
            if isinstance(v, Message):
                yield from request_strings(v)
            elif f.type == FieldDescriptor.TYPE_STRING:
                yield v


def _scrub(text: str, strings: Sequence[str]) -> str:
    """``text`` without the request's own strings echoed back (whole, cut, quoted)."""
    pieces: set[str] = set()
    for s in set(strings):
        for form in {s, s.strip(), s.lower(), s.upper(), s.strip().lower(), s.strip().upper()}:
            for k in _ECHO_PREFIXES:
                piece = form if k is None else form[:k]
                if len(piece) >= 3:
                    pieces.update((piece, repr(piece), repr(piece)[1:-1]))
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "\u2026")
    return text


def leaks(text: str, strings: Sequence[str]) -> list[str]:
    """The leak patterns ``text`` matches once the request's own strings are taken out."""
    if not any(p.search(text) for p in LEAK_PATTERNS):
        return []
    scrubbed = _scrub(text, strings)
    return [m.group(0) for p in LEAK_PATTERNS if (m := p.search(scrubbed))]


# --- one request, and the properties --------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    trailing: str
    messages: int
    elapsed: float
    waited_out: bool = False  # a stream still open at our own short deadline


@dataclass
class Exercise:
    rpc: Rpc
    caller: Caller
    request: FuzzRequest
    outcome: Outcome
    before: Snapshot
    after: Snapshot
    serving: bool
    server_errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Violation:
    prop: str  # status | leak | rows | health
    summary: str


def violations(ex: Exercise) -> list[Violation]:
    """Which of the three properties this request broke (the pure part of the check)."""
    found = []
    o = ex.outcome
    if o.code in (C.UNKNOWN, C.INTERNAL):
        found.append(Violation("status", f"answered {o.code.name}"))
    elif o.code == C.DEADLINE_EXCEEDED and not o.waited_out:
        found.append(Violation("status", f"no answer within {o.elapsed:.0f} s"))
    leaked = leaks(f"{o.details}\n{o.trailing}", list(request_strings(ex.request.message)))
    if leaked:
        found.append(Violation("leak", "the caller sees " + ", ".join(map(repr, leaked))))
    if o.code != C.OK and ex.after != ex.before:
        found.append(Violation("rows", "rejected, yet " + "; ".join(diff(ex.before, ex.after))))
    if not ex.serving:
        found.append(Violation("health", "the service no longer answers SERVING"))
    return found


@dataclass
class Failure:
    prop: str
    rpc: str
    caller: str
    code: str
    details: str
    request: str
    notes: list[str]
    full_request: str = ""  # the text format with nothing cut

    @property
    def key(self) -> tuple[str, ...]:
        return (self.prop, self.rpc, self.code, _normalise(self.details))

    def render(self) -> str:
        lines = [f"[{self.prop}] {self.rpc} as {self.caller}: {self.code} {self.details[:500]!r}"]
        lines += [f"    {note}" for note in self.notes]
        lines.append("    request (text format):")
        lines += [f"      {line}" for line in self.request.split("\n")]
        return "\n".join(lines)


def _normalise(details: str) -> str:
    """Details without the parts that vary from one request to the next."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", details)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{8,}|\d+", "#", text)
    return text[:80]


class PropertyFailed(AssertionError):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.render())
        self.failure = failure


_FAILURE_TYPES: dict[str, type[PropertyFailed]] = {}


def _failure_type(signature: str) -> type[PropertyFailed]:
    """One exception class per kind of failure: Hypothesis tells bugs apart by type."""
    cls = _FAILURE_TYPES.get(signature)
    if cls is None:
        name = "PropertyFailed_" + hashlib.sha1(signature.encode()).hexdigest()[:10]
        cls = type(name, (PropertyFailed,), {})
        _FAILURE_TYPES[signature] = cls
    return cls


def failure_of(ex: Exercise, found: list[Violation]) -> PropertyFailed:
    o = ex.outcome
    failure = Failure(
        prop=found[0].prop,
        rpc=ex.rpc.label,
        caller=ex.caller.name,
        code=o.code.name,
        details=o.details,
        request=ex.request.describe(),
        full_request=ex.request.describe(limit=10**9),
        notes=[f"{v.prop}: {v.summary}" for v in found]
        + [f"server log: {e}" for e in ex.server_errors[:3]],
    )
    server = ex.server_errors[0].split(":")[0] if ex.server_errors else ""
    signature = "|".join((*failure.key, server))
    return _failure_type(signature)(failure)


class _ErrorLog(logging.Handler):
    """Keeps a one-line summary of every error the services log (with its exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        summary = f"{record.name}: {record.getMessage()[:200]}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            frames = traceback.extract_tb(error.__traceback__)
            ours = [f for f in frames if f.filename.startswith(_REPO)] or frames
            where = ""
            if ours:
                last = ours[-1]
                where = f" at {last.filename.removeprefix(_REPO)}:{last.lineno} in {last.name}"
            summary = f"{type(error).__module__}.{type(error).__name__}: {error}"[:300] + where
        self.lines.append(summary)


_REPO = str(launcher.REPO_ROOT) + "/"


def _identity(data: bytes) -> bytes:
    return data


# --- the fuzzer -----------------------------------------------------------------------------


@dataclass
class RpcStats:
    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # spent sending, snapshotting and checking (not generating)


class Fuzzer:
    """``async with Fuzzer(stack, keys) as fuzzer: failures = await fuzzer.run(...)``."""

    def __init__(self, stack: Stack, keys: TestKeys, *, services: Sequence[str] = SERVICES) -> None:
        self.stack = stack
        self.keys = keys
        self.service_names = [s for s in SERVICES if s in services]
        self.running: dict[str, RunningService] = {}
        self.databases: dict[str, Database] = {}
        self.stats: dict[str, RpcStats] = {}
        self.tokens = Tokens(keys)
        self.vocabulary = Vocabulary()
        # Until _seed adds real users: callers whose ids nobody has.
        self.callers: list[Caller] = [
            Caller("none", "none"),
            Caller("customer-nobody", "token", Role.CUSTOMER, NOBODY),
            Caller("admin-nobody", "token", Role.ADMIN, NOBODY_ADMIN),
            Caller("expired-admin", "expired", Role.ADMIN, NOBODY_ADMIN),
            Caller("malformed", "malformed"),
        ]
        self._resources = contextlib.AsyncExitStack()
        self._errors = _ErrorLog()
        self._callables: dict[str, Callable[..., Any]] = {}

    async def __aenter__(self) -> Fuzzer:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def rpcs(self) -> list[Rpc]:
        return [r for r in discover() if r.service in self.running]

    async def start(self) -> None:
        root = logging.getLogger()
        root.addHandler(self._errors)
        self._resources.callback(root.removeHandler, self._errors)
        if root.level > logging.ERROR or root.level == logging.NOTSET:
            self._resources.callback(root.setLevel, root.level)
            root.setLevel(logging.WARNING)  # errors must reach the handler above
        for service in self.service_names:
            await recreate_database(self.stack, service)
        for service in self.service_names:
            definition = importlib.import_module(f"services.{service}.main").SERVICE
            running = await self._resources.enter_async_context(
                run_service(definition, self.stack, self.keys, **self._overrides(service))
            )
            self.running[service] = running
            database = Database(running.dsn)
            await database.open()
            self._resources.push_async_callback(database.close)
            self.databases[service] = database
        if set(self.service_names) == set(SERVICES):
            await self._seed()
        for database in self.databases.values():
            await database.wait_relay_idle()

    def _overrides(self, service: str) -> dict[str, Any]:
        # No saga: nothing but the request under test writes (the outbox relay aside).
        overrides: dict[str, Any] = {"consume_events": False}
        if service == "user":
            # No signing key falls due for removal (a background write) during a run.
            overrides["token_ttl_seconds"] = 30 * 86_400
        if service == "order":
            overrides["saga_timeout_seconds"] = 86_400
        return overrides

    async def close(self) -> None:
        await self._resources.aclose()

    async def _seed(self) -> None:
        """The demo data plus a few more states, and a vocabulary and callers from it."""
        async with launcher.open_directory(self.stack) as directory:
            mine = {r.host.settings.instance_id for r in self.running.values()}
            await asyncio.wait_for(
                directory.wait_until(
                    lambda: (
                        mine <= {i.instance_id for s in SERVICES for i in directory.instances(s)}
                    )
                ),
                15,
            )
            clients = ServiceClients(directory, ClientTLS.operator(self.stack.tls_dir))
            try:
                products = await seed(clients, self.stack.pg_service_dsn("user"))
                admin = ShopClient(clients)
                admin_id = uuid.UUID((await admin.login(*ADMIN)).user.user_id)
                customer = ShopClient(clients)
                customer_id = uuid.UUID((await customer.login(*CUSTOMER)).user.user_id)
                admin_md = bearer(admin.token)
                catalog = product_pb2_grpc.ProductServiceStub(self.running["product"].channel)
                for sku, status, price, stock in (
                    ("FUZZ-DRAFT", product_pb2.PRODUCT_STATUS_DRAFT, 500, 0),
                    ("FUZZ-ARCHIVED", product_pb2.PRODUCT_STATUS_ARCHIVED, 500, 0),
                    ("FUZZ-PRICEY", product_pb2.PRODUCT_STATUS_ACTIVE, MAX_AMOUNT_MINOR, 10),
                ):
                    reply = await catalog.CreateProduct(
                        product_pb2.CreateProductRequest(
                            sku=sku,
                            title=sku.title(),
                            price=money_pb2.Money(amount_minor=price, currency="USD"),
                            status=status,
                        ),
                        metadata=admin_md,
                    )
                    products[sku] = reply.product.product_id
                    await admin.set_stock(sku, stock)
                pending = await customer.place_order([(products["DEMO-TSHIRT"], 1)], "fuzz-seed-1")
                cancelled = await customer.place_order(
                    [(products["DEMO-MUG"], 2), (products["DEMO-HOODIE"], 1)], "fuzz-seed-2"
                )
                orders = order_pb2_grpc.OrderServiceStub(self.running["order"].channel)
                await orders.CancelOrder(
                    order_pb2.CancelOrderRequest(order_id=cancelled.order_id),
                    metadata=bearer(customer.token),
                )
                product_page = await catalog.ListProducts(
                    product_pb2.ListProductsRequest(page_size=1), metadata=admin_md
                )
                order_page = await orders.ListOrders(
                    order_pb2.ListOrdersRequest(page_size=1), metadata=bearer(customer.token)
                )
            finally:
                await clients.close()
        nobody, nobody_admin = NOBODY, NOBODY_ADMIN
        self.callers = [
            Caller("none", "none"),
            *[Caller("customer", "token", Role.CUSTOMER, customer_id)] * 4,
            *[Caller("admin", "token", Role.ADMIN, admin_id)] * 4,
            Caller("customer-nobody", "token", Role.CUSTOMER, nobody),
            Caller("admin-nobody", "token", Role.ADMIN, nobody_admin),
            Caller("expired-admin", "expired", Role.ADMIN, admin_id),
            Caller("malformed", "malformed"),
        ]
        self.vocabulary = Vocabulary(
            strings={
                "product_id": [*products.values(), str(nobody)],
                "order_id": [pending.order_id, cancelled.order_id, str(nobody)],
                "user_id": [str(admin_id), str(customer_id), str(nobody)],
                "*_id": [str(nobody), "not-a-uuid"],
                "sku": [*products, "NO-SUCH-SKU", "A1"],
                "email": [ADMIN[0], CUSTOMER[0], "Demo@Shop.Local", "new@example.com", "x@y.io"],
                "password": [ADMIN[1], CUSTOMER[1], "wrong-password-1", "12345678"],
                "currency": ["USD", "USD", "USD", "USD", "EUR", "usd", "US", "XXX"],
                "idempotency_key": ["seed-demo-wallet", "fuzz-seed-1", "fuzz-seed-2", "k"],
                "*page_token": [product_page.next_page_token, order_page.next_page_token],
                "title": ["A thing", "Reference T-shirt"],
                "description": ["Soft and warm."],
            },
            fresh={
                "email": st.builds("fuzz-{}@example.com".format, st.uuids().map(lambda u: u.hex)),
                "sku": st.builds("FZ-{}".format, st.uuids().map(lambda u: u.hex[:12].upper())),
                "*_key": st.uuids().map(str),
            },
            integers={
                "quantity": [1, 2, 100, 101],
                "page_size": [1, 2, 20, 100, 101],
                "amount_minor": [1, 1999, MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR + 1],
                "available": [0, 1, 100, 1_000_000_000, 1_000_000_001],
            },
        )

    # --- one request ---

    def _callable(self, rpc: Rpc) -> Callable[..., Any]:
        made = self._callables.get(rpc.path)
        if made is None:
            channel = self.running[rpc.service].channel
            kinds: dict[tuple[bool, bool], Callable[..., Any]] = {
                (False, False): channel.unary_unary,
                (False, True): channel.unary_stream,
                (True, False): channel.stream_unary,
                (True, True): channel.stream_stream,
            }
            made = kinds[(rpc.client_streaming, rpc.server_streaming)](
                rpc.path, request_serializer=_identity, response_deserializer=rpc.output.FromString
            )
            self._callables[rpc.path] = made
        return made

    async def invoke(self, rpc: Rpc, caller: Caller, wire: bytes) -> Outcome:
        """Sends one request; a client-streaming RPC gets it as a stream of one message."""
        metadata = self.tokens.metadata(caller)
        request: Any = iter([wire]) if rpc.client_streaming else wire
        deadline = STREAM_DEADLINE if rpc.server_streaming else UNARY_DEADLINE
        started = time.monotonic()
        call = self._callable(rpc)(request, metadata=metadata, timeout=deadline)
        messages = 0
        try:
            if rpc.server_streaming:
                async for _ in call:
                    messages += 1
                    if messages >= MAX_STREAM_MESSAGES:
                        call.cancel()
                        break
                code, details = await call.code(), await call.details()
                trailing = await call.trailing_metadata()
            else:
                await call
                code, details, trailing = C.OK, "", await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            code, details, trailing = error.code(), error.details() or "", error.trailing_metadata()
        elapsed = time.monotonic() - started
        if messages >= MAX_STREAM_MESSAGES and code == C.CANCELLED:
            code = C.OK  # we hung up on a talkative stream
        return Outcome(
            code=code,
            details=details or "",
            trailing=" ".join(f"{k}={v!r}" for k, v in (trailing or ())),
            messages=messages,
            elapsed=elapsed,
            waited_out=rpc.server_streaming
            and code == C.DEADLINE_EXCEEDED
            and elapsed >= STREAM_DEADLINE * 0.9,
        )

    async def serving(self, service: str) -> bool:
        host = self.running[service].host
        instance = Instance(service, host.settings.instance_id, host.address, "", 0)
        return await launcher.is_serving(instance, self.running[service].tls, HEALTH_TIMEOUT)

    async def exercise(self, rpc: Rpc, caller: Caller, request: FuzzRequest) -> Exercise:
        started = time.monotonic()
        database = self.databases[rpc.service]
        if not await database.wait_relay_idle():
            raise RuntimeError(f"the outbox of {rpc.service} is not drained: is Kafka up?")
        before = await database.snapshot()
        mark = len(self._errors.lines)
        outcome = await self.invoke(rpc, caller, request.wire())
        after = before if outcome.code == C.OK else await database.snapshot()
        serving = await self.serving(rpc.service)
        stats = self.stats.setdefault(rpc.label, RpcStats())
        stats.requests += 1
        stats.codes[outcome.code.name] += 1
        stats.seconds += time.monotonic() - started
        return Exercise(
            rpc, caller, request, outcome, before, after, serving, self._errors.lines[mark:]
        )

    # --- Hypothesis ---

    def _fuzz_one(
        self, loop: asyncio.AbstractEventLoop, rpc: Rpc, examples: int, seed: int
    ) -> list[Failure]:
        """One Hypothesis run over ``rpc`` (in this worker thread); the shrunk failures."""
        cases = st.tuples(
            st.sampled_from(self.callers), MessageStrategies(self.vocabulary).requests(rpc.input)
        )

        def check(case: tuple[Caller, FuzzRequest]) -> None:
            caller, request = case
            future = asyncio.run_coroutine_threadsafe(self.exercise(rpc, caller, request), loop)
            ex = future.result()
            found = violations(ex)
            if found:
                raise failure_of(ex, found)

        test = settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=(Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            report_multiple_bugs=True,
            print_blob=False,
        )(given(cases)(check))
        try:
            hypothesis_seed(seed)(test)()
        except BaseException as error:  # sorted out just below
            return _property_failures(error)
        return []

    async def run(
        self,
        *,
        examples: int,
        seed: int,
        minutes: float = 0.0,
        rpcs: Sequence[Rpc] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> list[Failure]:
        """``examples`` per RPC, round after round with new seeds until ``minutes`` are
        up (one round at least); returns every distinct failure found, shrunk."""
        loop = asyncio.get_running_loop()
        chosen = list(rpcs or self.rpcs())
        return await asyncio.to_thread(
            self._run_rounds, loop, chosen, examples, seed, minutes, progress
        )

    def _run_rounds(
        self,
        loop: asyncio.AbstractEventLoop,
        rpcs: list[Rpc],
        examples: int,
        seed: int,
        minutes: float,
        progress: Callable[[str], None] | None,
    ) -> list[Failure]:
        ends = time.monotonic() + minutes * 60
        found: dict[tuple[str, ...], Failure] = {}
        round_ = 0
        while True:
            for index, rpc in enumerate(rpcs):
                if round_ and time.monotonic() >= ends:
                    break
                round_seed = (seed * 1_000_003 + round_ * 1_009 + index) % 2**32
                for failure in self._fuzz_one(loop, rpc, examples, round_seed):
                    found.setdefault(failure.key, failure)
            round_ += 1
            if progress is not None:
                sent = sum(s.requests for s in self.stats.values())
                left = max(0.0, ends - time.monotonic())
                progress(
                    f"round {round_}: {sent} requests so far, {len(found)} failures,"
                    f" {left / 60:.1f} min left"
                )
            if time.monotonic() >= ends:
                return list(found.values())

    def report(self) -> str:
        lines = [f"{'rpc':<32} {'requests':>8} {'seconds':>8}  status codes"]
        for label in sorted(self.stats):
            s = self.stats[label]
            codes = " · ".join(f"{code} {n}" for code, n in s.codes.most_common())
            lines.append(f"{label:<32} {s.requests:>8} {s.seconds:>8.1f}  {codes}")
        total = sum(s.requests for s in self.stats.values())
        seconds = sum(s.seconds for s in self.stats.values())
        lines.append(f"{'total':<32} {total:>8} {seconds:>8.1f}")
        return "\n".join(lines)


def _property_failures(error: BaseException) -> list[Failure]:
    """The PropertyFailed inside what Hypothesis raised; anything else is re-raised."""
    if isinstance(error, PropertyFailed):
        return [error.failure]
    if isinstance(error, BaseExceptionGroup):
        failures = []
        for inner in error.exceptions:
            failures += _property_failures(inner)
        if failures:
            return failures
    raise error
