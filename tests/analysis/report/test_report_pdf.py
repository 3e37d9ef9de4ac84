"""FDA PDF specification checks (regulatory-checks.md §1, PDF-01..PDF-18) on a generated report."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pikepdf
import pytest
from pdfminer.high_level import extract_pages
from pdfminer.layout import LTChar, LTPage
from pypdf import PdfReader
from report_samples import CHINESE_SITE, PRIMARY_ESTIMATE, REAL_ARMS, make_spec

from analysis.report import ReportSpec, build_report

STANDARD_FONT_NAMES = ("Helvetica", "Times", "Courier", "Symbol", "ZapfDingbats")


@pytest.fixture(scope="module")
def pdf(report_pdf: bytes) -> Iterator[pikepdf.Pdf]:
    with pikepdf.open(io.BytesIO(report_pdf)) as document:
        yield document


@pytest.fixture(scope="module")
def reader(report_pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(report_pdf))


@pytest.fixture(scope="module")
def page_texts(reader: PdfReader) -> list[str]:
    return [page.extract_text() for page in reader.pages]


@pytest.fixture(scope="module")
def layout(report_pdf: bytes) -> list[LTPage]:
    return list(extract_pages(io.BytesIO(report_pdf)))


def _chars(element: object) -> Iterator[LTChar]:
    if isinstance(element, LTChar):
        yield element
    elif hasattr(element, "__iter__"):
        for child in element:
            yield from _chars(child)


def _outline(reader: PdfReader) -> list[tuple[int, str, int]]:
    """Flatten the outline into (level, title, page index)."""
    entries: list[tuple[int, str, int]] = []

    def walk(items: list[object], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
            else:
                entries.append((level, item.title, reader.get_destination_page_number(item)))

    walk(reader.outline, 0)
    return entries


def _fonts(pdf: pikepdf.Pdf) -> Iterator[pikepdf.Dictionary]:
    """Yield every font dictionary used by pages and their Form XObjects (Type0 descendants)."""
    seen: set[tuple[int, int]] = set()

    def from_resources(resources: pikepdf.Object) -> Iterator[pikepdf.Dictionary]:
        for font in resources.get("/Font", {}).values():
            if font.objgen in seen:
                continue
            seen.add(font.objgen)
            yield font
            yield from font.get("/DescendantFonts", [])
        for xobject in resources.get("/XObject", {}).values():
            if xobject.get("/Subtype") == "/Form" and "/Resources" in xobject:
                yield from from_resources(xobject.Resources)

    for page in pdf.pages:
        yield from from_resources(page.Resources)


def test_pdf_01_version_between_1_4_and_1_7(report_pdf: bytes, pdf: pikepdf.Pdf) -> None:
    assert re.match(rb"%PDF-1\.[4-7]", report_pdf[:8])
    assert "1.4" <= pdf.pdf_version <= "1.7"


def test_pdf_02_no_encryption(report_pdf: bytes, pdf: pikepdf.Pdf) -> None:
    assert not pdf.is_encrypted
    assert "/Encrypt" not in pdf.trailer


def test_pdf_03_no_javascript_media_or_attachments(pdf: pikepdf.Pdf) -> None:
    forbidden = {"/JS", "/JavaScript", "/RichMedia", "/3D", "/Movie", "/Sound", "/EmbeddedFiles"}
    for obj in pdf.objects:
        if isinstance(obj, pikepdf.Dictionary):
            assert not forbidden & set(obj.keys()), obj.keys()
            assert obj.get("/S") not in ("/JavaScript", "/Launch")
    assert "/OpenAction" not in pdf.Root and "/AA" not in pdf.Root


def test_pdf_04_only_link_annotations(pdf: pikepdf.Pdf) -> None:
    """Links only; a signed report adds its invisible signature field's widget (a form field
    with a zero-size rectangle, not a comment)."""
    annotations = [a for page in pdf.pages for a in page.get("/Annots", [])]
    assert annotations, "the TOC must produce link annotations"
    signature = [a for a in annotations if a.Subtype == pikepdf.Name.Widget
                 and a.get("/FT") == pikepdf.Name.Sig
                 and [float(v) for v in a.Rect] == [0, 0, 0, 0]]
    assert len(signature) <= 1
    assert {str(a.Subtype) for a in annotations if a not in signature} == {"/Link"}


def test_pdf_05_every_font_embedded(pdf: pikepdf.Pdf, report_pdf: bytes, tmp_path: object) -> None:
    fonts = list(_fonts(pdf))
    assert fonts
    for font in fonts:
        if font.get("/Subtype") == "/Type0":
            continue  # its descendant carries the descriptor
        descriptor = font.get("/FontDescriptor")
        assert descriptor is not None, font.get("/BaseFont")
        assert {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor.keys()), font.BaseFont
        assert not str(font.BaseFont).lstrip("/").startswith(STANDARD_FONT_NAMES)
    pdffonts = shutil.which("pdffonts")
    if pdffonts is not None:  # poppler-utils, when the machine has it, double-checks pikepdf
        path = f"{tmp_path}/report.pdf"
        with open(path, "wb") as handle:
            handle.write(report_pdf)
        listing = subprocess.run([pdffonts, path], check=True, capture_output=True,
                                 text=True).stdout.splitlines()[2:]
        assert listing
        for line in listing:
            columns = line.split()
            assert columns[-5] == "yes", line  # emb column
            assert not columns[0].split("+")[-1].startswith(STANDARD_FONT_NAMES), line


def test_pdf_05_chinese_text_uses_embedded_cjk_font(pdf: pikepdf.Pdf,
                                                    page_texts: list[str]) -> None:
    names = [str(f.BaseFont) for f in _fonts(pdf)]
    assert any("WenQuanYi" in n or "Droid" in n or "ZenHei" in n for n in names), names
    assert any(CHINESE_SITE in text for text in page_texts)


def test_pdf_06_font_size_at_least_9pt(layout: list[LTPage]) -> None:
    sizes = [char.size for page in layout for char in _chars(page)]
    assert sizes
    assert min(sizes) >= 8.95


def test_pdf_07_text_extractable_on_every_page(page_texts: list[str]) -> None:
    assert len(page_texts) >= 5
    assert all(text.strip() for text in page_texts)


def test_pdf_08_letter_portrait_and_landscape(pdf: pikepdf.Pdf) -> None:
    boxes = {tuple(round(float(v)) for v in page.MediaBox) for page in pdf.pages}
    assert boxes == {(0, 0, 612, 792), (0, 0, 792, 612)}
    assert all(int(page.obj.get("/Rotate", 0)) == 0 for page in pdf.pages)


def test_pdf_08_a4_option() -> None:
    spec = replace(make_spec(), page_size="a4", sections=make_spec().sections[:1])
    with pikepdf.open(io.BytesIO(build_report(spec))) as pdf:
        assert {tuple(round(float(v)) for v in p.MediaBox) for p in pdf.pages} == {
            (0, 0, 595, 842)
        }


def test_pdf_09_margins(layout: list[LTPage]) -> None:
    for page in layout:
        width, height = page.width, page.height
        top_limit = height - (54 if width > height else 27)
        for char in _chars(page):
            assert char.x0 >= 54, (page.pageid, char.get_text(), char.x0)
            assert char.x1 <= width - 27, (page.pageid, char.get_text(), char.x1)
            assert char.y0 >= 27, (page.pageid, char.get_text(), char.y0)
            assert char.y1 <= top_limit, (page.pageid, char.get_text(), char.y1)


def _text_in(chars: list[LTChar], rect: list[float]) -> str:
    x0, y0, x1, y1 = rect
    inside = [
        c for c in chars
        if x0 - 1 <= (c.x0 + c.x1) / 2 <= x1 + 1 and y0 - 1 <= (c.y0 + c.y1) / 2 <= y1 + 1
    ]
    return "".join(c.get_text() for c in sorted(inside, key=lambda c: (-round(c.y0), c.x0)))


def test_pdf_10_toc_matches_bookmarks(reader: PdfReader, pdf: pikepdf.Pdf,
                                      page_texts: list[str], layout: list[LTPage]) -> None:
    outline = _outline(reader)
    assert outline
    assert max(level for level, _, _ in outline) <= 3  # at most four levels: 0..3
    assert [i for i, text in enumerate(page_texts) if "Table of Contents" in text] == [1]
    toc_page = pdf.pages[1]
    chars = list(_chars(layout[1]))
    rects = [([float(v) for v in a.Rect], a) for a in toc_page.Annots]
    text_links = [(r, a) for r, a in rects if r[0] < 500]
    number_links = [(r, a) for r, a in rects if r[0] >= 500]
    assert len(text_links) == len(number_links) == len(outline)
    toc = []
    for (rect, link), (number_rect, _) in zip(text_links, number_links):
        level = round((rect[0] - 72) / 14)
        title = _text_in(chars, rect).strip()
        number = int(_text_in(chars, number_rect).strip(" ."))
        target = pdf.pages.index(pikepdf.Page(link.Dest[0]))
        assert number == target + 1, (title, number, target + 1)
        toc.append((level, title, target))
    assert toc == outline
    captions = [t for _, t, _ in outline if t.startswith(("Table ", "Figure ", "Listing "))]
    assert len(captions) == 7


def test_pdf_11_links_inherit_zoom(pdf: pikepdf.Pdf, reader: PdfReader) -> None:
    links = [a for page in pdf.pages for a in page.get("/Annots", [])
             if a.Subtype == pikepdf.Name.Link]  # not a signed report's signature widget
    destinations = [a.Dest for a in links]
    destinations += [pdf.Root.Outlines.First.Dest]
    for destination in destinations:
        assert destination[1] == pikepdf.Name.XYZ
        assert destination[4] in (None, 0)
    for annotation in links:
        assert "/A" not in annotation or pikepdf.Name.GoTo == annotation.A.S


def test_pdf_12_opens_with_bookmarks_panel(pdf: pikepdf.Pdf) -> None:
    assert pdf.Root.PageMode == pikepdf.Name.UseOutlines
    assert "/PageLayout" not in pdf.Root
    assert "/Outlines" in pdf.Root


def test_pdf_13_page_x_of_y_equals_pdf_page_number(page_texts: list[str],
                                                     pdf: pikepdf.Pdf) -> None:
    total = len(page_texts)
    for number, text in enumerate(page_texts, start=1):
        assert f"Page {number} of {total}" in text
    assert "/PageLabels" not in pdf.Root


def test_pdf_14_linearized(pdf: pikepdf.Pdf) -> None:
    assert pdf.is_linearized
    report = io.StringIO()
    assert pdf.check_linearization(report), report.getvalue()
    assert pdf.check_pdf_syntax() == []


def test_pdf_15_no_lossy_images(pdf: pikepdf.Pdf) -> None:
    images = [
        obj for obj in pdf.objects
        if isinstance(obj, pikepdf.Stream) and obj.get("/Subtype") == "/Image"
    ]
    for image in images:
        filters = image.get("/Filter")
        names = {str(f) for f in filters} if isinstance(filters, pikepdf.Array) else {str(filters)}
        assert names <= {"/FlateDecode", "/CCITTFaxDecode", "None"}
    assert images == []  # figures are vector drawings


def test_pdf_18_document_metadata(pdf: pikepdf.Pdf) -> None:
    info = pdf.docinfo
    assert str(info.Title) == "COG-DTX-01 Statistical Analysis Report"
    assert str(info.Author)
    assert "blinded" in str(info.Subject)
    assert str(info.CreationDate) == "D:20261123200000Z"


def test_running_header_and_footer_on_every_page(page_texts: list[str]) -> None:
    for text in page_texts:
        assert "COG-DTX-01" in text
        assert "BLINDED" in text
        assert "Data cut-off 2026-10-31" in text
        assert "data snapshot 9f2c9f2c9f2c" in text


def test_rpt_01_title_page_items(page_texts: list[str]) -> None:
    first = page_texts[0]
    for expected in ("COG-DTX-01", "CogniTrain version 2.3.1", "Mild cognitive impairment",
                     "sham-controlled", "Example Digital Health", "phase 3", "3.0 (amendment 2)",
                     "2025-03-01", "2026-11-23 20:00 UTC", "2026-10-31", "Good Clinical",
                     "reportlab 5.1", "9f2c" * 16):
        assert expected in re.sub(r"\s+", " ", first) or expected in first, expected


def test_every_section_title_and_primary_estimate_extracted(page_texts: list[str],
                                                            report_spec: ReportSpec) -> None:
    body = re.sub(r"\s+", " ", " ".join(page_texts[2:]))

    def titles(sections: tuple[object, ...]) -> Iterator[str]:
        for section in sections:
            if hasattr(section, "blocks"):
                yield f"{section.number} {section.title}"  # type: ignore[attr-defined]
                yield from titles(section.blocks)  # type: ignore[attr-defined]

    for title in titles(report_spec.sections):
        assert title in body, title
    assert PRIMARY_ESTIMATE in body


def test_rpt_13_captions_carry_population_n_and_source(page_texts: list[str]) -> None:
    body = re.sub(r"\s+", " ", " ".join(page_texts))
    assert "Table 14.1.1 Demographics and baseline characteristics (Full analysis set, N = 236)" \
        in body
    assert "Source: ADSL; program tables.py; run 2026-11-23 20:00 UTC" in body


def test_listing_header_repeats_on_each_page(page_texts: list[str]) -> None:
    listing_pages = [t for t in page_texts if "S00" in t and "Relationship" in t]
    assert len(listing_pages) >= 2


def test_report_is_deterministic(unsigned_report_pdf: bytes, report_spec: ReportSpec) -> None:
    assert build_report(report_spec, forbidden_terms=REAL_ARMS) == unsigned_report_pdf


def test_rpt_11_forest_plot_says_prespecified_and_interaction_p(page_texts: list[str]) -> None:
    body = " ".join(page_texts)
    assert "Pre-specified subgroup analysis" in body
    assert "Interaction p" in body and "0.410" in body
