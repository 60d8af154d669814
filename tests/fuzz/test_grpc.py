"""Hypothesis over the proto messages of the gRPC Search service (issue 17): every rpc gets
requests built from its input message's descriptor (every field, nested messages, maps, oneofs,
out-of-range numbers, odd strings and bytes) against the real gateway over loopback. No call may
end UNKNOWN or INTERNAL, and every error must be one the server mapped itself: its trailing
metadata names the ErrorType, and the status is that type's in service/rpc/status.py."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.errors import ErrorType
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import DETAIL_KEY, GRPC_STATUS, TYPE_KEY
from tests.fuzz.conftest import Fuzzed
from tests.service.gateway.conftest import COLOURS, png

MAX_EXAMPLES = 100
SERVICE = pb.DESCRIPTOR.services_by_name["Search"]
METHODS = sorted(m.name for m in SERVICE.methods)
# SearchRequest's four query fields are not a oneof (two set is refused): a random subset of them
# is mostly that refusal, so Search is fuzzed a second time with exactly one kept.
QUERIES = ("text", "image", "image_url", "item_id")
ONE_QUERY = "Search/one-query"
# Statuses that say the server failed rather than the request: never expected.
UNMAPPED = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
Type = FieldDescriptor

# Values the service gives meaning to, mixed into the random ones so that calls get past the
# first check: modes, ids of the seeded items, a real image, hostile paths and URLs.
WORDS = [
    "",
    "media",
    "auto",
    "image",
    "caption",
    "description",
    "hybrid",
    "video",
    "kind",
    "tags",
    "item-red",
    "item-blue",
    "a red square",
    "../../etc/passwd",
    "/",
    "http://127.0.0.1:1/x.png",
    "https://example.invalid/a.jpg",
    '{"id": "x", "description": "a"}',
    "{",
    "\x00",
    "é" * 300,
]
IMAGES = [png(COLOURS["red"]), b"", b"\x89PNG\r\n\x1a\n", b"GIF89a" + bytes(20)]


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == Type.TYPE_STRING:
        return st.one_of(st.sampled_from(WORDS), st.text(max_size=40))
    if kind == Type.TYPE_BYTES:
        return st.one_of(st.sampled_from(IMAGES), st.binary(max_size=64))
    if kind == Type.TYPE_BOOL:
        return st.booleans()
    if kind in (Type.TYPE_DOUBLE, Type.TYPE_FLOAT):
        return st.floats(width=64 if kind == Type.TYPE_DOUBLE else 32)
    if kind == Type.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    bits = 64 if kind in (Type.TYPE_INT64, Type.TYPE_UINT64, Type.TYPE_SINT64) else 32
    low = (
        0 if kind in (Type.TYPE_UINT32, Type.TYPE_UINT64, Type.TYPE_FIXED32) else -(2 ** (bits - 1))
    )
    high = 2**bits - 1 if low == 0 else 2 ** (bits - 1) - 1
    return st.one_of(
        st.integers(-3, 200).filter(lambda n: low <= n <= high), st.integers(low, high)
    )


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type: any subset of its fields set, at most one per oneof."""
    cls = message_factory.GetMessageClass(descriptor)
    # proto3 `optional` fields sit in synthetic oneofs named `_<field>`: not real choices.
    real_oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        chosen = {o.name: draw(st.sampled_from([None, *o.fields])) for o in real_oneofs}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and oneof.name in chosen and chosen[oneof.name] is not field:
                continue
            if (oneof is None or oneof.name not in chosen) and not draw(st.booleans()):
                continue
            set_field(draw, msg, field, depth)
        return msg

    return build()


