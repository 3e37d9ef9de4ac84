"""Realistic report specifications: every block and figure kind, a Chinese site name."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

from analysis.report import (
    ConsortArm,
    ConsortData,
    FigureBlock,
    ForestData,
    ForestRow,
    KaplanMeierData,
    ListingBlock,
    MeanChangeData,
    MeanChangeSeries,
    ReportSpec,
    Section,
    SurvivalCurve,
    TableBlock,
    TextBlock,
)

PRIMARY_ESTIMATE = "-1.92 (95% CI -3.10, -0.74); p = 0.002"
CHINESE_SITE = "北京协和医院"
REAL_ARMS = ("CogniTrain app", "Sham app")


def consort_data(arm_a: str = "Arm A", arm_b: str = "Arm B") -> ConsortData:
    return ConsortData(
        n_assessed=300,
        n_excluded=60,
        excluded_reasons={
            "Not meeting inclusion criteria": 41,
            "Declined to participate": 12,
            "Other reasons": 7,
        },
        n_randomized=240,
        arms=(
            ConsortArm(
                label=arm_a,
                n_allocated=121,
                n_received=118,
                n_not_received=3,
                not_received_reasons={"No compatible phone": 2, "Withdrew consent": 1},
                n_lost_to_follow_up=5,
                lost_reasons={"Could not be contacted": 5},
                n_discontinued=7,
                discontinued_reasons={"Adverse event": 3, "Lack of efficacy": 4},
                n_analysed=119,
                n_excluded_from_analysis=2,
                excluded_from_analysis_reasons={"No post-baseline assessment": 2},
            ),
            ConsortArm(
                label=arm_b,
                n_allocated=119,
                n_received=119,
                n_not_received=0,
                n_lost_to_follow_up=4,
                lost_reasons={"Moved away": 4},
                n_discontinued=5,
                discontinued_reasons={"Participant decision": 5},
                n_analysed=117,
                n_excluded_from_analysis=2,
                excluded_from_analysis_reasons={"No post-baseline assessment": 2},
            ),
        ),
    )


def km_data(arm_a: str = "Arm A", arm_b: str = "Arm B") -> KaplanMeierData:
    rng = random.Random(7)
    curves = []
    for label, hazard in ((arm_a, 0.004), (arm_b, 0.007)):
        times = [0.0]
        survival = [1.0]
        level = 1.0
        for day in sorted(rng.sample(range(5, 180), 25)):
            level *= 1 - hazard * 8
            times.append(float(day))
            survival.append(round(level, 4))
        curves.append(
            SurvivalCurve(
                label=label,
                times=tuple(times),
                survival=tuple(survival),
                censor_times=(60.0, 120.0, 178.0),
                at_risk=(121, 104, 93, 80) if label == arm_a else (119, 95, 81, 66),
            )
        )
    return KaplanMeierData(curves=tuple(curves), risk_times=(0.0, 60.0, 120.0, 180.0))


def forest_data() -> ForestData:
    return ForestData(
        rows=(
            ForestRow("Age group", "< 75 years", 130, -2.1, -3.6, -0.6, interaction_p=0.41),
            ForestRow("Age group", "≥ 75 years", 106, -1.6, -3.3, 0.1),
            ForestRow("Sex", "Female", 128, -2.4, -4.0, -0.8, interaction_p=0.18),
            ForestRow("Sex", "Male", 108, -1.3, -3.0, 0.4),
            ForestRow("Site", CHINESE_SITE, 80, -1.8, -3.9, 0.3, interaction_p=0.77),
            ForestRow("Site", "Shanghai Ruijin", 156, -2.0, -3.4, -0.6),
        ),
        favours_left="Favours Arm A",
        favours_right="Favours Arm B",
    )


def mean_change_data(arm_a: str = "Arm A", arm_b: str = "Arm B") -> MeanChangeData:
    return MeanChangeData(
        series=(
            MeanChangeSeries(arm_a, (0, 4, 8, 12, 24), (0.0, -0.8, -1.5, -2.2, -2.6),
                             (0.0, 0.5, 0.6, 0.7, 0.8)),
            MeanChangeSeries(arm_b, (0, 4, 8, 12, 24), (0.0, -0.2, -0.4, -0.5, -0.7),
                             (0.0, 0.5, 0.6, 0.7, 0.8)),
        )
    )


def make_spec(*, blinded: bool = True, arm_a: str = "Arm A", arm_b: str = "Arm B",
              page_size: str = "letter") -> ReportSpec:
    ae_rows = tuple(
        (f"S{n:04d}", CHINESE_SITE if n % 3 == 0 else "Shanghai Ruijin",
         arm_a if n % 2 else arm_b, "Headache" if n % 4 else "Eye strain 眼疲劳", "Mild",
         "Not related", f"2026-0{1 + n % 9}-1{n % 10}")
        for n in range(1, 91)
    )
    return ReportSpec(
        trial_code="COG-DTX-01",
        trial_title="A randomized, double-blind, sham-controlled trial of a cognitive training "
        "app in elderly adults with mild cognitive impairment",
        product_name="CogniTrain",
        product_version="2.3.1",
        indication="Mild cognitive impairment in adults aged 65 and over",
        design="Randomized, double-blind, sham-controlled, parallel-group, 1:1",
        sponsor="Example Digital Health Ltd.",
        phase="Pivotal (phase 3)",
        protocol_version="3.0 (amendment 2)",
        data_cutoff_on=date(2026, 10, 31),
        blinded=blinded,
        generated_at=datetime(2026, 11, 23, 20, 0, tzinfo=UTC),
        software_versions={"dtx-trials": "0.1.0", "reportlab": "5.1", "statsmodels": "0.14"},
        data_snapshot_sha256="9f2c" * 16,
        gcp_statement="This trial was conducted in accordance with ICH E6(R3) Good Clinical "
        "Practice and the Declaration of Helsinki.",
        study_start_on=date(2025, 3, 1),
        page_size=page_size,  # type: ignore[arg-type]
        sections=(
            Section("10", "Study participants", (
                TextBlock("Participants were recruited at two sites, including "
                          f"{CHINESE_SITE} (Peking Union Medical College Hospital)."),
                FigureBlock("10.1", "CONSORT flow diagram", "All screened", 300,
                            consort_data(arm_a, arm_b), source="DS, DM; program consort.py"),
            )),
            Section("14", "Tables and figures", (
                Section("14.1", "Demographic data", (
                    TableBlock("14.1.1", "Demographics and baseline characteristics",
                               "Full analysis set", 236,
                               ("Characteristic", arm_a, arm_b, "Total"),
                               (("Age, mean (SD)", "72.1 (5.2)", "71.8 (5.6)", "72.0 (5.4)"),
                                ("Female, n (%)", "64 (53.8)", "64 (54.7)", "128 (54.2)"),
                                (f"Site {CHINESE_SITE}, n (%)", "40 (33.6)", "40 (34.2)",
                                 "80 (33.9)")),
                               footnotes=("Percentages use the column N as denominator.",),
                               source="ADSL; program tables.py; run 2026-11-23 20:00 UTC"),
                )),
                Section("14.2", "Efficacy data", (
                    Section("14.2.1", "Primary endpoint", (
                        TextBlock(f"ADAS-Cog change at week 24, difference {PRIMARY_ESTIMATE}. "
                                  "ANCOVA adjusted for baseline and site."),
                        TableBlock("14.2.1", "ANCOVA of ADAS-Cog change from baseline at week 24",
                                   "Full analysis set", 236,
                                   ("Arm", "n", "LS mean (SE)", "Difference (95% CI)", "p"),
                                   ((arm_a, "119", "-2.6 (0.4)", PRIMARY_ESTIMATE, "0.002"),
                                    (arm_b, "117", "-0.7 (0.4)", "", ""))),
                        FigureBlock("14.2.1", "Mean change in ADAS-Cog over time",
                                    "Full analysis set", 236, mean_change_data(arm_a, arm_b)),
                        FigureBlock("14.2.2", "Subgroup analysis of the primary endpoint",
                                    "Full analysis set", 236, forest_data(),
                                    footnotes=("Pre-specified subgroups.",)),
                    )),
                    Section("14.2.2", "Time to clinical worsening", (
                        FigureBlock("14.2.3", "Kaplan-Meier estimate of time to worsening",
                                    "Full analysis set", 240, km_data(arm_a, arm_b)),
                    )),
                )),
            )),
            Section("16", "Appendices", (
                Section("16.2.7", "Adverse event listings", (
                    ListingBlock("16.2.7.1", "All adverse events", "Safety set", 240,
                                 ("Subject", "Site", "Arm", "Term", "Severity", "Relationship",
                                  "Onset"), ae_rows, source="AE; program listings.py"),
                )),
            ), landscape=True),
        ),
    )
