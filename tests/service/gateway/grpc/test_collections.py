"""Collections over gRPC (issue 17), against a real gateway on the tiny bundle over loopback:
CreateCollection, ListCollections, GetCollection and DeleteCollection answer what REST's
/v1/collections answers; Search, GetItem, DeleteItem, Embed, Ingest and the job calls act on the
collection their request names ("" = the configured one, ``media``); a key scoped to one
collection reaches nothing of another (NOT_FOUND, as for a collection that does not exist); bad
input gets INVALID_ARGUMENT, ALREADY_EXISTS or NOT_FOUND."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from service.clients.search_grpc import SearchClient
from service.core.config import AuthSettings
from service.core.errors import ClipsearchError, ErrorType
from service.rpc import search_codec as codec
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import from_rpc_error
from tests.service.gateway.conftest import COLOURS, png
from tests.support import wait_for_job

Code = grpc.StatusCode
KEYS = (
    "alpha-s3cret:search@alpha+ingest@alpha+admin@alpha:alpha-bot,"
    "media-s3cret:search@media+ingest@media:media-bot,"
    "ops-s3cret:search+ingest+admin:ops"
)


def _key(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {name}-s3cret"),)


def _refused(call: Callable[..., Any], request: Any, key: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30, metadata=_key(key) if key else ())
    return raised.value


def _put(rest: TestClient, colour: str, caption: str, key: str | None = None, **form: str) -> str:
    """An item put through REST (gRPC has no item upload): its point id."""
    answer = rest.post(
        "/v1/items",
        files={"file": (f"{colour}.png", png(COLOURS[colour]), "image/png")},
        data={"caption": caption, "id": f"item-{colour}", **form},
        headers={"authorization": f"Bearer {key}-s3cret"} if key else {},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _names(stub: pb_grpc.SearchStub, key: str | None = None) -> list[str]:
    metadata = _key(key) if key else ()
    listed = stub.ListCollections(pb.ListCollectionsRequest(), timeout=30, metadata=metadata)
    return [c.name for c in listed.collections]


def test_collections_are_created_listed_read_and_deleted(
    stub: pb_grpc.SearchStub, rest: TestClient, tiny_narrow_bundle_dir: Path
) -> None:
    made = stub.CreateCollection(
        pb.CreateCollectionRequest(name="alpha", bundle=str(tiny_narrow_bundle_dir)), timeout=120
    )
    assert (made.name, made.points, made.default, made.served) == ("alpha", 0, False, True)
    assert made.bundle.startswith("tiny-narrow@") and made.current
    # Field for field what REST shows of it.
    assert codec.collection_from_proto(made) == rest.get("/v1/collections/alpha").json()

    got = stub.GetCollection(pb.GetCollectionRequest(name="alpha"), timeout=30)
    assert codec.collection_from_proto(got) == rest.get("/v1/collections/alpha").json()
    listed = stub.ListCollections(pb.ListCollectionsRequest(), timeout=30)
    assert [codec.collection_from_proto(c) for c in listed.collections] == (
        rest.get("/v1/collections").json()["collections"]
    )
    by_name = {c.name: c for c in listed.collections}
    assert set(by_name) == {"media", "alpha"} and listed.total_size == 2
    assert by_name["media"].default and by_name["media"].points == 3
    assert not listed.next_page_token
    # A page at a time (AIP-158).
    first = stub.ListCollections(pb.ListCollectionsRequest(page_size=1), timeout=30)
    assert len(first.collections) == 1 and first.next_page_token and first.total_size == 2
    second = stub.ListCollections(
        pb.ListCollectionsRequest(page_size=1, page_token=first.next_page_token), timeout=30
    )
    assert len(second.collections) == 1 and not second.next_page_token
    assert {first.collections[0].name, second.collections[0].name} == {"media", "alpha"}

    deleted = stub.DeleteCollection(pb.DeleteCollectionRequest(name="alpha"), timeout=60)
    assert deleted.collection == "alpha" and deleted.deleted_versions == [made.current]
    err = _refused(stub.GetCollection, pb.GetCollectionRequest(name="alpha"))
    assert (err.code(), err.details()) == (Code.NOT_FOUND, "collection 'alpha' does not exist")
    assert _names(stub) == ["media"]
    assert rest.get("/v1/collections/alpha").status_code == 404


def test_search_items_and_embed_act_on_the_named_collection(
    stub: pb_grpc.SearchStub, rest: TestClient, tiny_narrow_bundle_dir: Path
) -> None:
    bundle = str(tiny_narrow_bundle_dir)
    made = stub.CreateCollection(
        pb.CreateCollectionRequest(name="beta", bundle=bundle), timeout=120
    )
    try:
        # The same media id in both: two items, each found only in its collection.
        in_beta = _put(rest, "red", "a red circle in beta", collection="beta")
        in_media = stub.GetItem(pb.GetItemRequest(id="item-red"), timeout=30).id
        assert in_beta != in_media

        got = stub.GetItem(pb.GetItemRequest(id="item-red", collection="beta"), timeout=30)
        assert (got.id, got.caption) == (in_beta, "a red circle in beta")
        assert stub.GetItem(pb.GetItemRequest(id=in_beta, collection="beta"), timeout=30).id
        err = _refused(stub.GetItem, pb.GetItemRequest(id=in_beta))
        assert err.code() is Code.NOT_FOUND  # beta's point is not in media

        text = pb.SearchRequest(text="a red circle", mode="caption", collection="beta")
        hits = stub.Search(text, timeout=30)
        assert [h.id for h in hits.hits] == [in_beta] and hits.model == made.bundle
        image = pb.SearchRequest(image=png(COLOURS["red"]), mode="image", collection="beta")
        assert [h.id for h in stub.Search(image, timeout=30).hits] == [in_beta]
        default = stub.Search(pb.SearchRequest(text="a red circle", mode="caption"), timeout=30)
        assert in_beta not in [h.id for h in default.hits] and in_media in [
            h.id for h in default.hits
        ]
        assert default.model != made.bundle

        # Embed uses the bundle the collection is made with (tiny-narrow: 32 dims, tiny: 64).
        vectors = stub.Embed(pb.EmbedRequest(texts=["red"], collection="beta"), timeout=30)
        assert vectors.model == made.bundle and len(vectors.texts[0].joint.values) == 32
        assert (
            len(stub.Embed(pb.EmbedRequest(texts=["red"]), timeout=30).texts[0].joint.values) == 64
        )

        stub.DeleteItem(pb.DeleteItemRequest(id="item-red", collection="beta"), timeout=30)
        err = _refused(stub.GetItem, pb.GetItemRequest(id="item-red", collection="beta"))
        assert err.code() is Code.NOT_FOUND
        # media's item of the same media id is untouched.
        assert stub.GetItem(pb.GetItemRequest(id="item-red"), timeout=30).id == in_media
        assert rest.get("/v1/collections/beta").json()["points"] == 0
    finally:
        stub.DeleteCollection(pb.DeleteCollectionRequest(name="beta"), timeout=60)
    # Gone: a call naming it is NOT_FOUND, as for any collection that does not exist.
    err = _refused(stub.Search, pb.SearchRequest(text="red", collection="beta"))
    assert (err.code(), err.details()) == (Code.NOT_FOUND, "collection 'beta' does not exist")


def test_ingest_and_jobs_act_on_the_named_collection(
    stub: pb_grpc.SearchStub, rest: TestClient
) -> None:
    stub.CreateCollection(pb.CreateCollectionRequest(name="docs"), timeout=120)
    try:
        lines = [
            json.dumps({"id": "doc-1", "description": "a yellow bicycle leaning on a wall"}),
            json.dumps({"id": "doc-2", "description": "two dogs playing in the snow"}),
        ]
        request = pb.IngestRequest(manifest_lines=pb.ManifestLines(lines=lines), collection="docs")
        job_id = stub.Ingest(request, timeout=30).job_id

        def fetch(job: str) -> dict[str, Any]:
            found = stub.GetJob(pb.GetJobRequest(id=job), timeout=30)
            return codec.job_from_proto(found).model_dump()

        job = wait_for_job(fetch, job_id)
        assert (job["state"], job["done"], job["failed"]) == ("completed", 2, 0), job
        assert rest.get("/v1/collections/docs").json()["points"] == 2

        found = stub.Search(
            pb.SearchRequest(text="dogs in snow", mode="description", collection="docs"),
            timeout=30,
        )
        ids = {h.id for h in found.hits}
        assert len(ids) == 2
        default = stub.Search(pb.SearchRequest(text="dogs in snow", mode="description"))
        assert not ids & {h.id for h in default.hits}

        # The job is docs': listed with docs', not with media's; without a collection, with
        # every collection's (no keys: the caller may ingest anywhere).
        mine = stub.ListJobs(pb.ListJobsRequest(collection="docs"), timeout=30)
        assert [j.id for j in mine.jobs] == [job_id] and mine.total_size == 1
        media = stub.ListJobs(pb.ListJobsRequest(collection="media"), timeout=30)
        assert job_id not in [j.id for j in media.jobs]
        assert job_id in [j.id for j in stub.ListJobs(pb.ListJobsRequest(), timeout=30).jobs]
        # Ended: nothing to cancel (conflict), as REST says.
        err = _refused(stub.CancelJob, pb.CancelJobRequest(id=job_id))
        assert err.code() is Code.ALREADY_EXISTS
    finally:
        stub.DeleteCollection(pb.DeleteCollectionRequest(name="docs"), timeout=60)


def test_bad_collection_requests_get_clear_statuses(stub: pb_grpc.SearchStub) -> None:
    refusals: list[tuple[Callable[..., Any], Any, grpc.StatusCode, str]] = [
        (stub.CreateCollection, pb.CreateCollectionRequest(), Code.INVALID_ARGUMENT, "name"),
        (
            stub.CreateCollection,
            pb.CreateCollectionRequest(name="Bad Name!"),
            Code.INVALID_ARGUMENT,
            "a collection name is",
        ),
        (
            stub.CreateCollection,
            pb.CreateCollectionRequest(name="x" * 64),
            Code.INVALID_ARGUMENT,
            "name",
        ),
        (
            stub.CreateCollection,
            pb.CreateCollectionRequest(name="media"),
            Code.ALREADY_EXISTS,
            "media",
        ),
        (
            stub.CreateCollection,
            pb.CreateCollectionRequest(name="gamma", bundle="no-such-bundle"),
            Code.NOT_FOUND,
            "no-such-bundle",
        ),
        (
            stub.DeleteCollection,
            pb.DeleteCollectionRequest(name="media"),
            Code.ALREADY_EXISTS,
            "media",
        ),
        (stub.DeleteCollection, pb.DeleteCollectionRequest(name="nope"), Code.NOT_FOUND, "nope"),
        (stub.DeleteCollection, pb.DeleteCollectionRequest(), Code.INVALID_ARGUMENT, "name"),
        (stub.GetCollection, pb.GetCollectionRequest(), Code.INVALID_ARGUMENT, "name"),
        (stub.GetCollection, pb.GetCollectionRequest(name="nope"), Code.NOT_FOUND, "nope"),
        (
            stub.ListCollections,
            pb.ListCollectionsRequest(page_token="garbage"),
            Code.INVALID_ARGUMENT,
            "page_token",
        ),
        (stub.Search, pb.SearchRequest(text="x", collection="nope"), Code.NOT_FOUND, "nope"),
        (
            stub.Search,
            pb.SearchRequest(text="x", collection="n" * 64),
            Code.INVALID_ARGUMENT,
            "collection",
        ),
        (stub.GetItem, pb.GetItemRequest(id="item-red", collection="nope"), Code.NOT_FOUND, "nope"),
        (
            stub.DeleteItem,
            pb.DeleteItemRequest(id="item-red", collection="nope"),
            Code.NOT_FOUND,
            "nope",
        ),
        (stub.Embed, pb.EmbedRequest(texts=["x"], collection="nope"), Code.NOT_FOUND, "nope"),
        (
            stub.Ingest,
            pb.IngestRequest(urls=pb.Urls(urls=["https://example.org/a.png"]), collection="nope"),
            Code.NOT_FOUND,
            "nope",
        ),
    ]
    for call, request, code, said in refusals:
        err = _refused(call, request)
        where = f"{request!r}"[:80]
        assert err.code() is code, (where, err.code(), err.details())
        assert said in err.details(), (where, err.details())
        assert (
            from_rpc_error(err).type
            is {
                Code.INVALID_ARGUMENT: ErrorType.invalid_input,
                Code.ALREADY_EXISTS: ErrorType.conflict,
                Code.NOT_FOUND: ErrorType.not_found,
            }[code]
        )
    # Nothing was lost: the configured collection still serves its three items, nothing else.
    assert _names(stub) == ["media"]
    hits = stub.Search(pb.SearchRequest(text="a red circle", limit=10), timeout=30).hits
    assert len(hits) == 3


@pytest.fixture()
def scoped(rest: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys scoped to collections for this test (no rate limit)."""
    runtime = rest.app.state.runtime  # type: ignore[attr-defined]
    auth = AuthSettings.model_validate({"api_keys": KEYS})
    monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update={"auth": auth}))


