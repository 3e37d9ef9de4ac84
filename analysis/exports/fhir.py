"""HL7 FHIR R4 (4.0.1) export as a ``collection`` Bundle of plain JSON dicts.

Resources: ResearchStudy (arms only when unblinded), one Patient per subject holding nothing
but the pseudonymous subject code (FHIR-05), ResearchSubject (``assignedArm`` only when
unblinded), one Questionnaire per form (bilingual via the ``translation`` extension) and one
QuestionnaireResponse per form instance. ``check_fhir_bundle`` implements what model
validation does not: code bindings (FHIR-02), reference target types (FHIR-03) and the
Questionnaire rules que-1/que-2 plus response linkIds and answer types (FHIR-04).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from analysis.exports.data import (
    ExportData,
    ExportError,
    FieldValue,
    FormValue,
    arm_of,
    exportable_fields,
    exported_values,
    missing_code,
)
from ecrf.model import FieldDef, FormDef, Label

Resource = dict[str, Any]

TRANSLATION_URL = "http://hl7.org/fhir/StructureDefinition/translation"
DATA_ABSENT_URL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
PHASE_SYSTEM = "http://terminology.hl7.org/CodeSystem/research-study-phase"
RESEARCH_STUDY_STATUS = frozenset({
    "active", "administratively-completed", "approved", "closed-to-accrual",
    "closed-to-accrual-and-intervention", "completed", "disapproved", "in-review",
    "temporarily-closed-to-accrual", "temporarily-closed-to-accrual-and-intervention",
    "withdrawn",
})
RESEARCH_SUBJECT_STATUS = frozenset({
    "candidate", "eligible", "follow-up", "ineligible", "not-registered", "off-study",
    "on-study", "on-study-intervention", "on-study-observation", "pending-on-study",
    "potential-candidate", "screening", "withdrawn",
})
QUESTIONNAIRE_STATUS = frozenset({"draft", "active", "retired", "unknown"})
RESPONSE_STATUS = frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"})
ITEM_TYPES = frozenset({
    "group", "display", "boolean", "decimal", "integer", "date", "dateTime", "time", "string",
    "text", "url", "choice", "open-choice", "attachment", "reference", "quantity",
})
SUBJECT_STATUS = {
    "screening": "screening",
    "screen_failed": "ineligible",
    "enrolled": "on-study",
    "randomized": "on-study-intervention",
    "completed": "off-study",
    "withdrawn": "withdrawn",
}
ITEM_TYPE = {
    "integer": "integer",
    "decimal": "decimal",
    "slider": "decimal",
    "calculated": "decimal",
    "text": "string",
    "date": "date",
    "datetime": "dateTime",
    "time": "time",
    "yesno": "boolean",
    "single_choice": "choice",
    "multiple_choice": "choice",
}
ANSWER_KEY = {
    "integer": "valueInteger",
    "decimal": "valueDecimal",
    "date": "valueDate",
    "dateTime": "valueDateTime",
    "time": "valueTime",
    "string": "valueString",
    "text": "valueString",
    "boolean": "valueBoolean",
    "choice": "valueCoding",
}
ABSENT_REASON = {"not_done": "not-performed", "unknown": "unknown",
                 "not_applicable": "not-applicable"}
REFERENCE_TARGETS = {
    ("ResearchSubject", "study"): "ResearchStudy",
    ("ResearchSubject", "individual"): "Patient",
    ("QuestionnaireResponse", "subject"): "Patient",
}


def fhir_id(text: str) -> str:
    """Return ``text`` as a valid FHIR id ([A-Za-z0-9-.]{1,64})."""
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "-", text)[:64]
    if not cleaned:
        raise ExportError(f"cannot make a FHIR id from {text!r}")
    return cleaned


def _translated(label: Label) -> dict[str, Any]:
    if not label.zh:
        return {}
    return {"extension": [{"url": TRANSLATION_URL, "extension": [
        {"url": "lang", "valueCode": "zh"}, {"url": "content", "valueString": label.zh}]}]}


#: Base of the bundle's fullUrls: relative references (``Patient/x``) resolve against it. The
#: reserved ``.invalid`` domain says plainly that the export is not served from a FHIR server.
FULL_URL_BASE = "https://dtx-trials.invalid/fhir"


def full_url(data: ExportData, resource: Resource) -> str:
    """Return the entry's fullUrl: ``<base>/<trial>/<resourceType>/<id>``."""
    return f"{FULL_URL_BASE}/{fhir_id(data.trial.code)}/{resource['resourceType']}/{resource['id']}"


