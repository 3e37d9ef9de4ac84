"""The CDISC package through the API (`/exports/cdisc.zip`) on SQLite and PostgreSQL: every
file present, define.xml valid against the Define-XML 2.1 XSD, Dataset-JSON valid against its
schema, blinded for blinded roles, audited, role-checked; the ADaM rows are the SAP's rows."""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from pathlib import Path

import jsonschema
import xmlschema
from flask.testing import FlaskClient
from odmlib import schema_manager
from sqlalchemy import select

from analysis.adam import source_dataset
from analysis.sap import run_sap
from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AuditEvent
from dtx_trials.models.users import Role
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.analyses import build_trial_data, run_analysis
from dtx_trials.services.protocols import active_protocol
from tests.dtx_trials.analysis_data import populated_trial
from tests.dtx_trials.trial_flow import MCI_CODE, api, enrolled_mci_participant, load_trial
from tests.helpers import login, make_user

CODE = "T2D-COACH-01"
DSJ_SCHEMA = json.loads((Path(__file__).parents[1] / "analysis" / "exports" / "fixtures"
                         / "dataset-json-1-1.schema.json").read_text("utf-8"))
DEFINE_SCHEMA = xmlschema.XMLSchema(schema_manager.get_schema_path("define", "2.1"))


def _zip(client: FlaskClient, headers: dict[str, str]) -> dict[str, bytes]:
    response = client.get(f"/api/v1/trials/{CODE}/exports/cdisc.zip", headers=headers)
    assert response.status_code == 200, response.get_json()
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    return {name: archive.read(name) for name in archive.namelist()}


def test_cdisc_package_download_blinded_unblinded_and_audited(client: FlaskClient,
                                                              tmp_path: Path) -> None:
    trial = populated_trial("type2_diabetes.yaml", 30)
    who = {name: login(client, make_user(name, role=role, trial=trial)).headers
           for name, role in (("dm", "data_manager"), ("unblinded", "unblinded_statistician"),
                              ("monitor", "monitor"))}
    blinded = _zip(client, who["dm"])
    assert {"sdtm/define.xml", "adam/define.xml", "sdtm/dm.xpt", "adam/adsl.xpt",
            "adam/adhba1cc.xpt", "adam/adtte.xpt", "json/sdtm/dm.json",
            "json/adam/adsl.json", "conformance.json"} <= set(blinded)
    for name, content in blinded.items():
        if name.endswith("define.xml"):
            path = tmp_path / name.replace("/", "-")
            path.write_bytes(content)
            assert DEFINE_SCHEMA.is_valid(str(path)), name
        if name.endswith(".json") and name.startswith("json/"):
            errors = list(jsonschema.Draft201909Validator(DSJ_SCHEMA).iter_errors(
                json.loads(content)))
            assert not errors, (name, errors[:1])
    arms = set(db.session.scalars(select(Allocation.arm_code)))
    adsl = json.loads(blinded["json/adam/adsl.json"])
    assert not {"ARM", "TRT01P", "TRT01A"} & {c["name"] for c in adsl["columns"]}
    cells = {c for name in blinded if name.startswith("json/") for row in json.loads(
        blinded[name])["rows"] for c in row if isinstance(c, str)}
    assert not arms & cells
    report = json.loads(blinded["conformance.json"])
    assert report["n_findings"] == len(report["findings"])

    unblinded = _zip(client, who["unblinded"])
    adsl = json.loads(unblinded["json/adam/adsl.json"])
    names = [c["name"] for c in adsl["columns"]]
    assert "TRT01P" in names
    # the ADaM rows are the SAP's: N by arm of the primary endpoint = FASFL=Y by TRT01P
    _, protocol = active_protocol(db.session, trial)
    result = run_sap(build_trial_data(db.session, trial), blinded=False)
    primary = result.endpoint(protocol.primary_endpoints[0].id)
    assert primary.source_dataset == source_dataset(protocol, primary.id) == "ADHBA1CC"
    arm_names = {a.name.en: a.code for a in protocol.arms}
    counts: dict[str, int] = {}
    for row in adsl["rows"]:
        if row[names.index("FASFL")] == "Y":
            arm = arm_names[row[names.index("TRT01P")]]
            counts[arm] = counts.get(arm, 0) + 1
    assert counts == {k: v for k, v in primary.n_by_arm.items() if v}
    bds = json.loads(unblinded["json/adam/adhba1cc.json"])
    columns = [c["name"] for c in bds["columns"]]
    analysed = {row[columns.index("USUBJID")] for row in bds["rows"]
                if row[columns.index("ANL01FL")] == "Y"}
    assert len(analysed) == sum(primary.n_by_arm.values()) - sum(
        primary.n_missing_by_arm.values())

    events = list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "export.created")))
    assert len(events) == 2
    # an analysis run records, per endpoint, the ADaM dataset its analysis reads
    run = run_analysis(db.session, Actor(
        user_id=None, username="cli", printed_name="Command line", via="cli",
        grants=(Grant(trial.id, None, Role("unblinded_statistician")),)),
        trial, cutoff_on=None, unblinded=True)
    assert run.status == "succeeded", run.error
    assert run.provenance["adam_datasets"] == {
        "hba1c_change_w24": "ADHBA1CC", "hba1c_target_or": "ADHBA1CT",
        "hba1c_target_rd": "ADHBA1C1", "time_to_rescue_km": "ADTTE",
        "time_to_rescue_cox": "ADTTE"}
    assert run.results["endpoints"][0]["source_dataset"] == "ADHBA1CC"
    assert client.get(f"/api/v1/trials/{CODE}/exports/cdisc.zip",
                      headers=who["monitor"]).status_code == 403
    assert client.get(f"/api/v1/trials/{CODE}/exports/nope.zip",
                      headers=who["dm"]).status_code == 404


def test_cdisc_package_with_a_chinese_ae_term_is_422_naming_it(client: FlaskClient) -> None:
    """XPT v5 holds printable ASCII only: the package is refused with the dataset, variable
    and row named, and nothing is audited as exported."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "PUT",
        f"/participants/{subject}/visits/baseline/forms/adverse_events",
        {"values": {"ae_term": "头晕", "ae_onset_on": datetime.date.today().isoformat(),
                    "ae_severity": "moderate", "ae_serious": "0", "ae_related": "possibly"},
         "submit": True}, 200)
    response = client.get(f"/api/v1/trials/{MCI_CODE}/exports/cdisc.zip",
                          headers=staff["unblinded"].headers)
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert "ASCII" in body["message"], body
    assert "AETERM" in body["errors"]["cdisc"][0]
    assert "not printable ASCII" in body["errors"]["cdisc"][0]
    assert not list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "export.created")))
