"""FHIR R4 export checks: R4B model validation (FHIR-01) and our FHIR-02..05 rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from export_samples import make_export_data, unblinded
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject

from analysis.exports import build_fhir_bundle, build_fhir_exports, check_fhir_bundle

MODELS = {
    "ResearchStudy": ResearchStudy,
    "ResearchSubject": ResearchSubject,
    "Patient": Patient,
    "Questionnaire": Questionnaire,
    "QuestionnaireResponse": QuestionnaireResponse,
}


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return build_fhir_bundle(make_export_data())


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_fhir_01_bundle_and_every_resource_parse_with_r4b_models(bundle: dict[str, Any]) -> None:
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "collection"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        MODELS[resource["resourceType"]].model_validate(resource)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Questionnaire") == 6
    assert kinds.count("Patient") == kinds.count("ResearchSubject") == 3
    # 4 form instances x 3 subjects, demographics x 3, 3 adverse events, 2 end-of-study forms
    assert kinds.count("QuestionnaireResponse") == 12 + 3 + 3 + 2


def test_fhir_01_every_entry_has_a_full_url_matching_its_resource(bundle: dict[str, Any]) -> None:
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == (f"https://dtx-trials.invalid/fhir/COG-DTX-01/"
                                    f"{resource['resourceType']}/{resource['id']}")
    broken = copy.deepcopy(bundle)
    del broken["entry"][1]["fullUrl"]
    assert any("FHIR-01: entry 1 fullUrl" in p for p in check_fhir_bundle(broken))


def test_fhir_01_json_file_round_trips() -> None:
    body = build_fhir_exports(make_export_data())["fhir-bundle.json"]
    assert Bundle.model_validate(json.loads(body)).entry


def test_fhir_02_03_04_generated_bundle_has_no_problems(bundle: dict[str, Any]) -> None:
    assert check_fhir_bundle(bundle) == []


def test_fhir_02_bad_status_code_is_reported(bundle: dict[str, Any]) -> None:
    broken = copy.deepcopy(bundle)
    _resources(broken, "ResearchSubject")[0]["status"] = "bogus"
    assert any(p.startswith("FHIR-02") for p in check_fhir_bundle(broken))


def test_fhir_03_wrong_reference_type_is_reported(bundle: dict[str, Any]) -> None:
    broken = copy.deepcopy(bundle)
    subject = _resources(broken, "ResearchSubject")[0]
    subject["study"] = {"reference": subject["individual"]["reference"]}
    assert any(p.startswith("FHIR-03") for p in check_fhir_bundle(broken))


def test_fhir_04_duplicate_link_id_and_unknown_response_item_are_reported(
        bundle: dict[str, Any]) -> None:
    broken = copy.deepcopy(bundle)
    questionnaire = _resources(broken, "Questionnaire")[1]
    questionnaire["item"].append(dict(questionnaire["item"][0]))
    _resources(broken, "QuestionnaireResponse")[0]["item"].append({"linkId": "nope"})
    problems = check_fhir_bundle(broken)
    assert any("que-2" in p for p in problems)
    assert any("'nope' not in its Questionnaire" in p for p in problems)


def test_fhir_04_answer_type_must_match_item_type(bundle: dict[str, Any]) -> None:
    broken = copy.deepcopy(bundle)
    response = _resources(broken, "QuestionnaireResponse")[1]
    response["item"][0]["answer"] = [{"valueString": "120"}]
    assert any("answer ['valueString']" in p for p in check_fhir_bundle(broken))


def test_fhir_04_every_response_link_id_is_in_its_questionnaire(bundle: dict[str, Any]) -> None:
    questionnaires = {q["url"]: {i["linkId"]: i["type"] for i in q["item"]}
                      for q in _resources(bundle, "Questionnaire")}
    for response in _resources(bundle, "QuestionnaireResponse"):
        items = questionnaires[response["questionnaire"]]
        for item in response["item"]:
            assert item["linkId"] in items


def test_fhir_05_patient_holds_only_the_pseudonymous_code(bundle: dict[str, Any]) -> None:
    for patient in _resources(bundle, "Patient"):
        assert set(patient) == {"resourceType", "id", "identifier"}
        assert patient["identifier"][0]["value"] in {"S001", "S002", "S003"}


def test_questionnaire_is_bilingual_and_drops_identifiers(bundle: dict[str, Any]) -> None:
    contact = next(q for q in _resources(bundle, "Questionnaire") if q["id"] == "contact")
    assert [i["linkId"] for i in contact["item"]] == ["preferred_language"]
    translation = contact["item"][0]["_text"]["extension"][0]["extension"]
    assert {"url": "content", "valueString": "首选语言"} in translation
    adas = next(q for q in _resources(bundle, "Questionnaire") if q["id"] == "adas-cog")
    kinds = {i["linkId"]: i["type"] for i in adas["item"]}
    assert kinds == {"total": "decimal", "symptoms": "choice", "comment": "string",
                     "intro": "display"}


def test_responses_carry_answers_and_data_absent_reason(bundle: dict[str, Any]) -> None:
    responses = {r["id"]: r for r in _resources(bundle, "QuestionnaireResponse")}
    screening = responses["COG-DTX-01-S001-screening-vitals-1"]
    answers = {i["linkId"]: i.get("answer") for i in screening["item"]}
    assert answers == {"sbp": [{"valueInteger": 120}], "weight": [{"valueDecimal": 61.5}],
                       "fasting": [{"valueBoolean": True}]}
    assert screening["status"] == "completed"
    week12 = responses["COG-DTX-01-S001-week12-vitals-1"]
    assert week12["item"][0]["extension"][0]["valueCode"] == "not-performed"
    adas = responses["COG-DTX-01-S001-week12-adas-cog-1"]
    assert adas["status"] == "in-progress"  # the comment is still a draft
    symptoms = next(i for i in adas["item"] if i["linkId"] == "symptoms")
    assert [a["valueCoding"]["code"] for a in symptoms["answer"]] == ["fatigue", "headache"]


def test_research_subject_arm_only_when_unblinded(bundle: dict[str, Any]) -> None:
    assert all("assignedArm" not in s for s in _resources(bundle, "ResearchSubject"))
    assert "arm" not in _resources(bundle, "ResearchStudy")[0]
    open_bundle = build_fhir_bundle(unblinded())
    arms = [s["assignedArm"] for s in _resources(open_bundle, "ResearchSubject")]
    assert arms == ["ACTIVE", "SHAM", "ACTIVE"]
    study_arms = {a["name"] for a in _resources(open_bundle, "ResearchStudy")[0]["arm"]}
    assert set(arms) <= study_arms
    statuses = [s["status"] for s in _resources(open_bundle, "ResearchSubject")]
    assert statuses == ["on-study-intervention", "off-study", "withdrawn"]