def questionnaire_url(data: ExportData, form: FormDef) -> str:
    """Return the canonical URL of a form's Questionnaire."""
    return f"urn:dtx-trials:{fhir_id(data.trial.code)}:questionnaire:{fhir_id(form.id)}"


def _question(f: FieldDef) -> dict[str, Any]:
    item_type = "display" if f.type == "descriptive" else ITEM_TYPE.get(f.type, "string")
    if f.type == "text" and (f.max_length is None or f.max_length > 255):
        item_type = "text"
    item: dict[str, Any] = {"linkId": f.id, "text": f.label.en, "type": item_type}
    translation = _translated(f.label)
    if translation:
        item["_text"] = translation
    if item_type == "display":
        return item
    item["required"] = f.required
    if f.type == "multiple_choice":
        item["repeats"] = True
    if f.type == "calculated":
        item["readOnly"] = True
    if f.max_length and item_type in ("string", "text"):
        item["maxLength"] = f.max_length
    if f.choices:
        item["answerOption"] = [
            {"valueCoding": {"code": c.code, "display": c.label.en}} for c in f.choices
        ]
    return item


def form_to_questionnaire(data: ExportData, form: FormDef) -> Resource:
    """Return a form as an R4 Questionnaire (identifier, file and signature fields dropped)."""
    resource: Resource = {
        "resourceType": "Questionnaire",
        "id": fhir_id(form.id),
        "url": questionnaire_url(data, form),
        "version": data.trial.protocol_version,
        "name": re.sub(r"[^A-Za-z0-9_]", "_", form.id),
        "title": form.title.en,
        "status": "active",
        "subjectType": ["Patient"],
        "item": [_question(f) for f in form.fields
                 if not f.identifier and f.type not in ("file", "signature")],
    }
    translation = _translated(form.title)
    if translation:
        resource["_title"] = translation
    return resource


def _answer(f: FieldDef, item_type: str, value: FieldValue) -> list[dict[str, Any]]:
    if value is None or value == "" or value == [] or value == ():
        return []
    key = ANSWER_KEY[item_type]
    if item_type == "choice":
        codes = list(value) if isinstance(value, list | tuple) else [str(value)]
        labels = {c.code: c.label.en for c in f.choices}
        return [{key: {"code": code, "display": labels.get(code, code)}} for code in codes]
    if item_type == "boolean":
        return [{key: str(value) in ("1", "True", "true")}]
    if item_type == "integer":
        return [{key: int(float(str(value)))}]
    if item_type == "decimal":
        return [{key: float(str(value))}]
    return [{key: str(value)}]


def _response_item(f: FieldDef, value: FieldValue) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": f.id, "text": f.label.en}
    code = missing_code(value)
    if code is not None:
        item["extension"] = [{"url": DATA_ABSENT_URL, "valueCode": ABSENT_REASON[code]}]
        return item
    item_type = _question(f)["type"]
    answers = _answer(f, item_type, value)
    if answers:
        item["answer"] = answers
    return item


def _authored(values: list[tuple[FieldDef, FormValue]]) -> str | None:
    dates = [v.collected_on for _, v in values if v.collected_on]
    return max(dates).isoformat() if dates else None