def test_a_key_scoped_to_one_collection_reaches_nothing_of_another(
    stub: pb_grpc.SearchStub, rest: TestClient, scoped: None
) -> None:
    # alpha-bot is admin of alpha only: it may create alpha, and nothing it may not see.
    stub.CreateCollection(
        pb.CreateCollectionRequest(name="alpha"), timeout=120, metadata=_key("alpha")
    )
    try:
        in_alpha = _put(rest, "green", "a green triangle in alpha", key="alpha", collection="alpha")
        hits = stub.Search(
            pb.SearchRequest(text="green triangle", mode="caption", collection="alpha"),
            timeout=30,
            metadata=_key("alpha"),
        )
        assert [h.id for h in hits.hits] == [in_alpha]
        mine = pb.GetItemRequest(id="item-green", collection="alpha")
        assert stub.GetItem(mine, timeout=30, metadata=_key("alpha")).id == in_alpha

        # Every call on media (the configured collection, named or not): as if it did not exist.
        for named in ("", "media"):
            calls: list[tuple[Callable[..., Any], Any]] = [
                (stub.Search, pb.SearchRequest(text="red", collection=named)),
                (stub.Search, pb.SearchRequest(image=png(COLOURS["red"]), collection=named)),
                (stub.GetItem, pb.GetItemRequest(id="item-red", collection=named)),
                (stub.DeleteItem, pb.DeleteItemRequest(id="item-red", collection=named)),
                (stub.Embed, pb.EmbedRequest(texts=["red"], collection=named)),
                (stub.Ingest, pb.IngestRequest(directory="/nowhere", collection=named)),
            ]
            if named:  # without one, ListJobs lists the jobs of the collections the key sees
                calls.append((stub.ListJobs, pb.ListJobsRequest(collection=named)))
            for call, request in calls:
                err = _refused(call, request, "alpha")
                assert (err.code(), err.details()) == (
                    Code.NOT_FOUND,
                    "collection 'media' does not exist",
                ), request
        by_name: list[tuple[Callable[..., Any], Any, str]] = [
            (stub.GetCollection, pb.GetCollectionRequest(name="media"), "media"),
            (stub.DeleteCollection, pb.DeleteCollectionRequest(name="media"), "media"),
            (stub.CreateCollection, pb.CreateCollectionRequest(name="gamma"), "gamma"),
        ]
        for call, request, name in by_name:
            err = _refused(call, request, "alpha")
            assert err.code() is Code.NOT_FOUND, request
            assert err.details() == f"collection {name!r} does not exist"
        assert _names(stub, "alpha") == ["alpha"]

        # alpha's job is alpha-bot's to see; to media-bot it is no job at all.
        lines = [json.dumps({"id": "doc-a", "description": "a green triangle"})]
        ingest = pb.IngestRequest(manifest_lines=pb.ManifestLines(lines=lines), collection="alpha")
        job_id = stub.Ingest(ingest, timeout=30, metadata=_key("alpha")).job_id
        job = wait_for_job(
            lambda j: codec.job_from_proto(
                stub.GetJob(pb.GetJobRequest(id=j), timeout=30, metadata=_key("alpha"))
            ).model_dump(),
            job_id,
        )
        assert job["state"] == "completed", job
        for call, request in [
            (stub.GetJob, pb.GetJobRequest(id=job_id)),
            (stub.CancelJob, pb.CancelJobRequest(id=job_id)),
        ]:
            err = _refused(call, request, "media")
            assert (err.code(), err.details()) == (Code.NOT_FOUND, f"no job {job_id!r}")

        def listed(key: str) -> list[str]:
            page = stub.ListJobs(pb.ListJobsRequest(), timeout=30, metadata=_key(key))
            return [j.id for j in page.jobs]

        assert listed("alpha") == [job_id]
        assert job_id not in listed("media") and job_id in listed("ops")
        # Unknown to everyone alike.
        err = _refused(stub.GetJob, pb.GetJobRequest(id="j"), "alpha")
        assert (err.code(), err.details()) == (Code.NOT_FOUND, "no job 'j'")

        # And the other way round: media-bot reaches nothing of alpha.
        for call, request in [
            (stub.Search, pb.SearchRequest(text="green", collection="alpha")),
            (stub.GetItem, pb.GetItemRequest(id="item-green", collection="alpha")),
            (stub.DeleteItem, pb.DeleteItemRequest(id="item-green", collection="alpha")),
            (stub.Ingest, pb.IngestRequest(directory="/nowhere", collection="alpha")),
            (stub.ListJobs, pb.ListJobsRequest(collection="alpha")),
            (stub.GetCollection, pb.GetCollectionRequest(name="alpha")),
            (stub.DeleteCollection, pb.DeleteCollectionRequest(name="alpha")),
        ]:
            err = _refused(call, request, "media")
            assert (err.code(), err.details()) == (
                Code.NOT_FOUND,
                "collection 'alpha' does not exist",
            ), request
        assert _names(stub, "media") == ["media"]
        assert sorted(_names(stub, "ops")) == ["alpha", "media"]
        # None of it touched either collection.
        assert stub.GetItem(mine, timeout=30, metadata=_key("alpha")).id == in_alpha
        assert stub.GetItem(pb.GetItemRequest(id="item-red"), timeout=30, metadata=_key("media"))
        # media-bot has no admin scope anywhere it sees: 403, as REST's.
        err = _refused(stub.DeleteCollection, pb.DeleteCollectionRequest(name="media"), "media")
        assert err.code() is Code.PERMISSION_DENIED
    finally:
        deleted = stub.DeleteCollection(
            pb.DeleteCollectionRequest(name="alpha"), timeout=60, metadata=_key("alpha")
        )
    assert deleted.collection == "alpha"


