"""PDF report build time with a long data listing, beside plain reportlab.

Ours: ``analysis.report.build_report`` on a report whose only section is a landscape
adverse-event listing of n rows (title page, outline, running headers, repeated listing
header, linearized PDF). Baseline, in the same run: the same rows as one reportlab
``LongTable`` (its class for long tables) with a repeated header row in a landscape
``SimpleDocTemplate`` (one pass, no outline, no post-processing), the floor for putting
these rows on pages with reportlab.
Pages per second counts each PDF's own pages.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pikepdf
from reportlab.lib import colors
from reportlab.lib.pagesizes import landscape, letter
from reportlab.platypus import LongTable, SimpleDocTemplate, TableStyle

from analysis.report import ListingBlock, ReportSpec, Section, TextBlock, build_report
from bench.harness import RatioRow, print_table

NAME = "report"
COLUMNS = ("Subject", "Site", "Arm", "Term", "Severity", "Relationship", "Onset")
TERMS = ("Headache", "Eye strain", "Dizziness", "Nausea", "Fatigue", "Insomnia")


@dataclass(frozen=True)
class Sizes:
    n_rows: tuple[int, ...]


FULL = Sizes((200, 2_000, 10_000))
QUICK = Sizes((50,))


def listing_rows(n: int) -> tuple[tuple[str, ...], ...]:
    """Return n adverse-event listing rows (deterministic, ASCII)."""
    return tuple(
        (
            f"S{i:05d}",
            ("BJ01", "SH01", "GZ01", "HK01")[i % 4],
            "Arm A" if i % 2 else "Arm B",
            TERMS[i % len(TERMS)],
            ("Mild", "Moderate", "Severe")[i % 3],
            "Not related" if i % 5 else "Possibly related",
            f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
        )
        for i in range(n)
    )


def listing_spec(rows: tuple[tuple[str, ...], ...]) -> ReportSpec:
    """Return a blinded report with one landscape section holding the listing."""
    return ReportSpec(
        trial_code="MCI-COGTRAIN-01",
        trial_title="Benchmark report with a long adverse-event listing",
        product_name="CogniTrain",
        product_version="1.0",
        indication="Mild cognitive impairment",
        design="Randomized, double-blind, parallel-group, 1:1",
        sponsor="Benchmark sponsor",
        phase="Phase 3",
        protocol_version="1",
        data_cutoff_on=date(2026, 10, 31),
        blinded=True,
        generated_at=datetime(2026, 11, 23, 20, 0, tzinfo=UTC),
        software_versions={"dtx-trials": "0.1.0"},
        data_snapshot_sha256="0" * 64,
        gcp_statement="Conducted in accordance with ICH E6(R3).",
        sections=(
            Section(
                "16",
                "Listings",
                (
                    TextBlock("All adverse events reported, by subject."),
                    ListingBlock("16.2.7.1", "All adverse events", "Safety set", len(rows),
                                 COLUMNS, rows, source="AE; bench"),
                ),
                landscape=True,
            ),
        ),
    )  # fmt: skip


def build_plain(rows: tuple[tuple[str, ...], ...]) -> bytes:
    """Render the rows as one reportlab LongTable with a repeated header (the baseline)."""
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=landscape(letter))
    table = LongTable([list(COLUMNS), *map(list, rows)], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
            ]
        )
    )
    document.build([table])
    return buffer.getvalue()


def count_pages(pdf: bytes) -> int:
    with pikepdf.open(io.BytesIO(pdf)) as document:
        return len(document.pages)


def _timed(build: Any, argument: Any) -> tuple[float, bytes]:
    started = time.perf_counter()
    pdf = build(argument)
    return time.perf_counter() - started, pdf


def run(quick: bool = False) -> list[RatioRow]:
    """Build both PDFs at each listing size; print seconds, pages and pages per second."""
    sizes = QUICK if quick else FULL
    table: list[list[Any]] = []
    rows: list[RatioRow] = []
    for n in sizes.n_rows:
        listing = listing_rows(n)
        ours_s, ours_pdf = _timed(build_report, listing_spec(listing))
        plain_s, plain_pdf = _timed(build_plain, listing)
        ours_pages, plain_pages = count_pages(ours_pdf), count_pages(plain_pdf)
        ours_rate, plain_rate = ours_pages / ours_s, plain_pages / plain_s
        table.append([f"{n:,}", ours_pages, ours_s, ours_rate, plain_pages, plain_s, plain_rate,
                      ours_rate / plain_rate])  # fmt: skip
        rows.append(RatioRow(NAME, f"PDF pages/s, listing of {n:,} rows", "pages/s",
                             ours_rate, plain_rate, "plain reportlab LongTable", True))  # fmt: skip
    print_table(
        "PDF report with a data listing: build_report vs a plain reportlab LongTable",
        ["listing rows", "ours pages", "ours s", "ours pages/s", "plain pages", "plain s",
         "plain pages/s", "ours / plain pages/s"],
        table,
    )  # fmt: skip
    return rows
