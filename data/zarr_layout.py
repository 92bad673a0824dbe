"""How episode arrays are laid out in zarr v3, written and read without zarr's per-chunk overhead.

Layout (all arrays little-endian, chunk keys with a "." separator so each array is one flat directory):
- image-like fields (ndim >= 2 per step): one frame per chunk, `frames_per_shard` frames per shard file
  (zarr's sharding codec). One file per 64 frames instead of one per frame keeps file counts and commit
  fsyncs small; one frame per chunk keeps a random read to one frame's bytes.
- everything else: one chunk per episode (up to `VECTOR_CHUNK_ROWS` rows), written once at commit.
- every chunk is written (no "empty chunk = fill value" gaps), so a missing file is damage, not zeros.

Why not through zarr-python: zarr 3.1 spends about 0.5 ms per chunk written, 1 ms per chunk read and
2 ms per array created in its async machinery: 5x the zstd time of a 128x128 frame, and 30 ms per
commit for the dozen small arrays of an episode. This module therefore writes the bytes the zarr v3
spec defines (shards: encoded frames, then an (offset, nbytes) index and its crc32c; metadata: the
zarr.json that zarr itself produced for the same kind of array, with the shape patched in), and
`ArrayReader` reads chunks and shard indexes with plain file reads. zarr stays the reference: tests and
`EpisodeStore.validate(deep=True)` read everything back through zarr, and the reader falls back to
zarr for any array whose zarr.json it does not recognise.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import tempfile
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numcodecs.abc
import numpy as np
import zarr
from zarr.codecs import GzipCodec, ZstdCodec
from zarr.storage import LocalStore

from data.schema import Codec, DataValidationError, FieldSpec, StoreSchema

VECTOR_CHUNK_ROWS = 1 << 16  # rows per chunk of non-image arrays; a whole episode in practice
_CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}
_SEP = "."
_VLEN_UTF8 = numcodecs.VLenUTF8()  # the encoding of zarr v3's "vlen-utf8" codec
_EMPTY = 0xFFFFFFFFFFFFFFFF  # shard index entry of a chunk that was never written
_SHARD_INDEX_CACHE_SIZE = 8192


def compressor(schema: StoreSchema) -> ZstdCodec | GzipCodec:
    if schema.codec is Codec.ZSTD:
        return ZstdCodec(level=schema.codec_level, checksum=True)
    return GzipCodec(level=schema.codec_level)


@functools.lru_cache(maxsize=512)
def _metadata_template(
    kind: str, dtype: str, trailing: tuple[int, ...], codec: Codec, level: int, frames_per_shard: int
) -> str:
    """The zarr.json zarr itself writes for a group, a frame array or a vector array of this kind.

    Made once per process and kind (zarr takes ~2 ms per array it creates, more than a whole commit
    should); `_write_metadata` patches the shape in. Fields not patched are exactly zarr's.
    """
    schema_codec = StoreSchema({"x": FieldSpec((1,), "uint8")}, FieldSpec((1,), "uint8"), codec, level)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        if kind == "group":
            zarr.create_group(store=store)
        else:
            kwargs: dict[str, Any] = {
                "shape": (1, *trailing),
                "dtype": str if dtype == "string" else dtype,
                "chunks": (1, *trailing),
                "compressors": compressor(schema_codec),
                "chunk_key_encoding": _CHUNK_KEY_ENCODING,
            }
            if kind == "frame":
                kwargs.update(shards=(frames_per_shard, *trailing), fill_value=0)
            zarr.create_array(store=store, **kwargs)
        return (Path(tmp) / "zarr.json").read_text()


def _write_metadata(node_dir: Path, template: str, **patch: Any) -> None:
    meta = json.loads(template)
    if "shape" in patch:
        meta["shape"] = list(patch["shape"])
    if "chunk_shape" in patch:
        meta["chunk_grid"]["configuration"]["chunk_shape"] = list(patch["chunk_shape"])
    if "attributes" in patch:
        meta["attributes"] = patch["attributes"]
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / "zarr.json").write_text(json.dumps(meta, indent=2))


def write_group(group_dir: Path, attributes: dict[str, Any] | None = None) -> None:
    """Create (or overwrite the attributes of) a zarr group at `group_dir`."""
    template = _metadata_template("group", "", (), Codec.ZSTD, 1, 1)
    _write_metadata(group_dir, template, attributes=attributes or {})


def write_frame_metadata(array_dir: Path, length: int, spec: FieldSpec, schema: StoreSchema) -> None:
    """zarr.json of a (length, *spec.shape) frame array whose shards `write_shard` wrote."""
    template = _metadata_template(
        "frame", spec.dtype, spec.shape, schema.codec, schema.codec_level, schema.frames_per_shard
    )
    _write_metadata(array_dir, template, shape=(length, *spec.shape))


def _encoder(schema: StoreSchema) -> numcodecs.abc.Codec:
    if schema.codec is Codec.ZSTD:
        return numcodecs.Zstd(level=schema.codec_level, checksum=True)
    return numcodecs.GZip(level=schema.codec_level)


def encode_shard(frames: np.ndarray, schema: StoreSchema) -> bytes:
    """One shard file of zarr's sharding codec: encoded frames, then the index, then its crc32c.

    Written here rather than through zarr because zarr-python 3.1 adds ~0.5 ms of overhead per frame
    (5x the zstd time); the bytes are what zarr would write (tests read them back through zarr).
    """
    per_shard = schema.frames_per_shard
    if not 1 <= len(frames) <= per_shard:
        raise ValueError(f"encode_shard: expected 1..{per_shard} frames, got {len(frames)}")
    encode = _encoder(schema).encode
    index = np.full((per_shard, 2), _EMPTY, dtype="<u8")  # (offset, nbytes) per inner chunk
    little = frames.dtype.newbyteorder("<")
    parts, offset = [], 0
    for j, frame in enumerate(frames):
        encoded = bytes(encode(np.ascontiguousarray(frame, dtype=little)))
        index[j] = (offset, len(encoded))
        offset += len(encoded)
        parts.append(encoded)
    index_bytes = index.tobytes()
    parts.append(index_bytes)
    parts.append(google_crc32c.value(index_bytes).to_bytes(4, "little"))
    return b"".join(parts)


def write_shard(array_dir: Path, shard: int, frames: np.ndarray, schema: StoreSchema) -> Path:
    """Write shard number `shard` (frames shard*F ...) of a frame array being recorded; returns its path.

    Not fsynced here: the caller starts that with `fsync_later` so it overlaps with compression.
    """
    array_dir.mkdir(parents=True, exist_ok=True)
    data = encode_shard(frames, schema)
    path = array_dir / chunk_key((shard,) + (0,) * (frames.ndim - 1))
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_vector_array(array_dir: Path, data: np.ndarray, schema: StoreSchema) -> None:
    """A whole (T, ...) numeric or string array, one chunk per episode (zarr pads a last partial chunk)."""
    is_string = data.dtype.kind in "UO"
    dtype = "string" if is_string else data.dtype.name
    trailing = tuple(data.shape[1:])
    template = _metadata_template("vector", dtype, trailing, schema.codec, schema.codec_level, 1)
    rows = max(1, min(len(data), VECTOR_CHUNK_ROWS))
    _write_metadata(array_dir, template, shape=data.shape, chunk_shape=(rows, *trailing))
    compress = _encoder(schema).encode
    for c in range(-(-len(data) // rows)):
        block = data[c * rows : (c + 1) * rows]
        if len(block) < rows:  # zarr stores boundary chunks at full size, padded with the fill value
            pad = np.full(
                (rows - len(block), *trailing), "" if is_string else 0, dtype=object if is_string else data.dtype
            )
            block = np.concatenate([block.astype(pad.dtype), pad])
        if is_string:
            raw = _VLEN_UTF8.encode(np.asarray(block, dtype=object))
        else:
            raw = np.ascontiguousarray(block, dtype=data.dtype.newbyteorder("<"))
        (array_dir / chunk_key((c,) + (0,) * len(trailing))).write_bytes(bytes(compress(raw)))


def chunk_key(coords: tuple[int, ...]) -> str:
    return "c" + _SEP + _SEP.join(str(c) for c in coords)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory fsync makes its new entries and renames durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_FSYNC_THREADS = 16
_fsync_pool: concurrent.futures.ThreadPoolExecutor | None = None
_fsync_pool_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _fsync_pool
    with _fsync_pool_lock:
        if _fsync_pool is None:
            _fsync_pool = concurrent.futures.ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="fsync")
        return _fsync_pool


def fsync_later(path: Path) -> concurrent.futures.Future[None]:
    """Start fsyncing `path` in the background; `.result()` waits for it and re-raises its error."""
    return _pool().submit(fsync_path, path)


def fsync_tree(root: Path) -> int:
    """fsync every file and directory under `root` (inclusive); returns how many.

    The fsyncs run concurrently: the filesystem journal then commits them as one group (ext4: ~5 ms
    for 40 files instead of ~150 ms one after another). All have completed when this returns.
    """
    paths = []
    for dirpath, _dirnames, filenames in os.walk(root):
        paths.append(Path(dirpath))
        paths.extend(Path(dirpath) / name for name in filenames)
    for _ in _pool().map(fsync_path, paths):  # re-raises the first OSError
        pass
    return len(paths)


class _Decoder:
    def __init__(self, codec: dict[str, Any]) -> None:
        self.name = codec["name"]
        self._zstd = numcodecs.Zstd() if self.name == "zstd" else None

    def __call__(self, raw: bytes) -> bytes:
        if self._zstd is not None:
            return self._zstd.decode(raw)  # verifies the frame checksum written with checksum=True
        return zlib.decompress(raw, wbits=31)  # gzip container


def _layout(meta: dict[str, Any]) -> dict[str, Any] | None:
    """Recognise the layouts this module writes; None means 'let zarr read it'."""
    try:
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            return None
        if meta["chunk_key_encoding"] != {"name": "default", "configuration": {"separator": _SEP}}:
            return None
        dtype = np.dtype(meta["data_type"])
        if dtype.kind not in "biuf":
            return None
        shape = tuple(meta["shape"])
        chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        codecs = meta["codecs"]
        if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
            conf = codecs[0]["configuration"]
            inner, inner_codecs = tuple(conf["chunk_shape"]), conf["codecs"]
            index_codecs = [c["name"] for c in conf["index_codecs"]]
            if conf.get("index_location", "end") != "end" or index_codecs != ["bytes", "crc32c"]:
                return None
            if inner != (1, *shape[1:]) or chunk_shape[1:] != shape[1:]:
                return None
            codec_list, sharded = inner_codecs, True
        else:
            if chunk_shape[1:] != shape[1:]:
                return None
            codec_list, sharded = codecs, False
        if len(codec_list) != 2 or codec_list[0]["name"] != "bytes" or codec_list[1]["name"] not in ("zstd", "gzip"):
            return None
        if codec_list[0].get("configuration", {}).get("endian", "little") != "little":
            return None
        return {
            "dtype": dtype.newbyteorder("<"),
            "shape": shape,
            "rows_per_file": chunk_shape[0],
            "sharded": sharded,
            "codec": codec_list[1],
        }
    except (KeyError, TypeError, ValueError, IndexError):
        return None


class ArrayReader:
    """Reads rows of one committed array straight from its chunk files (see module docstring).

    Only for immutable (committed) arrays: it caches the metadata and shard indexes.
    """

    def __init__(self, array_dir: Path) -> None:
        self.dir = array_dir
        meta_path = array_dir / "zarr.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise DataValidationError(f"{meta_path}: cannot read zarr array metadata ({err})") from err
        self.shape: tuple[int, ...] = tuple(meta.get("shape", ()))
        self._layout = _layout(meta)
        self._zarr: zarr.Array | None = None
        self._index_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        if self._layout is not None:
            self._decode = _Decoder(self._layout["codec"])
            self._row_shape = self.shape[1:]
            self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * self._layout["dtype"].itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self._layout["dtype"] if self._layout is not None else self._fallback().dtype

    def _fallback(self) -> zarr.Array:
        if self._zarr is None:
            self._zarr = zarr.open_array(self.dir, mode="r")
        return self._zarr

    def _file(self, file_index: int) -> Path:
        return self.dir / chunk_key((file_index,) + (0,) * (len(self.shape) - 1))

    def _read_file(self, file_index: int) -> bytes:
        path = self._file(file_index)
        try:
            return path.read_bytes()
        except FileNotFoundError as err:
            raise DataValidationError(f"{path}: chunk file is missing (rows from {file_index})") from err

    def _shard_index(self, shard: int, fd: int, path: Path) -> np.ndarray:
        index = self._index_cache.get(shard)
        if index is not None:
            self._index_cache.move_to_end(shard)
            return index
        n = self._layout["rows_per_file"]
        nbytes = n * 16 + 4
        size = os.fstat(fd).st_size
        raw = os.pread(fd, nbytes, size - nbytes) if size >= nbytes else b""
        if len(raw) != nbytes or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise DataValidationError(f"{path}: shard index is truncated or corrupt (checksum mismatch)")
        index = np.frombuffer(raw[:-4], dtype="<u8").reshape(n, 2)
        self._index_cache[shard] = index
        if len(self._index_cache) > _SHARD_INDEX_CACHE_SIZE:
            self._index_cache.popitem(last=False)
        return index

    def _decode_rows(self, raw: bytes, path: Path, rows: int) -> np.ndarray:
        try:
            data = self._decode(raw)
        except Exception as err:  # codec libraries raise their own types
            raise DataValidationError(f"{path}: chunk does not decompress ({err})") from err
        if len(data) != rows * self._row_bytes:
            raise DataValidationError(f"{path}: chunk decodes to {len(data)} bytes, expected {rows * self._row_bytes}")
        return np.frombuffer(data, dtype=self._layout["dtype"]).reshape(rows, *self._row_shape)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (any order, repeats allowed) as a new (len(rows), ...) array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        self.read_into(rows, out, np.arange(len(rows)))
        return out

    def read_into(self, rows: np.ndarray, out: np.ndarray, positions: np.ndarray) -> None:
        """out[positions[i]] = row rows[i], without an intermediate copy (random batches)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"{self.dir}: rows must be in [0, {self.shape[0]}), got {rows.min()}..{rows.max()}")
        if self._layout is None:
            out[positions] = np.asarray(self._fallback().oindex[rows])
            return
        per_file = self._layout["rows_per_file"]
        files = rows // per_file
        if not self._layout["sharded"]:
            for f in np.unique(files):
                block = self._read_block(int(f))
                sel = files == f
                out[positions[sel]] = block[rows[sel] - f * per_file]
            return
        for f in np.unique(files):
            path = self._file(int(f))
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError as err:
                raise DataValidationError(f"{path}: shard file is missing") from err
            try:
                sel = np.flatnonzero(files == f)
                entries = self._shard_index(int(f), fd, path)[rows[sel] - f * per_file].tolist()
                for pos, (offset, nbytes) in zip(positions[sel].tolist(), entries, strict=True):
                    if offset == _EMPTY:
                        out[pos] = 0  # fill value; cannot happen for arrays this module wrote
                        continue
                    out[pos] = self._decode_rows(os.pread(fd, nbytes, offset), path, 1)[0]
            finally:
                os.close(fd)

    def _read_block(self, file_index: int) -> np.ndarray:
        """All rows of one unsharded chunk (the last one is padded to the chunk size by zarr)."""
        per_file = self._layout["rows_per_file"]
        return self._decode_rows(self._read_file(file_index), self._file(file_index), per_file)

    def read_all(self) -> np.ndarray:
        n = self.shape[0]
        if self._layout is None:
            return np.asarray(self._fallback()[...])
        if not self._layout["sharded"]:
            per_file = self._layout["rows_per_file"]
            blocks = [self._read_block(f) for f in range(-(-n // per_file))]
            out = np.concatenate(blocks) if len(blocks) != 1 else blocks[0]
            return out[:n]
        return self.read_rows(np.arange(n))
