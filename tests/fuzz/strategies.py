"""Hypothesis strategies of protobuf requests, built from the message descriptors.

Nothing here names a message or a field of this project's protos: the shape of
every request (scalars of each type, enums, nested messages, repeated and map
fields, proto3 ``optional`` presence, oneofs) comes from its ``Descriptor``, so
a field added later is fuzzed with no new code. What a field *means* comes in
only through a ``Vocabulary``: realistic values keyed by field name (``sku``,
``email``, ``*_id`` ...), taken from a seeded system, so that a good share of
the requests get past validation and into the database code.

Every string field mixes realistic values, realistic values with something
nasty spliced in, NUL and other control characters, very long strings,
astral-plane and right-to-left text and plain random unicode. Integers go to
the type's extremes; enums get unknown numbers; repeated fields come empty,
small, full of duplicates or thousands long; ``*_id`` fields get valid UUIDs of
nothing; ``*page_token`` fields get random bytes (as latin-1, base64, or base64
of JSON cursors). ``FuzzRequest.tail`` can also append an invalid UTF-8 value
for a string field on the wire, which a message object cannot hold.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

Strategy = st.SearchStrategy

# Characters that break naive string handling somewhere: NUL and the other C0
# and C1 controls, DEL, line and paragraph separators, zero-width and bidi
# controls (right-to-left marks and overrides), BOM, non-characters, combining
# marks, astral-plane code points up to the very last one.
NASTY_CHARACTERS = (
    "\x00",
    "\x01",
    "\x07",
    "\x08",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x80",
    "\x85",
    "\x9f",
    "\xa0",
    "\u0301",
    "\u061c",
    "\u200b",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u2028",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ufeff",
    "\ufffd",
    "\ufffe",
    "\uffff",
    "\U0001d11e",
    "\U0001f4a9",
    "\U000e0001",
    "\U0010ffff",
    "'",
    '"',
    "\\",
    "%",
    "_",
    "$1",
)
# Just past the limits services tend to use, and far past them (10^5 chars).
LONG_LENGTHS = (33, 65, 101, 129, 201, 255, 256, 2001, 4097, 65_536, 100_000)
# Sizes of repeated fields: the limits' neighbours, and thousands.
BIG_COUNTS = (49, 50, 51, 99, 100, 101, 1_000, 5_000)
# Bytes that are not UTF-8: a lone continuation byte, an overlong NUL, a UTF-16
# surrogate, a code point above U+10FFFF, a truncated sequence.
INVALID_UTF8 = (b"\xff", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82")
MAX_DEPTH = 4

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Vocabulary:
    """Realistic values by field name.

    ``values_for(name)`` looks up the name itself, its singular (``skus`` ->
    ``sku``, ``product_ids`` -> ``product_id``) and the suffix keys ``*_id``,
    ``*_key`` and ``*page_token`` that it ends with.
    """

    strings: Mapping[str, Sequence[str]] = field(default_factory=dict)
    integers: Mapping[str, Sequence[int]] = field(default_factory=dict)
    # Values made fresh for each request (e.g. an email nobody registered yet).
    fresh: Mapping[str, Strategy[str]] = field(default_factory=dict)

    @staticmethod
    def keys_for(name: str) -> list[str]:
        keys = [name]
        if name.endswith("s"):
            keys.append(name[:-1])
        for suffix in ("_id", "_key", "page_token"):
            if any(k.endswith(suffix) for k in keys):
                keys.append("*" + suffix)
        return keys

    def values_for(self, name: str) -> list[str]:
        return _union(self.strings.get(k, ()) for k in self.keys_for(name))

    def integers_for(self, name: str) -> list[int]:
        return _union(self.integers.get(k, ()) for k in self.keys_for(name))

    def realistic(self, name: str) -> Strategy[str] | None:
        """The known values and the fresh ones for this field name, if there are any."""
        options: list[Strategy[str]] = [
            self.fresh[k] for k in self.keys_for(name) if k in self.fresh
        ]
        known = self.values_for(name)
        if known:
            options = [st.sampled_from(known), *options]
        return st.one_of(options) if options else None


def weighted(*options: tuple[int, Strategy[Any]]) -> Strategy[Any]:
    """One of the strategies, with these odds; the first is the one shrinking goes to.

    (``st.one_of`` merges repeated branches, so repeating one does not weigh it.)
    """
    pool = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def _union(groups: Any) -> list[Any]:
    return list(dict.fromkeys(v for group in groups for v in group))


@dataclass(frozen=True)
class FuzzRequest:
    """A request message, plus optionally one string field's value as raw, non-UTF-8 bytes."""

    message: Message
    tail: tuple[str, bytes] | None = None  # (field name, bytes) appended on the wire

    def wire(self) -> bytes:
        data = self.message.SerializeToString()
        if self.tail is not None:
            name, raw = self.tail
            number = self.message.DESCRIPTOR.fields_by_name[name].number
            data += _varint(number << 3 | 2) + _varint(len(raw)) + raw
        return data

    def describe(self, limit: int = 300) -> str:
        """Text format, one field per line; very long lines are cut and their length given."""
        text = text_format.MessageToString(self.message, as_utf8=False) or "(empty message)\n"
        lines = []
        for line in text.rstrip("\n").split("\n"):
            if len(line) > limit:
                line = f"{line[:limit]}... ({len(line)} chars in all)"
            lines.append(line)
        if self.tail is not None:
            lines.append(f"{self.tail[0]}: <raw bytes {self.tail[1]!r} on the wire, not UTF-8>")
        return "\n".join(lines)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _is_repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def _is_map(f: FieldDescriptor) -> bool:
    return bool(
        _is_repeated(f) and f.message_type is not None and f.message_type.GetOptions().map_entry
    )