def set_field(draw: st.DrawFn, msg: Message, field: FieldDescriptor, depth: int) -> None:
    name = field.name
    nested = field.message_type
    if nested is not None and nested.GetOptions().map_entry:
        key, value = nested.fields_by_name["key"], nested.fields_by_name["value"]
        keys = st.one_of(st.sampled_from(["kind", "tags", "media_id", "video_id"]), scalar(key))
        for k in draw(st.lists(keys, max_size=3)):
            if value.message_type is not None:
                getattr(msg, name)[k].CopyFrom(draw(message(value.message_type, depth + 1)))
            else:
                getattr(msg, name)[k] = draw(scalar(value))
        return
    if field.is_repeated:
        if nested is not None:
            for item in draw(st.lists(message(nested, depth + 1), max_size=3 if depth < 2 else 0)):
                getattr(msg, name).add().CopyFrom(item)
        else:
            getattr(msg, name).extend(draw(st.lists(scalar(field), max_size=4)))
        return
    if nested is not None:
        if depth < 3:
            getattr(msg, name).CopyFrom(draw(message(nested, depth + 1)))
        return
    setattr(msg, name, draw(scalar(field)))


def assert_mapped(code: grpc.StatusCode, trailers: dict[str, Any], where: str) -> None:
    """An error status the server chose: not UNKNOWN/INTERNAL, its ErrorType in the trailing
    metadata, the code that type maps to, and a JSON detail when there is one."""
    assert code not in UNMAPPED, where
    assert TYPE_KEY in trailers, f"{where} (no {TYPE_KEY}: not raised by the service)"
    assert GRPC_STATUS[ErrorType(trailers[TYPE_KEY])] is code, where
    if DETAIL_KEY in trailers:
        json.loads(trailers[DETAIL_KEY])


@pytest.mark.parametrize(
    ("code", "trailers"),
    [
        (grpc.StatusCode.INTERNAL, {TYPE_KEY: "internal"}),
        (grpc.StatusCode.UNKNOWN, {}),
        (grpc.StatusCode.NOT_FOUND, {}),
        (grpc.StatusCode.NOT_FOUND, {TYPE_KEY: "invalid_input"}),
        (grpc.StatusCode.INVALID_ARGUMENT, {TYPE_KEY: "invalid_input", DETAIL_KEY: "{"}),
    ],
)
def test_the_check_refuses_unmapped_errors(code: grpc.StatusCode, trailers: dict[str, str]) -> None:
    with pytest.raises((AssertionError, ValueError)):
        assert_mapped(code, trailers, "a call")
    assert_mapped(grpc.StatusCode.NOT_FOUND, {TYPE_KEY: "not_found"}, "a call")


@pytest.fixture(scope="module")
def stub(fuzzed: Fuzzed) -> Any:
    with grpc.insecure_channel(fuzzed.grpc.address) as channel:
        yield pb_grpc.SearchStub(channel)


def one_query(draw: st.DrawFn) -> Message:
    request = draw(message(pb.SearchRequest.DESCRIPTOR))
    keep = draw(st.sampled_from(QUERIES))
    for name in QUERIES:
        if name != keep:
            request.ClearField(name)
    if not request.HasField(keep):
        setattr(request, keep, draw(scalar(pb.SearchRequest.DESCRIPTOR.fields_by_name[keep])))
    return request


@pytest.mark.parametrize("method", [*METHODS, ONE_QUERY])
def test_every_rpc_ends_ok_or_with_a_mapped_status(
    stub: Any, method: str, case_counts: Counter[str]
) -> None:
    if method == ONE_QUERY:
        call, requests = stub.Search, st.composite(one_query)()
    else:
        call = getattr(stub, method)
        requests = message(SERVICE.methods_by_name[method].input_type)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(request=requests)
    def fuzz(request: Message) -> None:
        case_counts[f"gRPC {method}"] += 1
        try:
            call(request, timeout=60)
            codes[grpc.StatusCode.OK] += 1
        except grpc.RpcError as err:
            codes[err.code()] += 1
            where = f"{method}({request!r}) -> {err.code()}: {err.details()}"
            assert_mapped(err.code(), dict(err.trailing_metadata() or ()), where)

    codes: Counter[grpc.StatusCode] = Counter()
    fuzz()
    print(f"gRPC {method}: {dict((c.name, n) for c, n in codes.most_common())}")


def test_the_service_still_serves_after_the_fuzzing(stub: Any) -> None:
    reply = stub.Search(pb.SearchRequest(text="a red square", limit=3), timeout=60)
    assert reply.mode and reply.model
    assert set(METHODS) == {m.name for m in SERVICE.methods} and len(METHODS) >= 12
