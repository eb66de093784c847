"""OpenAI's Files API, for the Batch API: batch input files (JSONL) in, output files out.

    POST   /v1/files                 multipart: file, purpose=batch
    GET    /v1/files                 the tenant's files, newest first
    GET    /v1/files/{id}            a file object
    GET    /v1/files/{id}/content    the file itself
    DELETE /v1/files/{id}

Files live in Redis beside the jobs (every gateway of the fleet sees them), for
GENQ_BATCH_TTL; uploads are bounded by GENQ_MAX_FILE_BYTES. With Redis evicting by
`volatile-lru`, size `maxmemory` for the files in flight too."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, cast

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from genq import names
from producers.gateway.auth import Caller, caller
from producers.gateway.bodylimit import too_large
from producers.gateway.context import gateway_of
from producers.gateway.decoded import text_hash, texts
from producers.gateway.errors import ApiError

__all__ = ["FileStore", "router"]

router = APIRouter(tags=["batch"])


class FileStore:
    def __init__(self, redis: aioredis.Redis, *, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl

    async def create(
        self,
        tenant: str,
        *,
        filename: str,
        purpose: str,
        content: str,
    ) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex}"
        now = int(time.time())
        meta = {
            "id": file_id,
            "tenant": tenant,
            "filename": filename,
            "purpose": purpose,
            "bytes": str(len(content.encode())),
            "created_at": str(now),
        }
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(names.file_key(file_id), mapping=cast("dict[Any, Any]", meta))
        pipe.expire(names.file_key(file_id), self._ttl)
        pipe.set(names.file_content_key(file_id), content, ex=self._ttl)
        pipe.zadd(names.tenant_files_key(tenant), {file_id: now})
        pipe.expire(names.tenant_files_key(tenant), self._ttl)
        await pipe.execute()
        return self.as_object(meta)

    async def get(self, file_id: str, who: Caller) -> dict[str, Any]:
        meta = text_hash(await self._redis.hgetall(names.file_key(file_id)))
        if not meta or not who.sees(meta.get("tenant", "")):
            raise ApiError(404, f"file {file_id}: not found", param="file_id", code="not_found")
        return self.as_object(meta)

    async def content(self, file_id: str, who: Caller) -> str:
        await self.get(file_id, who)
        content = await self._redis.get(names.file_content_key(file_id))
        if content is None:
            raise ApiError(404, f"file {file_id}: not found", param="file_id", code="not_found")
        return str(content)

    async def list(
        self, who: Caller, *, purpose: str | None, limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        ids = texts(await self._redis.zrevrange(names.tenant_files_key(who.tenant), 0, -1))
        if after is not None and after in ids:
            ids = ids[ids.index(after) + 1 :]
        out: list[dict[str, Any]] = []
        for file_id in ids:
            meta = text_hash(await self._redis.hgetall(names.file_key(file_id)))
            if meta and (purpose is None or meta.get("purpose") == purpose):
                out.append(self.as_object(meta))
                if len(out) > limit:
                    break
        return out

    async def delete(self, file_id: str, who: Caller) -> None:
        meta = await self.get(file_id, who)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(names.file_key(file_id), names.file_content_key(file_id))
        pipe.zrem(names.tenant_files_key(who.tenant), meta["id"])
        await pipe.execute()

    def as_object(self, meta: dict[str, Any]) -> dict[str, Any]:
        created = int(meta["created_at"])
        return {
            "id": meta["id"],
            "object": "file",
            "bytes": int(meta["bytes"]),
            "created_at": created,
            "expires_at": created + self._ttl,
            "filename": meta["filename"],
            "purpose": meta["purpose"],
            "status": "processed",
            "status_details": None,
        }


def file_store(request: Request) -> FileStore:
    gw = gateway_of(request)
    return FileStore(gw.redis, ttl=gw.settings.batch_ttl)


Files = Annotated[FileStore, Depends(file_store)]
Who = Annotated[Caller, Depends(caller)]


@router.post(
    "/v1/files",
    responses={
        413: {"description": "Over GENQ_MAX_FILE_BYTES"},
        422: {"description": "Not a batch JSONL file"},
    },
)
async def upload_file(
    request: Request,
    files: Files,
    who: Who,
    file: Annotated[UploadFile, File(description="JSONL, one request a line")],
    purpose: Annotated[str, Form(description="`batch`")],
) -> dict[str, Any]:
    """Upload a batch input file (purpose `batch`)."""
    if purpose != "batch":
        raise ApiError(
            422, f"purpose: {purpose!r} is not supported; genq takes 'batch'", param="purpose"
        )
    limit = gateway_of(request).settings.max_file_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise too_large(None, limit, "GENQ_MAX_FILE_BYTES")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "file: not UTF-8 text (a batch file is JSONL)", param="file") from None
    return await files.create(
        who.tenant, filename=file.filename or "upload.jsonl", purpose=purpose, content=content
    )


@router.get("/v1/files")
async def list_files(
    files: Files,
    who: Who,
    purpose: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """The caller's files, newest first."""
    data = await files.list(who, purpose=purpose, limit=limit, after=after)
    return {
        "object": "list",
        "data": data[:limit],
        "has_more": len(data) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[:limit][-1]["id"] if data else None,
    }


@router.get("/v1/files/{file_id}", responses={404: {"description": "No such file"}})
async def get_file(file_id: str, files: Files, who: Who) -> dict[str, Any]:
    return await files.get(file_id, who)


@router.get(
    "/v1/files/{file_id}/content",
    response_class=Response,
    responses={404: {"description": "No such file"}},
)
async def get_file_content(file_id: str, files: Files, who: Who) -> Response:
    """The file's content (JSONL)."""
    return Response(await files.content(file_id, who), media_type="application/jsonl")


@router.delete("/v1/files/{file_id}", responses={404: {"description": "No such file"}})
async def delete_file(file_id: str, files: Files, who: Who) -> dict[str, Any]:
    await files.delete(file_id, who)
    return {"id": file_id, "object": "file", "deleted": True}
