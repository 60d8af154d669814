"""``POST /v1/embeddings`` through the official ``openai`` client, unchanged, on the tiny bundle."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.config import AuthSettings
from service.core.errors import ClipsearchError, ErrorType
from service.core.schemas.openai import MAX_INPUTS
from service.gateway.state import Components
from tests.service.gateway.conftest import COLOURS, png

MODEL = "tiny-test"
REF = "tiny-test@0.1.0"


def _oai(client: TestClient, api_key: str = "unused") -> openai.OpenAI:
    # The TestClient is an httpx.Client running the real app (middleware, auth, error handlers);
    # max_retries=0 so that a 429 surfaces instead of being retried after Retry-After.
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0
    )


@pytest.fixture()
def oai(client: TestClient) -> openai.OpenAI:
    return _oai(client)


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 32), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _vectors(response: Any) -> list[np.ndarray]:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return [np.asarray(d.embedding, np.float32) for d in response.data]


def _image_vector(components: Components, data: bytes) -> np.ndarray:
    [vector] = components.embedder.embed_images([data])
    assert isinstance(vector, np.ndarray)
    return vector


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-6)


# -- vectors ----------------------------------------------------------------------------------


def test_default_base64_text_equals_the_text_tower(
    oai: openai.OpenAI, components: Components
) -> None:
    response = oai.embeddings.create(model=MODEL, input="a red circle")  # base64 on the wire
    [vector] = _vectors(response)
    _close(vector, components.embedder.embed_texts(["a red circle"]).joint[0])
    assert response.model == REF
    assert response.object == "list"
    assert response.data[0].object == "embedding"


def test_list_input_keeps_order_and_float_matches_base64(
    oai: openai.OpenAI, components: Components
) -> None:
    texts = ["a red circle", "a blue square", "a green triangle"]
    want = components.embedder.embed_texts(texts).joint
    for fmt in ("float", "base64"):
        response = oai.embeddings.create(model=REF, input=texts, encoding_format=fmt)
        if fmt == "base64":  # an explicit format comes back as the client got it: decode it here
            got = [
                np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")  # type: ignore[arg-type]
                for d in response.data
            ]
            assert [d.index for d in response.data] == [0, 1, 2]
        else:
            got = _vectors(response)
        for g, w in zip(got, want, strict=True):
            _close(g, w)


def test_image_data_uris_give_image_vectors(oai: openai.OpenAI, components: Components) -> None:
    red, jpeg = png(COLOURS["red"]), _jpeg(COLOURS["blue"])
    response = oai.embeddings.create(model=MODEL, input=[_uri(red), _uri(jpeg, "image/jpeg")])
    got = _vectors(response)
    _close(got[0], _image_vector(components, red))
    _close(got[1], _image_vector(components, jpeg))
    text = components.embedder.embed_texts(["a red circle"]).joint[0]
    assert got[0].shape == text.shape  # one joint space: text and image vectors compare
    assert response.usage.prompt_tokens == 0  # images count no tokens


def test_mixed_text_and_images_keep_order(oai: openai.OpenAI, components: Components) -> None:
    red = png(COLOURS["red"])
    response = oai.embeddings.create(
        model=MODEL, input=["a red circle", _uri(red), "a blue square"], encoding_format="float"
    )
    got = _vectors(response)
    texts = components.embedder.embed_texts(["a red circle", "a blue square"]).joint
    _close(got[0], texts[0])
    _close(got[1], _image_vector(components, red))
    _close(got[2], texts[1])


def test_modality_image_accepts_bare_base64(oai: openai.OpenAI, components: Components) -> None:
    green = png(COLOURS["green"])
    response = oai.embeddings.create(
        model=MODEL,
        input=[base64.b64encode(green).decode(), _uri(green)],
        extra_body={"modality": "image"},
    )
    for vector in _vectors(response):
        _close(vector, _image_vector(components, green))


def test_modality_text_embeds_a_data_uri_as_text(
    oai: openai.OpenAI, components: Components
) -> None:
    uri = _uri(png(COLOURS["red"]))[:300]
    response = oai.embeddings.create(model=MODEL, input=uri, extra_body={"modality": "text"})
    _close(_vectors(response)[0], components.embedder.embed_texts([uri]).joint[0])


def test_prose_that_starts_with_data_is_text(oai: openai.OpenAI, components: Components) -> None:
    text = "data: the new oil"
    response = oai.embeddings.create(model=MODEL, input=[text])
    _close(_vectors(response)[0], components.embedder.embed_texts([text]).joint[0])


def test_description_model_is_the_sentence_space(
    oai: openai.OpenAI, components: Components
) -> None:
    text = "One large red circle in the centre of a white background."
    for model in (f"{MODEL}/description", f"{REF}/description"):
        response = oai.embeddings.create(model=model, input=[text])
        _close(_vectors(response)[0], components.embedder.embed_texts([text]).sentence[0])
        assert response.model == f"{REF}/description"
    with pytest.raises(openai.BadRequestError, match="text only"):
        oai.embeddings.create(model=f"{MODEL}/description", input=_uri(png(COLOURS["red"])))


def test_usage_reports_the_encoders_token_counts(
    oai: openai.OpenAI, components: Components
) -> None:
    texts = ["a red circle", "two blue squares side by side"]
    response = oai.embeddings.create(model=MODEL, input=texts)
    tokens = components.embedder.embed_texts(texts).tokens
    # Real counts where the encoder reports them; 0 (never a guess) where it does not yet.
    expected = int(np.asarray(tokens).sum()) if tokens is not None else 0
    assert tokens is None or expected > 0
    assert response.usage.prompt_tokens == expected
    assert response.usage.total_tokens == expected


def test_dimensions_equal_to_the_models_and_user_are_accepted(
    oai: openai.OpenAI, components: Components
) -> None:
    dim = components.embedder.info().spaces["caption"]
    response = oai.embeddings.create(model=MODEL, input="a", dimensions=dim, user="u-1")
    assert len(response.data[0].embedding) == dim


def test_operation_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/embeddings"]["post"]
    assert operation["operationId"] == "create_embeddings"
    assert operation["tags"] == ["openai"]


# -- bad input --------------------------------------------------------------------------------

_TOO_BIG = _uri(b"\x89PNG" + b"\0" * (300 * 1024))  # over the fixture's 256 KiB upload limit
_TRUNCATED = _uri(_jpeg((1, 2, 3))[:200], "image/jpeg")
# What the client raises for each status (415 and 413 have no class of their own).
RAISES: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    404: openai.NotFoundError,
    413: openai.APIStatusError,
    415: openai.APIStatusError,
    422: openai.UnprocessableEntityError,
}
# (case, create() arguments, status, error type, text the message must contain)
BAD: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("unknown model", {"model": "gpt-9"}, 404, "not_found", "tiny-test"),
    ("empty list", {"input": []}, 400, "invalid_input", "empty list"),
    ("empty string", {"input": ""}, 400, "invalid_input", "input 0"),
    ("blank item", {"input": ["a", "b", "  "]}, 400, "invalid_input", "input 2"),
    ("over-long", {"input": ["ok", "x" * 2001]}, 400, "invalid_input", "input 1"),
    ("token arrays", {"input": [[1, 2, 3]]}, 400, "invalid_input", "token arrays"),
    ("token array", {"input": [1, 2, 3]}, 400, "invalid_input", "token arrays"),
    ("bad base64", {"input": ["a", "data:image/png;base64,@@@"]}, 400, "invalid_input", "input 1"),
    ("not base64", {"input": "data:image/png,rawbytes"}, 400, "invalid_input", "base64"),
    ("not an image", {"input": ["a", _uri(b"hello")]}, 415, "unsupported_media", "input 1"),
    ("truncated", {"input": [_TRUNCATED]}, 400, "invalid_input", "input 0"),
    ("text data URI", {"input": _uri(b"hi", "text/plain")}, 415, "unsupported_media", "image"),
    ("oversize image", {"input": _TOO_BIG}, 413, "payload_too_large", "limit"),
    ("too many", {"input": ["x"] * (MAX_INPUTS + 1)}, 400, "invalid_input", str(MAX_INPUTS)),
    ("dimensions", {"input": "a", "dimensions": 3}, 400, "invalid_input", "dimensions=3"),
    ("format", {"input": "a", "encoding_format": "int8"}, 422, "invalid_input", "encoding_format"),
    ("modality", {"input": "a", "extra_body": {"modality": "x"}}, 422, "invalid_input", "modal"),
]


@pytest.mark.parametrize(
    ("case", "kwargs", "status", "type_", "needle"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_requests_raise_in_the_client(
    oai: openai.OpenAI, case: str, kwargs: dict[str, Any], status: int, type_: str, needle: str
) -> None:
    with pytest.raises(RAISES[status]) as raised:
        oai.embeddings.create(**{"model": MODEL, "input": "a", **kwargs})
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict)
    assert set(body) == {"type", "message", "detail"}  # the project's one error shape
    assert body["type"] == type_
    assert needle in body["message"]


class _Overloaded:
    """An embedder whose interactive lane is full."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def info(self, *, bundle: str | None = None) -> Any:
        return self._inner.info(bundle=bundle)

    def embed_texts(
        self, texts: Sequence[str], *, lane: str = "interactive", bundle: str | None = None
    ) -> Any:
        raise ClipsearchError(ErrorType.overloaded, "queue full", retry_after_s=2.5)


