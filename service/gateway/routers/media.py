"""Videos: the keyframe thumbnails of their segments (written by the indexer under the data
dir), and deleting a whole video, every segment and thumbnail, in one call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse

from service.core.errors import not_found
from service.core.schemas.api import COLLECTION_HELP, COLLECTION_MAX_CHARS, VideoDeleted
from service.gateway.deps import ComponentsDep, IngestScope, SearchScope, SettingsDep
from service.gateway.routers.responses import errors
from service.items.delete import delete_records, video_segments

router = APIRouter(prefix="/v1", tags=["media"])

# The indexer names a thumbnail after its point id (a UUID): nothing else can be asked for, so
# no path outside the thumbnails folder can be reached.
CollectionName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ThumbnailName = Annotated[str, Path(pattern=r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.jpg$")]


@router.get(
    "/thumbnails/{collection}/{name}",
    operation_id="get_thumbnail",
    response_class=FileResponse,
    dependencies=[SearchScope],
    responses={200: {"content": {"image/jpeg": {}}}, **errors(404)},
)
def thumbnail(
    collection: CollectionName, name: ThumbnailName, settings: SettingsDep
) -> FileResponse:
    path = settings.data_dir / "thumbnails" / collection / name
    if not path.is_file():
        raise not_found(f"no thumbnail {name} in {collection!r}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


@router.delete(
    "/videos/{video_id:path}",
    operation_id="delete_video",
    response_model=VideoDeleted,
    dependencies=[IngestScope],
    responses=errors(404),
)
def delete_video(
    video_id: str,
    components: ComponentsDep,
    settings: SettingsDep,
    collection: Annotated[
        str | None, Query(max_length=COLLECTION_MAX_CHARS, description=COLLECTION_HELP)
    ] = None,
) -> VideoDeleted:
    """Delete every segment of a video and their thumbnails. ``video_id`` is the id the video
    was ingested with (a hit's ``video_id``; for a directory ingest its ``file://`` URI, slashes
    and all, or percent-encoded)."""
    target = components.collection_of(collection)
    segments = video_segments(components.store, target, video_id, settings.video)
    delete_records(components.store, target, settings.data_dir, segments)
    return VideoDeleted(video_id=video_id, deleted=len(segments))