def _in_real_oneof(f: FieldDescriptor) -> bool:
    """Members of a declared oneof; proto3 ``optional`` makes a synthetic one per field."""
    oneof = f.containing_oneof
    return oneof is not None and not (len(oneof.fields) == 1 and oneof.name == "_" + f.name)


# --- strings -------------------------------------------------------------------------------


def _repeat(piece: str, length: int) -> str:
    piece = piece or "x"
    return (piece * (length // len(piece) + 1))[:length]


def _splice(value: str, insert: str, where: int, mode: int) -> str:
    """``value`` with ``insert`` put somewhere, or otherwise bent out of shape."""
    at = where % (len(value) + 1)
    return [
        value[:at] + insert + value[at:],
        insert + value,
        value + insert,
        f"  {value}  ",
        value.upper(),
        value.lower(),
        value[:at],
        value * 2,
        _repeat(value, 100_000),
    ][mode % 9]


nasty_piece = st.sampled_from(NASTY_CHARACTERS)
nasty_text = st.lists(nasty_piece | st.text(max_size=3), min_size=1, max_size=6).map("".join)
long_text = st.builds(
    _repeat, nasty_piece | st.text(min_size=1, max_size=4), st.sampled_from(LONG_LENGTHS)
)
astral_text = st.text(st.characters(min_codepoint=0x10000), min_size=1, max_size=12)
rtl_text = st.lists(
    st.characters(min_codepoint=0x0590, max_codepoint=0x06FF) | st.sampled_from("\u200f\u202e"),
    min_size=1,
    max_size=12,
).map("".join)


def _uuid_variants(u: uuid.UUID, form: int) -> str:
    s = str(u)
    return [s, s.upper(), "{" + s + "}", u.hex, u.urn, s + " ", s[:-1], s + "0"][form % 8]


uuid_text = st.builds(
    _uuid_variants,
    st.uuids() | st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]),
    st.integers(0, 7),
)


def _b64(data: bytes, urlsafe: bool) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()


_offsets: Strategy[Any] = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23))),
)
_iso_moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_offsets
).map(datetime.isoformat)
_extreme_moments = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00-14:00",
        "9999-12-31T23:59:59.999999-14:00",
        "9999-12-31T23:59:59.999999+00:00",
        "2024-02-30T00:00:00+00:00",
        "",
    ]
)
json_values: Strategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | _iso_moments
    | _extreme_moments
    | uuid_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
json_cursor = st.fixed_dictionaries(
    {}, optional={"t": json_values | _iso_moments, "id": json_values | uuid_text}
) | st.dictionaries(st.text(max_size=3), json_values, max_size=3)


def _json_token(value: Any, urlsafe: bool) -> str:
    return _b64(json.dumps(value).encode(), urlsafe)