def build_fhir_bundle(data: ExportData) -> Resource:
    """Return a FHIR R4 ``collection`` Bundle (dict) of the study, subjects, forms and answers.

    Raises ExportError when the bundle breaks FHIR-02/03/04 or an input is undefined.
    """
    trial = data.trial
    study_id = fhir_id(trial.code)
    study: Resource = {
        "resourceType": "ResearchStudy",
        "id": study_id,
        "identifier": [{"system": "urn:dtx-trials:trial", "value": trial.code}],
        "title": trial.title,
        "status": trial.status,
        "phase": {"coding": [{"system": PHASE_SYSTEM, "code": trial.phase}]},
    }
    if trial.description:
        study["description"] = trial.description
    if not trial.blinded and trial.arms:
        study["arm"] = [{"name": arm.code, "description": arm.name} for arm in trial.arms]
    resources: list[Resource] = [study]
    resources += [form_to_questionnaire(data, form) for form in data.forms]
    for s in data.subjects:
        patient_id = fhir_id(f"{trial.code}-{s.subject_code}")
        resources.append({
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"system": f"urn:dtx-trials:{study_id}:subject",
                            "value": s.subject_code}],
        })
        subject: Resource = {
            "resourceType": "ResearchSubject",
            "id": fhir_id(f"{trial.code}-{s.subject_code}-rs"),
            "status": SUBJECT_STATUS[s.status],
            "study": {"reference": f"ResearchStudy/{study_id}"},
            "individual": {"reference": f"Patient/{patient_id}"},
        }
        if s.consented_on:
            subject["period"] = {"start": s.consented_on.isoformat()}
        arm = arm_of(data, s)
        if arm is not None:
            subject["assignedArm"] = arm.code
        resources.append(subject)
    instances: dict[tuple[str, str, str, int], list[tuple[FieldDef, FormValue]]] = (
        defaultdict(list))
    forms: dict[str, FormDef] = {}
    for form, f, value in exported_values(data):
        forms[form.id] = form
        instances[(value.subject_code, value.visit_id, form.id, value.repeat)].append((f, value))
    for (subject_code, visit_id, form_id, repeat), values in instances.items():
        form = forms[form_id]
        by_field = {f.id: (f, v) for f, v in values}
        is_draft = any(v.status == "draft" for _, v in values)
        response: Resource = {
            "resourceType": "QuestionnaireResponse",
            "id": fhir_id(f"{trial.code}-{subject_code}-{visit_id}-{form_id}-{repeat}"),
            "questionnaire": questionnaire_url(data, form),
            "status": "in-progress" if is_draft else "completed",
            "subject": {"reference": f"Patient/{fhir_id(f'{trial.code}-{subject_code}')}"},
            "item": [_response_item(f, by_field[f.id][1].value)
                     for f in exportable_fields(form) if f.id in by_field],
        }
        authored = _authored(values)
        if authored:
            response["authored"] = authored
        resources.append(response)
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": fhir_id(f"{trial.code}-export"),
        "type": "collection",
        "timestamp": data.exported_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "entry": [
            {"fullUrl": full_url(data, resource), "resource": resource} for resource in resources
        ],
    }
    problems = check_fhir_bundle(bundle)
    if problems:
        raise ExportError("FHIR bundle is not conforming: " + "; ".join(problems))
    return bundle


def _check_items(items: list[dict[str, Any]], link_ids: list[str], where: str,
                 problems: list[str]) -> None:
    for item in items:
        link_ids.append(item.get("linkId", ""))
        kind = item.get("type")
        if kind not in ITEM_TYPES:
            problems.append(f"FHIR-02: {where} item {item.get('linkId')} type {kind!r}")
        children = item.get("item", [])
        if kind == "group" and not children:
            problems.append(f"FHIR-04 que-1: {where} group {item.get('linkId')} has no items")
        if kind == "display" and (children or "required" in item or "answerOption" in item):
            problems.append(f"FHIR-04 que-1: {where} display {item.get('linkId')} has answers")
        _check_items(children, link_ids, where, problems)


