"""Keyframe thumbnails of indexed video segments, written by the indexer under the data dir."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from service.core.errors import not_found
from service.gateway.deps import SearchScope, SettingsDep

router = APIRouter(prefix="/v1", tags=["media"], dependencies=[SearchScope])

# The indexer names a thumbnail after its point id (a UUID): nothing else can be asked for, so
# no path outside the thumbnails folder can be reached.
CollectionName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ThumbnailName = Annotated[str, Path(pattern=r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.jpg$")]


@router.get(
    "/thumbnails/{collection}/{name}",
    operation_id="get_thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def thumbnail(
    collection: CollectionName, name: ThumbnailName, settings: SettingsDep
) -> FileResponse:
    path = settings.data_dir / "thumbnails" / collection / name
    if not path.is_file():
        raise not_found(f"no thumbnail {name} in {collection!r}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})