# Shaped like the keyset cursors services issue ({"t": time, "id": uuid}), with odd parts.
cursor_like = st.fixed_dictionaries(
    {
        "t": weighted((3, _iso_moments), (2, _extreme_moments), (1, json_values)),
        "id": weighted((3, st.uuids().map(str)), (1, uuid_text), (1, json_values)),
    }
)


def _nested_token(shape: tuple[str, str, str], depth: int, urlsafe: bool) -> str:
    """Base64 of JSON nested ``depth`` deep: small on the wire, deep for a parser."""
    opening, middle, closing = shape
    return _b64((opening * depth + middle + closing * depth).encode(), urlsafe)


nested_token = st.builds(
    _nested_token,
    st.sampled_from([("[", "0", "]"), ('{"t":', "0", "}"), ('{"id":[', "0", "]}")]),
    st.sampled_from((1_001, 2_001, 4_097, 10, 999)),
    st.booleans(),
)
page_token_text = weighted(
    (2, nested_token),
    (2, st.builds(_json_token, cursor_like, st.booleans())),
    (1, st.binary(max_size=64).map(lambda b: b.decode("latin-1"))),
    (1, st.builds(_b64, st.binary(max_size=64), st.booleans())),
    (1, st.builds(_json_token, json_cursor, st.booleans())),
    (1, st.builds(_json_token, json_values, st.booleans())),
    (1, st.text(st.characters(codec="ascii"), max_size=40)),
)


def _short_strings(realistic: Strategy[str] | None) -> Strategy[str]:
    """Cheap values for elements of huge repeated fields."""
    options: list[Strategy[str]] = [nasty_text, st.text(max_size=8), uuid_text]
    if realistic is not None:
        options.insert(0, realistic)
    return st.one_of(options)


plain_text = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=16)


def tame_string_strategy(name: str, vocabulary: Vocabulary) -> Strategy[str]:
    """What a well-behaved client would send: known values, valid UUIDs, plain words."""
    realistic = vocabulary.realistic(name)
    options: list[Strategy[str]] = [plain_text, st.just("")]
    if name.endswith(("_id", "_ids")):
        options.append(st.uuids().map(str))
    if name.endswith("page_token"):
        options.append(st.builds(_json_token, cursor_like, st.booleans()))
    if realistic is None:
        return st.one_of(options)
    return weighted((4, realistic), (1, st.one_of(options)))


def string_strategy(name: str, vocabulary: Vocabulary, *, small: bool = False) -> Strategy[str]:
    realistic = vocabulary.realistic(name)
    if small:
        return _short_strings(realistic)
    options: list[Strategy[str]] = [
        nasty_text,
        long_text,
        astral_text,
        rtl_text,
        st.text(),
        st.text(max_size=300),
    ]
    generic = st.one_of(options)
    # What the field's name says it holds, shaped wrong: as likely as anything generic.
    shaped: Strategy[str] | None = None
    if name.endswith(("_id", "_ids")):
        shaped = uuid_text
    if name.endswith("page_token"):
        shaped = page_token_text
    if realistic is None:
        return generic if shaped is None else weighted((1, generic), (1, shaped))
    mutated = st.builds(
        _splice, realistic, nasty_piece | nasty_text, st.integers(0, 10_000), st.integers(0, 8)
    )
    if shaped is None:
        return weighted((1, realistic), (2, mutated), (2, generic))
    return weighted((1, realistic), (2, mutated), (2, generic), (2, shaped))


# --- numbers, enums ------------------------------------------------------------------------


def integer_strategy(f: FieldDescriptor, vocabulary: Vocabulary) -> Strategy[int]:
    low, high = INT_RANGES[f.type]
    edges = [v for v in (low, low + 1, -1, 0, 1, high - 1, high) if low <= v <= high]
    edges += [v for v in (2**31 - 1, 2**31, 2**53 + 1, 10**15 + 1) if low <= v <= high]
    options = [
        st.sampled_from(sorted(set(edges))),
        st.integers(max(low, -3), min(high, 120)),
        st.integers(low, high),
    ]
    realistic = [v for v in vocabulary.integers_for(f.name) if low <= v <= high]
    if realistic:
        return weighted((1, st.sampled_from(realistic)), (2, st.one_of(options)))
    return st.one_of(options)


