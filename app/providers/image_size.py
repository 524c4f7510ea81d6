"""The pixel size of an image sent inline, read from its header without decoding the image.

Only the few bytes a header needs are taken from the base64 text: counting a prompt's tokens
must not cost a decode of a megabyte image. PNG, GIF, WebP and JPEG are read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

Size = tuple[int, int]
ByteReader = Callable[[int, int], bytes]

_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (the rest of 0xC0-0xCF are DHT, JPG and DAC, which carry no size).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length after them: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
# Metadata segments come before the frame; a header that needs more of them is no JPEG.
_JPEG_MAX_SEGMENTS = 64


def image_size(url: str) -> Size | None:
    """(width, height) of a `data:...;base64,` image URL; None for any other URL or format."""
    if not url.startswith("data:"):
        return None
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64"):
        return None
    return size_of(lambda start, length: _decoded(data, start, length))


def size_of(read: ByteReader) -> Size | None:
    """The size in an image's header; `read(start, length)` gives its bytes there."""
    head = read(0, 30)
    if head.startswith(_PNG) and head[12:16] == b"IHDR":
        return _big(head[16:20]), _big(head[20:24])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _little(head[6:8]), _little(head[8:10])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(read)
    return None


def _webp_size(head: bytes) -> Size | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: a 14-bit size after the frame's start code
        return _little(head[26:28]) & 0x3FFF, _little(head[28:30]) & 0x3FFF
    if chunk == b"VP8L":  # lossless: two 14-bit sizes less one, packed
        bits = _little(head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes less one
        return _little(head[24:27]) + 1, _little(head[27:30]) + 1
    return None


def _jpeg_size(read: ByteReader) -> Size | None:
    at = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        marker = read(at, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # a fill byte before the marker
            at += 1
        elif kind in _JPEG_FRAMES:
            frame = read(at + 5, 4)  # after the marker, length and sample precision
            return (_big(frame[2:4]), _big(frame[0:2])) if len(frame) == 4 else None
        elif kind in _JPEG_STANDALONE:
            at += 2
        else:
            at += 2 + _big(marker[2:4])
    return None


def _decoded(data: str, start: int, length: int) -> bytes:
    """Bytes `start` to `start + length` of base64 `data`, decoding only the 4-character
    groups that hold them (every group is three bytes)."""
    first, end = start // 3, -(-(start + length) // 3)
    chunk = data[first * 4 : end * 4]
    try:
        raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4))
    except (binascii.Error, ValueError):
        return b""
    offset = start - first * 3
    return raw[offset : offset + length]


def _big(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _little(data: bytes) -> int:
    return int.from_bytes(data, "little")