def test_creating_and_deleting_a_collection_leave_audit_lines(
    stub: pb_grpc.SearchStub, scoped: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clipsearch.audit")
    create = pb.CreateCollectionRequest(name="alpha")
    stub.CreateCollection(create, timeout=120, metadata=_key("alpha"))
    delete = pb.DeleteCollectionRequest(name="alpha")
    assert _refused(stub.DeleteCollection, delete, "media").code() is Code.NOT_FOUND
    assert _refused(stub.CreateCollection, create, "alpha").code() is Code.ALREADY_EXISTS
    stub.DeleteCollection(delete, timeout=60, metadata=_key("alpha"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "clipsearch.audit"]
    assert [(x["who"], x["action"], x["result"], x["via"], x["target"]) for x in lines] == [
        ("alpha-bot", "create_collection", "ok", "grpc", {"collection": "alpha"}),
        ("media-bot", "delete_collection", "not_found", "grpc", {"collection": "alpha"}),
        ("alpha-bot", "create_collection", "conflict", "grpc", {"collection": "alpha"}),
        ("alpha-bot", "delete_collection", "ok", "grpc", {"collection": "alpha"}),
    ]
    assert "s3cret" not in caplog.text


def test_the_python_client_speaks_collections_in_rests_shape(
    client: SearchClient, rest: TestClient
) -> None:
    made = client.create_collection("kappa")
    try:
        assert made == rest.get("/v1/collections/kappa").json()
        assert client.get_collection("kappa") == made
        first, token = client.list_collections(page_size=1)
        second, end = client.list_collections(page_size=1, page_token=token)
        assert first + second == rest.get("/v1/collections").json()["collections"] and not end
        assert client.search(text="red", collection="kappa").hits == []
        assert client.embed(["red"], collection="kappa").model == made["bundle"]
        with pytest.raises(ClipsearchError) as refused:
            client.create_collection("kappa")
        assert refused.value.type is ErrorType.conflict
    finally:
        assert client.delete_collection("kappa") == [made["current"]]
    with pytest.raises(ClipsearchError) as gone:
        client.get_item("item-red", collection="kappa")
    assert gone.value.type is ErrorType.not_found
    assert gone.value.message == "collection 'kappa' does not exist"
