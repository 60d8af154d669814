# encoder_pb2.pyi: generated from service/rpc/encoder.proto by scripts/gen_protos.py
# (grpcio-tools 1.85.1). DO NOT EDIT: change the proto and run
# `make protos`; `make protos-check` fails when this file is stale.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Lane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANE_UNSPECIFIED: _ClassVar[Lane]
    LANE_INTERACTIVE: _ClassVar[Lane]
    LANE_BULK: _ClassVar[Lane]
LANE_UNSPECIFIED: Lane
LANE_INTERACTIVE: Lane
LANE_BULK: Lane

class Texts(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[str]] = ...) -> None: ...

class Images(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, items: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("lane", "texts", "images", "bundle")
    LANE_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    lane: Lane
    texts: Texts
    images: Images
    bundle: str
    def __init__(self, lane: _Optional[_Union[Lane, str]] = ..., texts: _Optional[_Union[Texts, _Mapping]] = ..., images: _Optional[_Union[Images, _Mapping]] = ..., bundle: _Optional[str] = ...) -> None: ...

class Matrix(_message.Message):
    __slots__ = ("rows", "dim", "data")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dim: int
    data: bytes
    def __init__(self, rows: _Optional[int] = ..., dim: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("type", "message", "detail_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    detail_json: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class TokenCounts(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, counts: _Optional[_Iterable[int]] = ...) -> None: ...

class TextResult(_message.Message):
    __slots__ = ("joint", "sentence", "tokens")
    JOINT_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    joint: Matrix
    sentence: Matrix
    tokens: TokenCounts
    def __init__(self, joint: _Optional[_Union[Matrix, _Mapping]] = ..., sentence: _Optional[_Union[Matrix, _Mapping]] = ..., tokens: _Optional[_Union[TokenCounts, _Mapping]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("name", "score", "broader")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BROADER_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    broader: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ..., broader: _Optional[_Iterable[str]] = ...) -> None: ...

class ImageItem(_message.Message):
    __slots__ = ("row", "error", "labels")
    ROW_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    row: int
    error: Error
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, row: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("vectors", "items", "visual")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FIELD_NUMBER: _ClassVar[int]
    vectors: Matrix
    items: _containers.RepeatedCompositeFieldContainer[ImageItem]
    visual: Matrix
    def __init__(self, vectors: _Optional[_Union[Matrix, _Mapping]] = ..., items: _Optional[_Iterable[_Union[ImageItem, _Mapping]]] = ..., visual: _Optional[_Union[Matrix, _Mapping]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("texts", "images", "error")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    texts: TextResult
    images: ImageResult
    error: Error
    def __init__(self, texts: _Optional[_Union[TextResult, _Mapping]] = ..., images: _Optional[_Union[ImageResult, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EmbedResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[EmbedResponse, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("name", "version", "spaces", "trained", "max_text_tokens", "provider", "domain", "is_default", "intended_use")
    class SpacesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPACES_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    INTENDED_USE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    spaces: _containers.ScalarMap[str, int]
    trained: bool
    max_text_tokens: int
    provider: str
    domain: str
    is_default: bool
    intended_use: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., spaces: _Optional[_Mapping[str, int]] = ..., trained: _Optional[bool] = ..., max_text_tokens: _Optional[int] = ..., provider: _Optional[str] = ..., domain: _Optional[str] = ..., is_default: _Optional[bool] = ..., intended_use: _Optional[str] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("bundle", "provider", "spaces", "trained", "max_text_tokens", "batching_json", "bundles")
    class SpacesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SPACES_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_JSON_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    provider: str
    spaces: _containers.ScalarMap[str, int]
    trained: bool
    max_text_tokens: int
    batching_json: str
    bundles: _containers.RepeatedCompositeFieldContainer[BundleInfo]
    def __init__(self, bundle: _Optional[str] = ..., provider: _Optional[str] = ..., spaces: _Optional[_Mapping[str, int]] = ..., trained: _Optional[bool] = ..., max_text_tokens: _Optional[int] = ..., batching_json: _Optional[str] = ..., bundles: _Optional[_Iterable[_Union[BundleInfo, _Mapping]]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("ready", "reason", "bundle", "detail_json", "bundles")
    READY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    reason: str
    bundle: str
    detail_json: str
    bundles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ready: _Optional[bool] = ..., reason: _Optional[str] = ..., bundle: _Optional[str] = ..., detail_json: _Optional[str] = ..., bundles: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadBundleRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: str
    def __init__(self, spec: _Optional[str] = ...) -> None: ...

class LoadBundleResponse(_message.Message):
    __slots__ = ("bundle", "loaded")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    bundle: BundleInfo
    loaded: bool
    def __init__(self, bundle: _Optional[_Union[BundleInfo, _Mapping]] = ..., loaded: _Optional[bool] = ...) -> None: ...

class UnloadBundleRequest(_message.Message):
    __slots__ = ("bundle", "grace_s")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    grace_s: float
    def __init__(self, bundle: _Optional[str] = ..., grace_s: _Optional[float] = ...) -> None: ...

class UnloadBundleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
