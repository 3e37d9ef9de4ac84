"""DEID-02..05: the safe_harbor export profile over every exporter (pure data, no database)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import date, datetime

import pytest

from analysis.exports import build_all_exports, build_sdtm_datasets
from analysis.exports.data import ExportData, FormValue, coding_key
from analysis.exports.dataset_json import DatasetJsonContext, write_dataset_json
from analysis.exports.deid import (
    REDACTED,
    apply_profile,
    date_shift_days,
    prc_id_valid,
    scrub_text,
)
from analysis.exports.metadata import CT_VERSION
from ecrf.model import FieldDef, Label
from tests.analysis.exports.export_samples import EXPORTED_AT, make_export_data

KEY = b"test-instance-key-0123456789abcdef"
PHONE = "13912345678"
EMAIL = "li.na@example.cn"
PRC_ID = "11010519491231002X"
POSTCODE = "100730"
AE_TEXT = f"Dizziness, call {PHONE} or {EMAIL}, id {PRC_ID}"


def _classified() -> ExportData:
    """The sample trial with AE verbatim classified free_text, a free-text comment not in the
    SDTM mapping, and a quasi-identifying postcode; one AE term carries identifiers."""
    data = make_export_data(blinded=False)
    forms = []
    for form in data.forms:
        fields = []
        for f in form.fields:
            if f.id in ("ae_term", "comment"):
                f = replace(f, classification="free_text")
            fields.append(f)
        if form.id == "contact":
            fields.append(FieldDef("postcode", "text", Label("Postcode", "邮编"),
                                   classification="quasi_identifier"))
        forms.append(replace(form, fields=tuple(fields)))
    values = [
        replace(v, value=AE_TEXT) if v.field_id == "ae_term" and v.value == "Fall" else v
        for v in data.values
    ]
    values.append(FormValue("S001", "screening", "contact", "postcode", POSTCODE))
    values.append(FormValue("S001", "week12", "adas_cog", "comment", f"ring {PHONE}",
                            status="submitted", collected_on=date(2026, 4, 1)))
    return replace(data, forms=tuple(forms), values=tuple(values))


def _files(data: ExportData) -> dict[str, bytes]:
    files = build_all_exports(data)
    context = DatasetJsonContext(created_at=EXPORTED_AT, study_oid=data.trial.code,
                                 metadata_version_oid="MDV.1")
    for dataset in build_sdtm_datasets(data):
        files[f"json/{dataset.name.lower()}.json"] = write_dataset_json(dataset, context)
    return files


def _participant_dates(data: ExportData) -> dict[str, set[date]]:
    dates: dict[str, set[date]] = {s.subject_code: set() for s in data.subjects}
    for s in data.subjects:
        dates[s.subject_code] |= {d for d in (s.consented_on, s.randomized_on, s.completed_on,
                                              s.withdrawn_on, s.screen_failed_on) if d}
    for v in data.values:
        if v.collected_on:
            dates[v.subject_code].add(v.collected_on)
        if isinstance(v.value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v.value):
            dates[v.subject_code].add(date.fromisoformat(v.value))
    for d in data.visit_dates:
        dates[d.subject_code].add(d.on)
    for dv in data.device_values:
        dates[dv.subject_code].add(dv.observed_at.date())
    return dates


def _dm(files: dict[str, bytes]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files["csv/subjects.csv"].decode("utf-8-sig"))))


def test_deid_04_scrub_patterns() -> None:
    assert prc_id_valid(PRC_ID)
    assert not prc_id_valid("110105194912310021")  # wrong check character: not an id
    text = (f"call +86 {PHONE}, mail {EMAIL}, see https://x.example/a?b=1, host 10.1.2.3, "
            f"v6 2001:db8::8a2e:370:7334, id {PRC_ID}, seen by Wang Min; count 110105194912310021")
    out = scrub_text(text, names=("wang min",))
    for secret in (PHONE, EMAIL, "x.example", "10.1.2.3", "2001:db8", PRC_ID, "Wang Min"):
        assert secret not in out
    assert out.count(REDACTED) == 7
    assert "110105194912310021" in out  # a number without a valid check character stays
    assert scrub_text("Headache 2 days, 38.5 C") == "Headache 2 days, 38.5 C"


def test_deid_03_age_90_plus_in_safe_harbor() -> None:
    data = _classified()
    files = _files(apply_profile(data, "safe_harbor", key=KEY))
    ages = {row["subject_code"]: row["age"] for row in _dm(files)}
    assert ages["S002"] == "90+"
    assert ages["S001"] == "72"
    dm = next(d for d in build_sdtm_datasets(apply_profile(data, "safe_harbor", key=KEY))
              if d.name == "DM")
    names = [v.name for v in dm.variables]
    by_subject = {row[names.index("USUBJID")]: row[names.index("AGE")] for row in dm.rows}
    assert by_subject["COG-DTX-01-S002"] == 90
    assert by_subject["COG-DTX-01-S001"] == 72
    assert b"93" not in files["json/dm.json"]


def test_deid_04_free_text_scrubbed_everywhere_in_safe_harbor() -> None:
    data = _classified()
    safe = apply_profile(data, "safe_harbor", key=KEY)
    files = _files(safe)
    assert {"csv/subjects.csv", "odm/odm.xml", "json/ae.json", "sdtm/ae.xpt"} <= set(files)
    for name, content in files.items():
        for secret in (PHONE, EMAIL, PRC_ID, POSTCODE):
            assert secret.encode() not in content, (name, secret)
    # AETERM keeps the event, scrubbed; the unmapped comment and the postcode are dropped
    ae = next(d for d in build_sdtm_datasets(safe) if d.name == "AE")
    terms = {row[[v.name for v in ae.variables].index("AETERM")] for row in ae.rows}
    assert f"Dizziness, call {REDACTED} or {REDACTED}, id {REDACTED}" in terms
    assert not any(v.field_id in ("comment", "postcode") for v in safe.values)
    # the limited profile is unchanged: the identifiers are there to show the scan is real
    limited = _files(apply_profile(data, "limited", key=None))
    assert any(EMAIL.encode() in c for c in limited.values())
    assert limited == _files(data)


def test_deid_04_scrubbed_term_keeps_its_coding() -> None:
    from analysis.exports.data import CodedTerm

    data = _classified()
    term = CodedTerm("Dizziness", "Nervous system disorders", "MedDRA", "27.0")
    data = replace(data, coded_terms={coding_key(AE_TEXT): term})
    safe = apply_profile(data, "safe_harbor", key=KEY)
    scrubbed = scrub_text(AE_TEXT)
    assert safe.coded_terms[coding_key(scrubbed)] == term


def test_deid_02_dates_shifted_consistently_per_participant() -> None:
    data = _classified()
    safe = apply_profile(data, "safe_harbor", key=KEY)
    files = _files(safe)
    originals = _participant_dates(data)
    shifted = _participant_dates(safe)
    for s, t in zip(data.subjects, safe.subjects, strict=True):
        offset = date_shift_days(KEY, s.subject_code)
        assert -365 <= offset <= -1
        assert t.consented_on == s.consented_on + (t.consented_on - s.consented_on)
        # intervals within a participant are kept
        assert t.randomized_on - t.consented_on == s.randomized_on - s.consented_on
        assert {d.toordinal() + offset for d in originals[s.subject_code]} == {
            d.toordinal() for d in shifted[s.subject_code]}
    assert len({date_shift_days(KEY, s.subject_code) for s in data.subjects}) == 3
    # every full date in every file is a shifted participant date, the export's own stamp or
    # a CDISC CT version (a shifted date may equal another participant's original one; no leak)
    assert data.cdisc is not None
    allowed = {d.isoformat() for ds in shifted.values() for d in ds} | {
        EXPORTED_AT.date().isoformat(), CT_VERSION, data.cdisc.ct_version}
    for name, content in files.items():
        found = {m.decode() for m in re.findall(rb"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)", content)}
        assert found <= allowed, (name, found - allowed)
    leaked = {d.isoformat() for ds in originals.values() for d in ds} - allowed
    assert len(leaked) > 10
    everything = b"\n".join(files.values())
    assert not any(d.encode() in everything for d in leaked)
    # partial dates keep their precision
    fall_onset = next(v.value for v in safe.values
                      if v.subject_code == "S002" and v.field_id == "ae_onset_on")
    assert isinstance(fall_onset, str) and re.fullmatch(r"\d{4}-\d{2}", fall_onset)
    # audit trail and signature manifestations (raw time stamps, old values) are left out
    assert safe.audit == () and safe.signatures == ()
    # the offset depends on the key: another instance shifts differently
    other = apply_profile(data, "safe_harbor", key=b"another-key")
    assert [s.consented_on for s in other.subjects] != [s.consented_on for s in safe.subjects]


def test_deid_02_safe_harbor_needs_a_key_and_a_known_profile() -> None:
    data = make_export_data()
    with pytest.raises(ValueError, match="instance key"):
        apply_profile(data, "safe_harbor", key=None)
    with pytest.raises(ValueError, match="unknown export profile"):
        apply_profile(data, "anonymous", key=KEY)
    assert isinstance(data.exported_at, datetime)
