"""Where large Temporal payloads go: Temporal's External Storage with our drivers.

A payload of at least `payload_storage.threshold_bytes` is written to the store and only a
reference goes into the workflow's history, so a conversation of any size stays below
Temporal's 2 MB payload limit and history stays small. The SDK runs the payload codec
(encryption, when configured) before the store, so stored bytes are what history would have
held.

- `local`: one file per payload under a directory, named by the SHA-256 of its bytes. For
  one host or a shared volume (the embedded `dev` stack uses it).
- `s3`: the SDK's S3 driver (`temporalio.contrib.aws.s3driver`) on aioboto3, with a key
  prefix; any S3-compatible endpoint.

Nothing is deleted: stored payloads outlive their workflows. Expire them after the
namespace's retention period (an S3 lifecycle rule; a periodic `find -mtime` locally).
"""

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.converter import (
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from temporal_executor.schemas.config import (
    LocalPayloadStore,
    PayloadStorageSettings,
    S3PayloadStore,
)

LOCAL_DRIVER_NAME = "local-directory"
# The SDK's own name for its S3 driver: references we write are readable by any worker
# that configures the SDK's S3 driver on the same bucket.
S3_DRIVER_NAME = "aws.s3driver"


def external_storage(settings: PayloadStorageSettings) -> ExternalStorage | None:
    """The External Storage config settings ask for; None stores everything inline."""
    driver: StorageDriver
    if settings.store == "local":
        driver = LocalDirectoryDriver(settings.local)
    elif settings.store == "s3":
        driver = PrefixedS3Driver(settings.s3)
    else:
        return None
    return ExternalStorage(drivers=[driver], payload_size_threshold=settings.threshold_bytes)


class LocalDirectoryDriver(StorageDriver):
    """Payloads as files named by their SHA-256: a payload stored twice is one file."""

    def __init__(self, settings: LocalPayloadStore) -> None:
        self._root = Path(settings.directory)

    def name(self) -> str:
        return LOCAL_DRIVER_NAME

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        return await asyncio.to_thread(lambda: [self._write(p) for p in payloads])

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return await asyncio.to_thread(lambda: [self._read(c) for c in claims])

    def _write(self, payload: Payload) -> StorageDriverClaim:
        data = payload.SerializeToString()
        digest = hashlib.sha256(data).hexdigest()
        relative = f"sha256/{digest[:2]}/{digest}"
        path = self._root / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside then renamed: a reader never sees half a payload.
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        return StorageDriverClaim(claim_data={"path": relative, "sha256": digest})

    def _read(self, claim: StorageDriverClaim) -> Payload:
        path = self._root / claim.claim_data["path"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != claim.claim_data["sha256"]:
            msg = f"stored payload {path} does not match its reference (changed on disk?)"
            raise ValueError(msg)
        return Payload.FromString(data)


class PrefixedS3Driver(StorageDriver):
    """The SDK's S3 driver, with `prefix` in front of its keys.

    The SDK driver stores under keys of its own; here its client adds the prefix, and the
    reference keeps the full key, so a later change of prefix strands nothing.
    """

    def __init__(self, settings: S3PayloadStore) -> None:
        self._prefix = settings.prefix
        self._storing = S3StorageDriver(_Aioboto3Client(settings, settings.prefix), settings.bucket)
        self._retrieving = S3StorageDriver(_Aioboto3Client(settings, ""), settings.bucket)

    def name(self) -> str:
        return S3_DRIVER_NAME

    def type(self) -> str:
        return self._storing.type()

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = await self._storing.store(context, payloads)
        return [
            StorageDriverClaim(
                claim_data={**claim.claim_data, "key": self._prefix + claim.claim_data["key"]}
            )
            for claim in claims
        ]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return await self._retrieving.retrieve(context, claims)


class _Aioboto3Client(S3StorageDriverClient):
    """An S3 client opened per operation, in whichever event loop asks (the SDK stores
    and retrieves from the worker's loop, the client's, a test's), with `prefix` on keys."""

    def __init__(self, settings: S3PayloadStore, prefix: str) -> None:
        import aioboto3  # ~2 s of imports: only processes configured for S3 pay for them

        self._session = aioboto3.Session()
        self._endpoint_url = settings.endpoint_url
        self._region = settings.region
        self._prefix = prefix

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        async with self._session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region
        ) as client:
            yield client

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        async with self._client() as client:
            await client.put_object(Bucket=bucket, Key=self._prefix + key, Body=data)

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        async with self._client() as client:
            try:
                await client.head_object(Bucket=bucket, Key=self._prefix + key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    return False
                raise
            return True

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        async with self._client() as client:
            response = await client.get_object(Bucket=bucket, Key=self._prefix + key)
            async with response["Body"] as body:
                data: bytes = await body.read()
            return data
