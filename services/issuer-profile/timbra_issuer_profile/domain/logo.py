"""Logo images: a tiny parser that proves an upload is a real JPEG or PNG and reads its size.

No image library is needed: PNG is a signature plus chunks (IHDR first, IEND last, each with a
CRC-32); JPEG is a sequence of markers whose SOFn segment carries the dimensions. Anything else,
a truncated file, or a file with trailing garbage after the image is refused.
"""

import struct
import zlib
from dataclasses import dataclass

from timbra_shared.errors import Problem

MAX_LOGO_BYTES = 1024 * 1024
MIN_SIDE, MAX_SIDE = 16, 4000
PLACEMENTS = ("left", "center", "right")
DEFAULT_PLACEMENT = "left"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


class NotAnImage(ValueError):
    pass


def _png(data: bytes) -> ImageInfo:
    pos, width, height, seen_end = len(PNG_SIGNATURE), 0, 0, False
    first = True
    while pos < len(data):
        if pos + 12 > len(data):
            raise NotAnImage("PNG truncado")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        crc_at = pos + 8 + length
        if crc_at + 4 > len(data):
            raise NotAnImage("PNG truncado")
        (crc,) = struct.unpack(">I", data[crc_at:crc_at + 4])
        if zlib.crc32(kind + body) != crc:
            raise NotAnImage("PNG con CRC inválido")
        if first:
            if kind != b"IHDR" or length != 13:
                raise NotAnImage("PNG sin IHDR")
            width, height = struct.unpack(">II", body[:8])
            first = False
        pos = crc_at + 4
        if kind == b"IEND":
            seen_end = True
            break
    if not seen_end:
        raise NotAnImage("PNG sin IEND")
    return ImageInfo("image/png", width, height)


def _jpeg(data: bytes) -> ImageInfo:
    pos, size = 2, None
    while pos < len(data):
        if data[pos] != 0xFF:
            raise NotAnImage("JPEG con marcador inválido")
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            break
        if marker in (0x01, *range(0xD0, 0xD8)):
            continue
        if pos + 2 > len(data):
            raise NotAnImage("JPEG truncado")
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > len(data):
            raise NotAnImage("JPEG truncado")
        if marker in JPEG_SOF:
            if length < 7:
                raise NotAnImage("JPEG con SOF inválido")
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            size = (width, height)
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data runs until the EOI marker
            end = data.rfind(b"\xff\xd9")
            if end < pos:
                raise NotAnImage("JPEG sin fin de imagen")
            pos = end
    else:
        raise NotAnImage("JPEG sin fin de imagen")
    if size is None:
        raise NotAnImage("JPEG sin dimensiones")
    return ImageInfo("image/jpeg", *size)


def sniff_image(data: bytes) -> ImageInfo:
    """Parse the container; raises NotAnImage."""
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    raise NotAnImage("no es JPG ni PNG")


def validate_logo(data: bytes) -> tuple[ImageInfo | None, list[Problem]]:
    if len(data) > MAX_LOGO_BYTES:
        return None, [Problem("TIMBRA_LOGO_TOO_LARGE", f"El logotipo pesa más de {MAX_LOGO_BYTES // 1024} KB; usa una imagen más ligera.", path="file")]
    if not data:
        return None, [Problem("TIMBRA_LOGO_INVALID", "El archivo del logotipo está vacío.", path="file")]
    try:
        info = sniff_image(data)
    except (NotAnImage, struct.error):
        return None, [Problem("TIMBRA_LOGO_INVALID", "El logotipo debe ser una imagen JPG o PNG válida.", path="file")]
    if not (MIN_SIDE <= info.width <= MAX_SIDE and MIN_SIDE <= info.height <= MAX_SIDE):
        return info, [Problem("TIMBRA_LOGO_DIMENSIONS", f"El logotipo mide {info.width}×{info.height} px; cada lado debe medir entre {MIN_SIDE} y {MAX_SIDE} px.", path="file")]
    return info, []
