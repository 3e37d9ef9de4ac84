"""CDISC ODM 1.3.2 XML: study metadata, admin data (users, sites, signature meanings) and
clinical data with audit records and electronic signatures.

A ``Transactional`` file (the default, ODM-05) writes each audited change of a value as its own
``ItemData`` with ``TransactionType`` and one ``AuditRecord`` (user, site, UTC time, reason),
and each signature as a ``FormData`` carrying one ``Signature``. A ``Snapshot`` file writes the
current values only. ``SubjectKey`` is the pseudonymous subject code (ODM-04); identifier fields
never appear. Multiple-choice fields become one boolean item per choice, so every value matches
its ``DataType`` and code list (ODM-03); a missing-data code is ``IsNull="Yes"`` with the code in
an ``Annotation``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from analysis.exports.data import (
    AuditEntry,
    ExportData,
    ExportError,
    FieldValue,
    FormValue,
    SignatureEntry,
    exportable_fields,
    exported_values,
    form_index,
    is_identifier_field,
    missing_code,
    text_of,
)
from ecrf.model import UNSCHEDULED_VISIT, FieldDef, FormDef, Label

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
DATA_TYPES = {
    "integer": "integer",
    "decimal": "float",
    "slider": "float",
    "calculated": "float",
    "text": "text",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "yesno": "text",
    "single_choice": "text",
}
YES_NO = (("1", Label("Yes", "是")), ("0", Label("No", "否")))
FileType = Literal["Snapshot", "Transactional"]


def _oid(*parts: str) -> str:
    return ".".join(re.sub(r"[^A-Za-z0-9_-]", "_", part) for part in parts)


def _el(parent: ET.Element, tag: str, attrib: dict[str, str] | None = None,
        text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ODM_NS}}}{tag}", attrib or {})
    if text is not None:
        element.text = text
    return element


def _translated(parent: ET.Element, tag: str, label: Label) -> ET.Element:
    holder = _el(parent, tag)
    _el(holder, "TranslatedText", {XML_LANG: "en"}, label.en)
    if label.zh:
        _el(holder, "TranslatedText", {XML_LANG: "zh"}, label.zh)
    return holder


def _timestamp(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise ExportError(f"time stamp {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def item_oid(form: FormDef, field_def: FieldDef, choice: str | None = None) -> str:
    """Return the ItemDef OID of a field (or of one choice of a multiple-choice field)."""
    parts = ["I", form.id, field_def.id] + ([choice] if choice is not None else [])
    return _oid(*parts)


def _item_defs(form: FormDef) -> Iterable[tuple[str, str, Label, FieldDef, str | None]]:
    """Yield (OID, DataType, question, field, choice) for each exported item of a form."""
    for f in exportable_fields(form):
        if f.type == "multiple_choice":
            for choice in f.choices:
                label = Label(f"{f.label.en}: {choice.label.en}",
                              f"{f.label.zh or f.label.en}: {choice.label.zh or choice.label.en}")
                yield item_oid(form, f, choice.code), "boolean", label, f, choice.code
        else:
            yield item_oid(form, f), DATA_TYPES.get(f.type, "text"), f.label, f, None


def _codelist_items(f: FieldDef) -> tuple[tuple[str, Label], ...]:
    if f.type == "yesno":
        return YES_NO
    if f.type == "single_choice":
        return tuple((c.code, c.label) for c in f.choices)
    return ()


def _metadata(study: ET.Element, data: ExportData, mdv_oid: str) -> None:
    units = sorted({f.unit for form in data.forms for f in exportable_fields(form) if f.unit})
    if units:
        basic = _el(study, "BasicDefinitions")
        for unit in units:
            mu = _el(basic, "MeasurementUnit", {"OID": _oid("MU", unit), "Name": unit})
            _translated(mu, "Symbol", Label(unit))
    mdv = _el(study, "MetaDataVersion", {"OID": mdv_oid,
                                         "Name": f"Protocol version {data.trial.protocol_version}"})
    protocol = _el(mdv, "Protocol")
    for order, visit in enumerate(data.visits, start=1):
        _el(protocol, "StudyEventRef", {"StudyEventOID": _oid("SE", visit.id),
                                        "OrderNumber": str(order), "Mandatory": "Yes"})
    # a log (adverse events, medications) is entered at any visit, the unscheduled one too
    # (`forms.save_form`): every event references it, so that each FormData is one of its
    # StudyEventDef's FormRefs
    logs = tuple(form.id for form in data.forms if form.repeating)
    unscheduled = (*data.unscheduled_forms, *logs)
    if unscheduled:  # a participant's unscheduled visit, one each
        _el(protocol, "StudyEventRef", {"StudyEventOID": _oid("SE", UNSCHEDULED_VISIT),
                                        "OrderNumber": str(len(data.visits) + 1),
                                        "Mandatory": "No"})
    forms = form_index(data)
    events = [
        (visit.id, visit.label.en, "Scheduled",
         (*visit.forms, *(log for log in logs if log not in visit.forms)))
        for visit in data.visits
    ]  # fmt: skip
    if unscheduled:
        events.append((UNSCHEDULED_VISIT, "Unscheduled", "Unscheduled", unscheduled))
    for visit_id, name, kind, form_ids in events:
        event = _el(mdv, "StudyEventDef", {"OID": _oid("SE", visit_id), "Name": name,
                                           "Repeating": "No", "Type": kind})
        for order, form_id in enumerate(form_ids, start=1):
            if form_id not in forms:
                raise ExportError(f"visit {visit_id} lists undefined form {form_id!r}")
            _el(event, "FormRef", {"FormOID": _oid("F", form_id), "OrderNumber": str(order),
                                   "Mandatory": "No"})
    for form in data.forms:
        repeating = "Yes" if form.repeating else "No"
        form_def = _el(mdv, "FormDef", {"OID": _oid("F", form.id), "Name": form.title.en,
                                        "Repeating": repeating})
        _el(form_def, "ItemGroupRef", {"ItemGroupOID": _oid("IG", form.id), "Mandatory": "Yes"})
    for form in data.forms:
        group = _el(mdv, "ItemGroupDef", {"OID": _oid("IG", form.id), "Name": form.title.en,
                                          "Repeating": "Yes" if form.repeating else "No"})
        for order, (oid, _, _, f, _) in enumerate(_item_defs(form), start=1):
            _el(group, "ItemRef", {"ItemOID": oid, "OrderNumber": str(order),
                                   "Mandatory": "Yes" if f.required else "No"})
    for form in data.forms:
        for oid, data_type, question, f, choice in _item_defs(form):
            attributes = {"OID": oid, "Name": f.id if choice is None else f"{f.id}.{choice}",
                          "DataType": data_type}
            if f.max_length and data_type == "text":
                attributes["Length"] = str(f.max_length)
            item = _el(mdv, "ItemDef", attributes)
            _translated(item, "Question", question)
            if f.unit and choice is None:
                _el(item, "MeasurementUnitRef", {"MeasurementUnitOID": _oid("MU", f.unit)})
            if choice is None and _codelist_items(f):
                _el(item, "CodeListRef", {"CodeListOID": _oid("CL", form.id, f.id)})
    for form in data.forms:
        for f in exportable_fields(form):
            items = _codelist_items(f)
            if not items:
                continue
            codelist = _el(mdv, "CodeList", {"OID": _oid("CL", form.id, f.id),
                                             "Name": f"{form.id}.{f.id}", "DataType": "text"})
            for code, label in items:
                entry = _el(codelist, "CodeListItem", {"CodedValue": code})
                _translated(entry, "Decode", label)


def _admin(odm: ET.Element, data: ExportData, study_oid: str, mdv_oid: str) -> None:
    users: dict[str, tuple[str, set[str]]] = {}
    actors = [(a.user_id, a.user_name, a.site_code) for a in data.audit]
    actors += [(s.user_id, s.user_name, s.site_code) for s in data.signatures]
    for user_id, user_name, site_code in actors:
        users.setdefault(user_id, (user_name, set()))[1].add(site_code)
    meanings = sorted({s.meaning for s in data.signatures})
    admin = _el(odm, "AdminData", {"StudyOID": study_oid})
    for user_id, (name, site_codes) in sorted(users.items()):
        user = _el(admin, "User", {"OID": _oid("U", user_id)})
        _el(user, "FullName", text=name)
        for site_code in sorted(site_codes):
            _el(user, "LocationRef", {"LocationOID": _oid("LOC", site_code)})
    effective = data.exported_at.astimezone(UTC).date().isoformat()
    for site in data.sites:
        location = _el(admin, "Location", {"OID": _oid("LOC", site.code), "Name": site.name,
                                           "LocationType": "Site"})
        _el(location, "MetaDataVersionRef", {"StudyOID": study_oid, "MetaDataVersionOID": mdv_oid,
                                             "EffectiveDate": effective})
    for meaning in meanings:
        signature_def = _el(admin, "SignatureDef", {"OID": _oid("SD", meaning),
                                                    "Methodology": "Electronic"})
        _el(signature_def, "Meaning", text=meaning)
        _el(signature_def, "LegalReason", text=(
            "I intend this electronic signature to be the legally binding equivalent of my "
            f"handwritten signature ({meaning}), 21 CFR 11.50."))


def _values_for_item(f: FieldDef, value: FieldValue) -> list[tuple[str | None, str | None]]:
    """Return (choice, ODM value or None when null) pairs for one stored value."""
    if value is None or missing_code(value) is not None:
        return [(c.code, None) for c in f.choices] if f.type == "multiple_choice" else [
            (None, None)]
    if f.type == "multiple_choice":
        chosen = set(value) if isinstance(value, list | tuple) else set()
        return [(c.code, "1" if c.code in chosen else "0") for c in f.choices]
    if f.type in ("decimal", "slider", "calculated") and isinstance(value, int | float):
        return [(None, repr(float(value)))]
    return [(None, text_of(value))]


def _item_data(group: ET.Element, form: FormDef, f: FieldDef, value: FieldValue,
               transaction: str | None, audit: AuditEntry | None) -> None:
    code = missing_code(value)
    for choice, text in _values_for_item(f, value):
        attributes = {"ItemOID": item_oid(form, f, choice)}
        if transaction:
            attributes["TransactionType"] = transaction
        if text is None:
            attributes["IsNull"] = "Yes"
        else:
            attributes["Value"] = text
        item = _el(group, "ItemData", attributes)
        if audit is not None:
            record = _el(item, "AuditRecord")
            _el(record, "UserRef", {"UserOID": _oid("U", audit.user_id)})
            _el(record, "LocationRef", {"LocationOID": _oid("LOC", audit.site_code)})
            _el(record, "DateTimeStamp", text=_timestamp(audit.changed_at))
            if audit.reason:
                _el(record, "ReasonForChange", text=audit.reason)
        if code is not None:
            annotation = _el(item, "Annotation", {"SeqNum": "1"})
            _el(annotation, "Comment", text=f"missing: {code}")


InstanceKey = tuple[str, str, str, int]  # subject, visit, form, repeat


def _clinical(odm: ET.Element, data: ExportData, study_oid: str, mdv_oid: str,
              file_type: FileType) -> None:
    forms = form_index(data)
    current: dict[InstanceKey, list[tuple[FieldDef, FormValue]]] = defaultdict(list)
    for form_def, f, stored in exported_values(data):
        key = (stored.subject_code, stored.visit_id, form_def.id, stored.repeat)
        current[key].append((f, stored))
    audits: dict[InstanceKey, list[AuditEntry]] = defaultdict(list)
    for entry in sorted(data.audit, key=lambda a: a.changed_at):
        if is_identifier_field(data, entry.form_id, entry.field_id):
            continue
        audits[(entry.subject_code, entry.visit_id, entry.form_id, entry.repeat)].append(entry)
    signatures: dict[InstanceKey, list[SignatureEntry]] = defaultdict(list)
    for signature in sorted(data.signatures, key=lambda s: s.signed_at):
        signatures[(signature.subject_code, signature.visit_id, signature.form_id,
                    signature.repeat)].append(signature)
    clinical = _el(odm, "ClinicalData", {"StudyOID": study_oid, "MetaDataVersionOID": mdv_oid})
    subjects = {s.subject_code: s for s in data.subjects}
    keys = set(current) | (set(audits) | set(signatures) if file_type == "Transactional" else set())
    visit_order = {visit.id: n for n, visit in enumerate(data.visits)}
    ordered = sorted(keys, key=lambda k: (k[0], visit_order.get(k[1], 10**6), k[1], k[2], k[3]))
    by_subject: dict[str, list[InstanceKey]] = defaultdict(list)
    for key in ordered:
        by_subject[key[0]].append(key)
    for subject_code, instance_keys in by_subject.items():
        if subject_code not in subjects:
            raise ExportError(f"clinical data for unknown subject {subject_code!r}")
        subject = _el(clinical, "SubjectData", {"SubjectKey": subject_code})
        _el(subject, "SiteRef", {"LocationOID": _oid("LOC", subjects[subject_code].site_code)})
        events: dict[str, ET.Element] = {}
        for key in instance_keys:
            _, visit_id, form_id, repeat = key
            if form_id not in forms:
                raise ExportError(f"audit or signature for undefined form {form_id!r}")
            form = forms[form_id]
            if visit_id not in events:
                events[visit_id] = _el(subject, "StudyEventData",
                                       {"StudyEventOID": _oid("SE", visit_id)})
            form_attributes = {"FormOID": _oid("F", form_id)}
            if form.repeating:
                form_attributes["FormRepeatKey"] = str(repeat)
            form_data = _el(events[visit_id], "FormData", form_attributes)
            group = _el(form_data, "ItemGroupData", {"ItemGroupOID": _oid("IG", form_id)})
            if file_type == "Snapshot" or not audits.get(key):
                for f, stored in current.get(key, []):
                    _item_data(group, form, f, stored.value, None, None)
            else:
                seen: set[str] = set()
                for entry in audits[key]:
                    f = form.field(entry.field_id)
                    if entry.new_value is None:
                        transaction = "Remove"
                    elif entry.field_id in seen:
                        transaction = "Update"
                    else:
                        transaction = "Insert"
                    seen.add(entry.field_id)
                    _item_data(group, form, f, entry.new_value, transaction, entry)
                for f, stored in current.get(key, []):
                    if f.id not in seen:  # captured before the audit trail covered it
                        _item_data(group, form, f, stored.value, "Insert", None)
            if file_type == "Transactional":
                for signature in signatures.get(key, []):
                    signed = _el(events[visit_id], "FormData", form_attributes)
                    record = _el(signed, "Signature")
                    _el(record, "UserRef", {"UserOID": _oid("U", signature.user_id)})
                    _el(record, "LocationRef", {"LocationOID": _oid("LOC", signature.site_code)})
                    _el(record, "SignatureRef", {"SignatureOID": _oid("SD", signature.meaning)})
                    _el(record, "DateTimeStamp", text=_timestamp(signature.signed_at))


def build_odm(data: ExportData, file_type: FileType = "Transactional") -> bytes:
    """Return the trial as CDISC ODM 1.3.2 XML bytes (UTF-8).

    Raises ExportError for undefined forms/fields/subjects or time stamps without a zone.
    """
    ET.register_namespace("", ODM_NS)
    study_oid = _oid("ST", data.trial.code)
    mdv_oid = _oid("MDV", data.trial.code, data.trial.protocol_version)
    odm = ET.Element(f"{{{ODM_NS}}}ODM", {
        "FileOID": _oid("FILE", data.trial.code, data.exported_at.strftime("%Y%m%dT%H%M%S")),
        "FileType": file_type,
        "CreationDateTime": _timestamp(data.exported_at),
        "ODMVersion": "1.3.2",
        "Originator": "dtx-trials",
        "SourceSystem": "dtx-trials",
    })
    study = _el(odm, "Study", {"OID": study_oid})
    global_variables = _el(study, "GlobalVariables")
    _el(global_variables, "StudyName", text=data.trial.code)
    _el(global_variables, "StudyDescription", text=data.trial.description or data.trial.title)
    _el(global_variables, "ProtocolName", text=f"{data.trial.code} {data.trial.protocol_version}")
    _metadata(study, data, mdv_oid)
    if data.sites or data.audit or data.signatures:
        _admin(odm, data, study_oid, mdv_oid)
    _clinical(odm, data, study_oid, mdv_oid, file_type)
    ET.indent(odm)
    return bytes(ET.tostring(odm, encoding="utf-8", xml_declaration=True))
