"""Map-label glyphs served by our own server, so labels work in an air-gapped room.

MapLibre asks for signed-distance-field glyphs in 256-codepoint ranges
(``/glyphs/{fontstack}/{start}-{end}.pbf``). We render a range on demand from
a local font (Noto Sans CJK, found with ``fc-match``) with Pillow, at 24 px with
a 3 px buffer like ``fontnik``, and encode the small protobuf by hand. CJK
ideographs are drawn by the browser's own fonts in plotly's MapLibre, so in
practice only the Latin ranges are requested. Without a font the style has no
labels (:func:`glyphs_available`), and names show in the hover panel.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from functools import lru_cache

import numpy as np

__all__ = ["FONTSTACK", "glyphs_available", "glyph_range"]

FONTSTACK = "gridwatch-sans"
SIZE, BUFFER, RADIUS, CUTOFF = 24, 3, 8.0, 0.25
FONT_QUERY = "Noto Sans CJK SC:style=Bold"


@lru_cache(maxsize=1)
def _font_file() -> tuple[str, int] | None:
    """The local font file and face index used for labels, or None."""
    if shutil.which("fc-match") is None:
        return None
    found = subprocess.run(["fc-match", "-f", "%{file}\n%{index}", FONT_QUERY],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    if len(found) != 2 or not found[0]:
        return None
    return found[0], int(found[1] or 0)


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    path, index = _font_file()  # type: ignore[misc]
    return ImageFont.truetype(path, SIZE, index=index, layout_engine=ImageFont.Layout.BASIC)


def glyphs_available() -> bool:
    """Whether a label font and Pillow are present (else the style has no labels)."""
    return importlib.util.find_spec("PIL") is not None and _font_file() is not None


def _sdf(alpha: np.ndarray) -> np.ndarray:
    """The fontnik/TinySDF encoding of a coverage bitmap (0..1): edge at 192."""
    inside = alpha >= 0.5
    rows, cols = np.indices(alpha.shape)
    points = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float32)

    def distance_to(mask: np.ndarray) -> np.ndarray:
        targets = points[mask.ravel()]
        if len(targets) == 0:
            return np.full(len(points), RADIUS * 2, dtype=np.float32)
        diff = points[:, None, :] - targets[None, :, :]
        return np.sqrt((diff**2).sum(axis=2).min(axis=1))

    signed = np.where(inside.ravel(), -(distance_to(~inside) - 0.5), distance_to(inside) - 0.5)
    edge = (alpha.ravel() > 0.02) & (alpha.ravel() < 0.98)
    signed = np.where(edge, 0.5 - alpha.ravel(), signed)
    values = np.clip(np.round(255 - 255 * (signed / RADIUS + CUTOFF)), 0, 255)
    return values.astype(np.uint8)


def _glyph(codepoint: int) -> dict[str, int | bytes]:
    from PIL import Image, ImageDraw

    font = _font()
    char = chr(codepoint)
    x0, y0, x1, y1 = font.getbbox(char, anchor="ls")
    advance = round(font.getlength(char))
    ascent, _ = font.getmetrics()
    width, height = max(0, x1 - x0), max(0, y1 - y0)
    glyph: dict[str, int | bytes] = {"id": codepoint, "width": width, "height": height, "left": x0,
                                     "top": -y0 - ascent, "advance": advance}
    if width and height:
        image = Image.new("L", (width + 2 * BUFFER, height + 2 * BUFFER), 0)
        ImageDraw.Draw(image).text((BUFFER - x0, BUFFER - y0), char, font=font, fill=255, anchor="ls")
        glyph["bitmap"] = _sdf(np.asarray(image, dtype=np.float32) / 255.0).tobytes()
    return glyph


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes | str, *, signed: bool = False) -> bytes:
    if isinstance(value, (bytes, str)):
        data = value.encode() if isinstance(value, str) else value
        return _varint(number << 3 | 2) + _varint(len(data)) + data
    if signed:
        value = (value << 1) ^ (value >> 31)
    return _varint(number << 3) + _varint(value)


def _encode(glyph: dict[str, int | bytes]) -> bytes:
    body = _field(1, glyph["id"])
    if "bitmap" in glyph:
        body += _field(2, glyph["bitmap"])
    body += _field(3, glyph["width"]) + _field(4, glyph["height"])
    body += _field(5, glyph["left"], signed=True) + _field(6, glyph["top"], signed=True)
    return body + _field(7, glyph["advance"])


@lru_cache(maxsize=16)
def glyph_range(start: int) -> bytes:
    """The glyph PBF of codepoints ``start .. start + 255`` (``start`` a multiple of 256)."""
    if start % 256 or not 0 <= start < 65536:
        raise LookupError(f"glyph range start must be a multiple of 256 below 65536, not {start}")
    codepoints = [cp for cp in range(start, start + 256) if chr(cp).isprintable() or cp == 32]
    stack = _field(1, FONTSTACK) + _field(2, f"{start}-{start + 255}")
    stack += b"".join(_field(3, _encode(_glyph(cp))) for cp in codepoints)
    return _field(1, stack)
