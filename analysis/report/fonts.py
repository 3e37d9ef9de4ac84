"""Embedded TrueType fonts for the report: DejaVu Sans for Latin text, a CJK font for Chinese.

FDA PDF-05 wants every font embedded, so the engine never uses the 14 standard PDF fonts.
DejaVu Sans ships inside matplotlib (a dependency), so it is always there. ReportLab embeds only
TrueType outlines (``glyf``), not CFF, which rules out Debian's fonts-noto-cjk (OpenType/CFF).
The CJK font is looked up in this order: an explicit path, the ``paperang-p2-fonts-cjk`` wheel
(WenQuanYi Micro Hei, TrueType, from PyPI), then Debian's fonts-wqy-microhei, fonts-wqy-zenhei
and fonts-droid-fallback.
"""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

from analysis.report.spec import ReportError

LATIN_FONT = "DTX-DejaVuSans"
LATIN_BOLD_FONT = "DTX-DejaVuSans-Bold"
CJK_FONT = "DTX-CJK"

DEBIAN_CJK_FONTS: tuple[tuple[Path, int], ...] = (
    (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"), 0),
    (Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"), 0),
    (Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"), 0),
)


@dataclass(frozen=True)
class FontSet:
    """The registered font names and which code points the Latin font lacks."""

    regular: str
    bold: str
    cjk: str | None
    latin_chars: frozenset[int]
    cjk_chars: frozenset[int]

    def font_for(self, char: str, *, bold: bool = False) -> str:
        """Return the font that has a glyph for ``char`` (Latin first, then CJK)."""
        code = ord(char)
        if code in self.latin_chars or char in "\n\t " or self.cjk is None:
            return self.bold if bold else self.regular
        if code in self.cjk_chars:
            return self.cjk
        return self.bold if bold else self.regular

    def runs(self, text: str, *, bold: bool = False) -> Iterator[tuple[str, str]]:
        """Split ``text`` into (font name, run) pieces, each run drawable in one font."""
        current_font = ""
        current: list[str] = []
        for char in text:
            font = self.font_for(char, bold=bold)
            if font != current_font and current:
                yield current_font, "".join(current)
                current = []
            current_font = font
            current.append(char)
        if current:
            yield current_font, "".join(current)

    def missing_glyphs(self, text: str) -> str:
        """Return the characters of ``text`` that no registered font can draw."""
        return "".join(
            sorted(
                {
                    c
                    for c in set(text)  # each distinct character once
                    if c not in "\n\t\r"
                    and ord(c) not in self.latin_chars
                    and ord(c) not in self.cjk_chars
                }
            )
        )


def matplotlib_font_dir() -> Path:
    """Return matplotlib's bundled TrueType directory (holds DejaVu Sans)."""
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def cjk_font_candidates(explicit: Path | None = None) -> Iterator[tuple[Path, int]]:
    """Yield (path, subfont index) of CJK TrueType fonts in preference order."""
    if explicit is not None:
        yield explicit, 0
    spec = importlib.util.find_spec("paperang_p2_fonts_cjk")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            yield Path(location) / "fonts" / "wqy-microhei.ttc", 0
    yield from DEBIAN_CJK_FONTS


def _register(name: str, path: Path, subfont_index: int = 0) -> TTFont:
    if name in pdfmetrics.getRegisteredFontNames():
        registered = pdfmetrics.getFont(name)
        if isinstance(registered, TTFont):
            return registered
    font = TTFont(name, str(path), subfontIndex=subfont_index)
    pdfmetrics.registerFont(font)
    return font


def _code_points(font: TTFont) -> frozenset[int]:
    return frozenset(font.face.charToGlyph)


_cache: dict[Path | None, FontSet] = {}


def load_fonts(cjk_font_path: Path | None = None) -> FontSet:
    """Register the report fonts once per process and return them.

    Raises ReportError when DejaVu Sans is missing (a broken matplotlib install) or an
    explicitly named CJK font cannot be loaded.
    """
    if cjk_font_path in _cache:
        return _cache[cjk_font_path]
    font_dir = matplotlib_font_dir()
    try:
        regular = _register(LATIN_FONT, font_dir / "DejaVuSans.ttf")
        _register(LATIN_BOLD_FONT, font_dir / "DejaVuSans-Bold.ttf")
    except (OSError, TTFError) as exc:
        raise ReportError(f"cannot load DejaVu Sans from {font_dir}: {exc}") from exc
    pdfmetrics.registerFontFamily(
        LATIN_FONT,
        normal=LATIN_FONT,
        bold=LATIN_BOLD_FONT,
        italic=LATIN_FONT,
        boldItalic=LATIN_BOLD_FONT,
    )
    cjk_name: str | None = None
    cjk_chars: frozenset[int] = frozenset()
    for path, index in cjk_font_candidates(cjk_font_path):
        if not path.is_file():
            if path == cjk_font_path:
                raise ReportError(f"CJK font {path} does not exist")
            continue
        try:
            cjk = _register(f"{CJK_FONT}-{zlib.crc32(f'{path}#{index}'.encode()):08x}", path, index)
        except (OSError, TTFError) as exc:
            if path == cjk_font_path:
                raise ReportError(f"CJK font {path} is not a usable TrueType font: {exc}") from exc
            continue
        cjk_name = cjk.fontName
        cjk_chars = _code_points(cjk)
        break
    fonts = FontSet(
        regular=LATIN_FONT,
        bold=LATIN_BOLD_FONT,
        cjk=cjk_name,
        latin_chars=_code_points(regular),
        cjk_chars=cjk_chars,
    )
    _cache[cjk_font_path] = fonts
    return fonts