def test_overload_is_429_with_retry_after(
    oai: openai.OpenAI, components: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(components, "embedder", _Overloaded(components.embedder))
    with pytest.raises(openai.RateLimitError) as raised:
        oai.embeddings.create(model=MODEL, input="a red circle")
    assert raised.value.response.headers["retry-after"] == "3"


def test_api_keys_need_the_search_scope(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    keys = AuthSettings.model_validate({"api_keys": "reader:search,writer:ingest"})
    monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update={"auth": keys}))
    with pytest.raises(openai.AuthenticationError):
        _oai(client, "wrong").embeddings.create(model=MODEL, input="a")
    with pytest.raises(openai.PermissionDeniedError):
        _oai(client, "writer").embeddings.create(model=MODEL, input="a")
    assert _oai(client, "reader").embeddings.create(model=MODEL, input="a").data


def test_still_serving_after_bad_requests(client: TestClient, oai: openai.OpenAI) -> None:
    for bad in ([], [[1]], "data:image/png;base64,@@", _uri(b"junk")):
        with pytest.raises(openai.APIStatusError):
            oai.embeddings.create(model=MODEL, input=bad)  # type: ignore[arg-type]
    assert oai.embeddings.create(model=MODEL, input="a red circle").data
    searched = client.post("/v1/search", json={"text": "a red circle"})
    assert searched.status_code == 200, searched.text