def check_fhir_bundle(bundle: Mapping[str, Any]) -> list[str]:
    """Return the FHIR-01..04 problems of a bundle (fullUrls, codes, reference types,
    linkIds)."""
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    full_urls = [entry.get("fullUrl") for entry in bundle.get("entry", [])]
    problems = [
        f"FHIR-01: entry {i} fullUrl {url!r} does not end with {r['resourceType']}/{r.get('id')}"
        for i, (url, r) in enumerate(zip(full_urls, resources))
        if not isinstance(url, str) or not url.endswith(f"/{r['resourceType']}/{r.get('id')}")
    ]
    if len(set(full_urls)) != len(full_urls):
        problems.append("FHIR-01: duplicate fullUrl")
    ids = {(r["resourceType"], r.get("id")) for r in resources}
    questionnaires: dict[str, dict[str, str]] = {}
    for resource in resources:
        kind = resource["resourceType"]
        status = resource.get("status")
        allowed = {"ResearchStudy": RESEARCH_STUDY_STATUS,
                   "ResearchSubject": RESEARCH_SUBJECT_STATUS,
                   "Questionnaire": QUESTIONNAIRE_STATUS,
                   "QuestionnaireResponse": RESPONSE_STATUS}.get(kind)
        if allowed is not None and status not in allowed:
            problems.append(f"FHIR-02: {kind}/{resource.get('id')} status {status!r}")
        for (owner, element), target in REFERENCE_TARGETS.items():
            if kind != owner:
                continue
            reference = resource.get(element, {}).get("reference", "")
            target_type, _, target_id = reference.partition("/")
            if target_type != target or (target_type, target_id) not in ids:
                problems.append(f"FHIR-03: {kind}/{resource.get('id')}.{element} -> {reference!r}")
        if kind == "Questionnaire":
            link_ids: list[str] = []
            _check_items(resource.get("item", []), link_ids, f"Questionnaire/{resource['id']}",
                         problems)
            if len(link_ids) != len(set(link_ids)):
                problems.append(f"FHIR-04 que-2: Questionnaire/{resource['id']} linkIds repeat")
            questionnaires[resource["url"]] = {
                i["linkId"]: i["type"] for i in resource.get("item", [])
            }
        if kind == "Patient" and set(resource) - {"resourceType", "id", "identifier"}:
            problems.append(f"FHIR-05: Patient/{resource.get('id')} holds more than its code")
    for resource in resources:
        if resource["resourceType"] != "QuestionnaireResponse":
            continue
        items = questionnaires.get(resource.get("questionnaire", ""))
        if items is None:
            problems.append(f"FHIR-04: QuestionnaireResponse/{resource['id']} unknown "
                            "questionnaire")
            continue
        for item in resource.get("item", []):
            kind = items.get(item["linkId"])
            if kind is None:
                problems.append(f"FHIR-04: QuestionnaireResponse/{resource['id']} linkId "
                                f"{item['linkId']!r} not in its Questionnaire")
                continue
            for answer in item.get("answer", []):
                if list(answer) != [ANSWER_KEY.get(kind, "")]:
                    problems.append(f"FHIR-04: QuestionnaireResponse/{resource['id']} "
                                    f"{item['linkId']} answer {list(answer)} for {kind}")
    return problems


def fhir_json(bundle: Mapping[str, Any]) -> bytes:
    """Return a bundle as UTF-8 JSON bytes (stable key order, Chinese kept as characters)."""
    return json.dumps(bundle, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")


def build_fhir_exports(data: ExportData) -> dict[str, bytes]:
    """Return {``fhir-bundle.json``: bytes} for the trial."""
    return {"fhir-bundle.json": fhir_json(build_fhir_bundle(data))}

