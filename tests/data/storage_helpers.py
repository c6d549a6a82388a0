"""Writing test inputs through fsspec (local, moto S3, memory): one file, one in-memory tar."""

from __future__ import annotations

import io
import tarfile

import fsspec


def put(url: str, data: bytes, options) -> None:
    """Write ``data`` at ``url`` (parents made)."""
    fs, path = fsspec.url_to_fs(url, **(options or {}))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A tar archive of ``(name, data)`` members, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