def enum_strategy(enum: EnumDescriptor) -> Strategy[int]:
    known = sorted(v.number for v in enum.values)
    if getattr(enum, "is_closed", False):  # proto2 enums refuse unknown numbers
        return st.sampled_from(known)
    unknown = st.sampled_from([max(known) + 1, -1, 2**31 - 1, -(2**31)]) | st.integers(
        -(2**31), 2**31 - 1
    )
    return weighted((2, st.sampled_from(known)), (1, unknown))


# --- messages ------------------------------------------------------------------------------


class MessageStrategies:
    """Request strategies built from descriptors, cached per (type, depth, mode).

    Two modes: *wild* messages have every field adversarial; *tame* ones have
    every field as a well-behaved client would send it, except that each field
    (at every depth) turns wild one time in ``WILD_ODDS``. Most requests are
    tame, so most get past validation, into the handlers and the database with
    one odd value; the wild ones test the edge.
    """

    WILD_ODDS = 6

    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or Vocabulary()
        self._cache: dict[tuple[str, int, bool, bool], Strategy[Message]] = {}

    def requests(self, descriptor: Descriptor) -> Strategy[FuzzRequest]:
        """Requests: two in three tame, one in twelve with a non-UTF-8 string on the wire."""
        messages = weighted((2, self.message(descriptor, tame=True)), (1, self.message(descriptor)))
        strings = [f.name for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]
        plain = st.builds(FuzzRequest, messages)
        if not strings:
            return plain
        tails = st.tuples(st.sampled_from(strings), st.sampled_from(INVALID_UTF8))
        return weighted((11, plain), (1, st.builds(FuzzRequest, messages, tails)))

    def message(
        self, descriptor: Descriptor, depth: int = 0, *, small: bool = False, tame: bool = False
    ) -> Strategy[Message]:
        key = (descriptor.full_name, depth, small, tame)
        if key not in self._cache:
            # Deferred, so a recursive message type refers to itself without looping here.
            self._cache[key] = st.deferred(lambda: self._build(descriptor, depth, small, tame))
        return self._cache[key]

    def _build(
        self, descriptor: Descriptor, depth: int, small: bool, tame: bool
    ) -> Strategy[Message]:
        cls = message_class(descriptor)
        setters: list[tuple[FieldDescriptor, Strategy[Any]]] = []
        oneofs: dict[str, list[FieldDescriptor]] = {}
        for f in descriptor.fields:
            if _in_real_oneof(f):
                assert f.containing_oneof is not None
                oneofs.setdefault(f.containing_oneof.name, []).append(f)
                continue
            wild = self._field(f, depth, small)
            if tame:
                setters.append(
                    (f, weighted((self.WILD_ODDS - 1, self._tame_field(f, depth)), (1, wild)))
                )
            else:
                setters.append((f, wild))

        @st.composite
        def build(draw: Callable[[Strategy[Any]], Any]) -> Message:
            msg = cls()
            for f, strategy in setters:
                _assign(msg, f, draw(strategy))
            for members in oneofs.values():
                chosen = draw(st.none() | st.sampled_from(members))
                if chosen is not None:
                    value = (
                        self._tame_single(chosen, depth)
                        if tame
                        else self._single(chosen, depth, small)
                    )
                    _assign(msg, chosen, draw(value))
            return msg

        return build()

    # --- wild ---

    def _field(self, f: FieldDescriptor, depth: int, small: bool) -> Strategy[Any]:
        if _is_map(f):
            assert f.message_type is not None
            key_f = f.message_type.fields_by_name["key"]
            value_f = f.message_type.fields_by_name["value"]
            if depth >= MAX_DEPTH:
                return st.just({})
            return st.dictionaries(
                self._single(key_f, depth + 1, True),
                self._single(value_f, depth + 1, True),
                max_size=5,
            )
        if _is_repeated(f):
            return self._repeated(f, depth, small)
        if f.type == FieldDescriptor.TYPE_MESSAGE or f.has_presence:
            # Absent, or present (a message may be present and empty).
            return st.none() | self._single(f, depth, small)
        return self._single(f, depth, small)

    def _repeated(self, f: FieldDescriptor, depth: int, small: bool) -> Strategy[list[Any]]:
        if depth >= MAX_DEPTH:
            return st.just([])
        element = self._single(f, depth, small)
        cheap = self._single(f, depth, True)
        options = [
            st.just([]),
            st.lists(element, min_size=1, max_size=5),
            st.lists(element, min_size=1, max_size=5),
            # Duplicates: one value two to four times, after a few others.
            st.builds(
                lambda head, x, k: [*head, *([x] * k)],
                st.lists(element, max_size=2),
                element,
                st.integers(2, 4),
            ),
        ]
        if not small:
            counts = st.sampled_from(BIG_COUNTS)
            # Huge: one cheap value repeated, or distinct cheap values, thousands long.
            options.append(st.builds(lambda x, n: [x] * n, cheap, counts))
            options.append(
                st.builds(
                    _distinct_many, st.lists(cheap, min_size=1, max_size=3), counts, st.just(f)
                )
            )
        return st.one_of(options)

    def _single(self, f: FieldDescriptor, depth: int, small: bool) -> Strategy[Any]:
        """A value for one element of the field (the field itself when not repeated)."""
        t = f.type
        if t in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            assert f.message_type is not None
            if depth >= MAX_DEPTH:
                return st.just(message_class(f.message_type)())
            return self.message(f.message_type, depth + 1, small=small)
        if t == FieldDescriptor.TYPE_STRING:
            return string_strategy(f.name, self.vocabulary, small=small)
        if t == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64) | st.builds(
                lambda b, n: (b or b"\0") * n, st.binary(max_size=4), st.sampled_from(LONG_LENGTHS)
            )
        if t == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if t == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            return enum_strategy(f.enum_type)
        if t == FieldDescriptor.TYPE_DOUBLE:
            return st.floats()
        if t == FieldDescriptor.TYPE_FLOAT:
            return st.floats(width=32)
        return integer_strategy(f, self.vocabulary)

    # --- tame ---

    def _tame_field(self, f: FieldDescriptor, depth: int) -> Strategy[Any]:
        if _is_map(f) or depth >= MAX_DEPTH:
            return st.just({} if _is_map(f) else [] if _is_repeated(f) else None)
        if _is_repeated(f):
            return st.lists(self._tame_single(f, depth), min_size=1, max_size=3) | st.just([])
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            return self._tame_single(f, depth)
        if f.has_presence:
            return st.none() | self._tame_single(f, depth)
        return self._tame_single(f, depth)

    def _tame_single(self, f: FieldDescriptor, depth: int) -> Strategy[Any]:
        t = f.type
        if t in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            assert f.message_type is not None
            return self.message(f.message_type, depth + 1, tame=True)
        if t == FieldDescriptor.TYPE_STRING:
            return tame_string_strategy(f.name, self.vocabulary)
        if t == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            return st.sampled_from(sorted(v.number for v in f.enum_type.values))
        if t in INT_RANGES:
            low, high = INT_RANGES[t]
            realistic = [v for v in self.vocabulary.integers_for(f.name) if low <= v <= high]
            plain = st.integers(max(low, 0), min(high, 100))
            return weighted((2, st.sampled_from(realistic)), (1, plain)) if realistic else plain
        return self._single(f, depth, True)


def _distinct_many(seeds: list[Any], count: int, f: FieldDescriptor) -> list[Any]:
    """``count`` values that differ from each other where the type allows it."""
    if f.type == FieldDescriptor.TYPE_STRING:
        if f.name.endswith(("_id", "_ids")):
            return [str(uuid.UUID(int=i + 1)) for i in range(count)]
        return [f"{seeds[i % len(seeds)]}{i}" for i in range(count)]
    if f.type in INT_RANGES:
        low, high = INT_RANGES[f.type]
        return [max(low, min(high, i)) for i in range(count)]
    return [seeds[i % len(seeds)] for i in range(count)]


def _assign(msg: Message, f: FieldDescriptor, value: Any) -> None:
    if value is None:
        return
    target = getattr(msg, f.name)
    if _is_map(f):
        assert f.message_type is not None
        value_is_message = f.message_type.fields_by_name["value"].message_type is not None
        for k, v in value.items():
            if value_is_message:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif _is_repeated(f):
        target.extend(value)
    elif isinstance(value, Message):
        target.CopyFrom(value)
        target.SetInParent()
    else:
        setattr(msg, f.name, value)
