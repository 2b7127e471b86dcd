"""Rewrite one `metadata_props` entry of an ONNX file with the standard library only.

The device side reads models with onnxruntime and must not need the `onnx` package
(nor torch), yet `stream-eval --calibrate --save` writes its settings into the model.
An ONNX file is one protobuf `ModelProto`; `metadata_props` is its repeated field 14 of
`StringStringEntryProto {key = 1; value = 2}`. Protobuf keeps the top-level fields as a
sequence of records, so the file is split into records, the entries with the given key
are dropped, one new entry is appended, and every other byte is kept as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgetune.errors import ModelError
from edgetune.files import write_bytes_atomic

METADATA_PROPS = 14  # ModelProto.metadata_props
LENGTH_DELIMITED, VARINT, FIXED64, FIXED32 = 2, 0, 1, 5


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def records(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """A message's top-level fields in order: (field number, whole record, payload).
    The payload is the bytes of a length-delimited field, else empty."""
    out, i = [], 0
    while i < len(data):
        start = i
        tag, i = _varint(data, i)
        field, wire = tag >> 3, tag & 7
        payload = b""
        if wire == VARINT:
            _, i = _varint(data, i)
        elif wire == FIXED64:
            i += 8
        elif wire == FIXED32:
            i += 4
        elif wire == LENGTH_DELIMITED:
            n, i = _varint(data, i)
            payload, i = data[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(data):
            raise ValueError("truncated field")
        out.append((field, data[start:i], payload))
    return out


def _string_field(field: int, text: str) -> bytes:
    raw = text.encode("utf-8")
    return _encode_varint(field << 3 | LENGTH_DELIMITED) + _encode_varint(len(raw)) + raw


def _entry(payload: bytes) -> tuple[str | None, str | None]:
    fields = {field: value.decode("utf-8") for field, _, value in records(payload)}
    return fields.get(1), fields.get(2)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ONNX file's metadata_props as {key: value}."""
    path = Path(path)
    try:
        return dict(_entry(payload) for field, _, payload in records(path.read_bytes())
                    if field == METADATA_PROPS)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not a readable ONNX file ({e})") from None


def set_metadata(path: str | os.PathLike, key: str, value: str) -> None:
    """Set `key` to `value` in the ONNX file's metadata_props (replacing any entry with that
    key, keeping everything else byte for byte); the file is replaced atomically."""
    path = Path(path)
    data = path.read_bytes()
    try:
        kept = [rec for field, rec, payload in records(data)
                if not (field == METADATA_PROPS and _entry(payload)[0] == key)]
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not a readable ONNX file ({e})") from None
    entry = _string_field(1, key) + _string_field(2, value)
    tag = _encode_varint(METADATA_PROPS << 3 | LENGTH_DELIMITED)
    write_bytes_atomic(path, b"".join(kept) + tag + _encode_varint(len(entry)) + entry)
