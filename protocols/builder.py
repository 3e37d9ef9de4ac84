"""Build the typed model from plain data already checked against ``structure``.

The input has every required key (placeholders stand in for invalid values), so building never
fails; cross-reference problems are found afterwards by ``protocols.validation``.
"""

from __future__ import annotations

from typing import Any

from ecrf.model import (
    Choice,
    EditCheck,
    EproWindow,
    FieldDef,
    FormDef,
    Label,
    Schedule,
    VisitDef,
)

from .model import (
    AdherenceRule,
    AlertRule,
    AllocationCaps,
    AmendmentSpec,
    AnalysisSpec,
    Arm,
    Blinding,
    CdiscSpec,
    ComprehensionQuestion,
    ConsentDocument,
    Criterion,
    CtTerm,
    DeviceStream,
    DomainMap,
    Endpoint,
    Estimand,
    EstimandEvent,
    Hypothesis,
    IntercurrentEvent,
    MultiplicitySpec,
    Product,
    Protocol,
    RandomizationSpec,
    SafetySpec,
    SampleSize,
    SensitivityAnalysis,
    Site,
    SitePolicy,
    StratificationFactor,
    StratumLevel,
    Subgroup,
    TestMap,
    Transition,
    VariableMap,
)

Data = dict[str, Any]


def build_label(data: Data) -> Label:
    others = tuple(sorted((k, v) for k, v in data.items() if k not in ("en", "zh")))
    return Label(en=data.get("en", ""), zh=data.get("zh"), others=others)


def _label_or_none(data: Data | None) -> Label | None:
    return build_label(data) if data is not None else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


def _check(data: Data) -> EditCheck:
    return EditCheck(
        id=data["id"],
        condition=data["condition"],
        severity=data.get("severity", "error"),
        message=build_label(data["message"]),
    )


def _bound(value: Any) -> float | str | None:
    if value is None or isinstance(value, str):
        return value
    return float(value)


def build_field(data: Data) -> FieldDef:
    return FieldDef(
        id=data["id"],
        type=data["type"],
        label=build_label(data["label"]),
        help=_label_or_none(data.get("help")),
        unit=data.get("unit"),
        required=data.get("required", False),
        min=_bound(data.get("min")),
        max=_bound(data.get("max")),
        decimals=data.get("decimals"),
        max_length=data.get("max_length"),
        choices=tuple(
            Choice(code=c["code"], label=build_label(c["label"])) for c in data.get("choices", [])
        ),
        show_if=data.get("show_if"),
        calculation=data.get("calculation"),
        checks=tuple(_check(c) for c in data.get("checks", [])),
        allow_missing_codes=tuple(data.get("allow_missing_codes", [])),
        identifier=data.get("identifier", data.get("classification") == "identifier"),
        slider_labels=tuple(build_label(x) for x in data.get("slider_labels", [])),
        classification=data.get("classification"),
    )


def build_form(data: Data) -> FormDef:
    return FormDef(
        id=data["id"],
        title=build_label(data["title"]),
        fields=tuple(build_field(f) for f in data["fields"]),
        respondent=data.get("respondent", "site"),
        repeating=data.get("repeating", False),
        checks=tuple(_check(c) for c in data.get("checks", [])),
    )


def _safety(data: Data | None) -> SafetySpec:
    if not data:
        return SafetySpec()
    defaults = SafetySpec()
    rule_defaults = AlertRule(id="", form="", when="", message=Label(""))
    return SafetySpec(
        form=data.get("form"),
        serious_if=data.get("serious_if"),
        report_within_hours=data.get("report_within_hours", defaults.report_within_hours),
        notify=tuple(data["notify"]) if "notify" in data else defaults.notify,
        alerts=tuple(
            AlertRule(
                id=a["id"], form=a["form"], when=a["when"], message=build_label(a["message"]),
                notify=tuple(a["notify"]) if "notify" in a else rule_defaults.notify,
                escalate_after_hours=a.get("escalate_after_hours"),
                escalate_to=(
                    tuple(a["escalate_to"]) if "escalate_to" in a else rule_defaults.escalate_to
                ),
            )
            for a in data.get("alerts", [])
        ),
    )


def _cdisc(data: Data | None) -> CdiscSpec | None:
    if not data:
        return None
    return CdiscSpec(
        sdtmig=data["sdtmig"],
        ct_version=data["ct_version"],
        mappings=tuple(
            DomainMap(
                domain=d["domain"], form=d.get("form"), stream=d.get("stream"),
                category=d.get("category"), method=d.get("method"),
                date_field=d.get("date_field"),
                variables=tuple(
                    VariableMap(
                        variable=v["variable"], field=v.get("field"), value=v.get("value"),
                        codelist=v.get("codelist"),
                        terms=tuple(CtTerm(str(t["code"]), str(t["value"]))
                                    for t in v.get("terms", [])),
                        nullable=v.get("nullable", False),
                    )
                    for v in d.get("variables", [])
                ),
                tests=tuple(
                    TestMap(field=t["field"], testcd=t["testcd"], test=t["test"],
                            unit=t.get("unit"), laterality=t.get("laterality"))
                    for t in d.get("tests", [])
                ),
            )
            for d in data.get("mappings", [])
        ),
    )


def _visit(data: Data) -> VisitDef:
    return VisitDef(
        id=data["id"],
        label=build_label(data["label"]),
        day=data["day"],
        window_before=data.get("window_before", 0),
        window_after=data.get("window_after", 0),
        forms=tuple(data.get("forms", [])),
        anchor=data.get("anchor", "randomization"),
        reanchor=bool(data.get("reanchor", False)),
    )


def _level(data: Data) -> StratumLevel:
    return StratumLevel(
        code=data["code"],
        label=build_label(data["label"]),
        when=data.get("when"),
        is_otherwise=data.get("otherwise", False),
    )


def _randomization(data: Data) -> RandomizationSpec:
    caps = data.get("caps", {})
    return RandomizationSpec(
        method=data["method"],
        block_sizes=tuple(data.get("block_sizes", [])),
        factors=tuple(
            StratificationFactor(
                id=f["id"],
                label=build_label(f["label"]),
                field=f["field"],
                levels=tuple(_level(x) for x in f["levels"]),
                weight=float(f.get("weight", 1.0)),
                visit=f.get("visit"),
            )
            for f in data.get("factors", [])
        ),
        stratify_by_site=data.get("stratify_by_site", False),
        site_weight=float(data.get("site_weight", 1.0)),
        imbalance=data.get("imbalance", "range"),
        p=_float_or_none(data.get("p")),
        burn_in=data.get("burn_in", 0),
        overall_weight=float(data.get("overall_weight", 0.0)),
        efron_p=_float_or_none(data.get("efron_p")),
        bsd_b=data.get("bsd_b"),
        bud_lambda=data.get("bud_lambda"),
        mp_b=data.get("mp_b"),
        mp_block_length=data.get("mp_block_length"),
        caps=AllocationCaps(
            trial=caps.get("trial"), per_site=caps.get("per_site"),
            per_stratum=caps.get("per_stratum"),
        ),
    )


def _stream(data: Data) -> DeviceStream:
    rule = data.get("adherence")
    adherence = None
    if rule is not None:
        adherence = AdherenceRule(
            metric=rule["metric"],
            threshold=float(rule["threshold"]),
            daily_minimum=_float_or_none(rule.get("daily_minimum")),
            window_start_visit=rule.get("window_start_visit"),
            window_end_visit=rule.get("window_end_visit"),
            condition=rule.get("condition"),
            defines_per_protocol=rule.get("defines_per_protocol", False),
        )
    return DeviceStream(
        id=data["id"],
        kind=data["kind"],
        label=build_label(data["label"]),
        unit=data["unit"],
        cadence=data["cadence"],
        min=_float_or_none(data.get("min")),
        max=_float_or_none(data.get("max")),
        adherence=adherence,
    )


def _endpoint(data: Data) -> Endpoint:
    est = data["estimand"]
    ana = data["analysis"]
    return Endpoint(
        id=data["id"],
        name=build_label(data["name"]),
        role=data["role"],
        estimand=Estimand(
            population=build_label(est["population"]),
            analysis_set=est["analysis_set"],
            variable=build_label(est["variable"]),
            intercurrent_events=tuple(
                EstimandEvent(
                    event=e["event"], strategy=e["strategy"],
                    composite_value=_float_or_none(e.get("composite_value")),
                )
                for e in est.get("intercurrent_events", [])
            ),
            summary=build_label(est["summary"]),
        ),
        analysis=AnalysisSpec(
            model=ana["model"],
            outcome_fields=tuple(ana["outcome_fields"]),
            visits=tuple(ana.get("visits", [])),
            baseline_field=ana.get("baseline_field"),
            baseline_visit=ana.get("baseline_visit"),
            change_from_baseline=ana.get("change_from_baseline", False),
            responder_if=ana.get("responder_if"),
            event_if=ana.get("event_if"),
            event_date_field=ana.get("event_date_field"),
            covariates=tuple(ana.get("covariates", [])),
            strata=tuple(ana.get("strata", [])),
            reference_arm=ana.get("reference_arm"),
            alpha=float(ana.get("alpha", 0.05)),
            sidedness=ana.get("sidedness", "two_sided"),
            multiplicity_order=ana.get("multiplicity_order"),
            covariance=ana.get("covariance"),
            sensitivity=tuple(
                SensitivityAnalysis(
                    id=s["id"], method=s["method"], description=build_label(s["description"]),
                    supplementary=s.get("supplementary"),
                )
                for s in ana.get("sensitivity", [])
            ),
            subgroups=tuple(
                Subgroup(
                    id=s["id"], label=build_label(s["label"]),
                    levels=tuple(_level(x) for x in s["levels"]),
                )
                for s in ana.get("subgroups", [])
            ),
        ),
    )


def _event(data: Data) -> IntercurrentEvent:
    return IntercurrentEvent(
        id=data["id"],
        description=build_label(data["description"]),
        detected_by=data["detected_by"],
        condition=data.get("condition"),
        date_field=data.get("date_field"),
        form=data.get("form"),
        stream=data.get("stream"),
        inactive_days=data.get("inactive_days"),
        reasons=tuple(data.get("reasons", [])),
    )


def _multiplicity(data: Data | None) -> MultiplicitySpec | None:
    if data is None:
        return None
    return MultiplicitySpec(
        procedure=data["procedure"],
        alpha=float(data.get("alpha", 0.05)),
        hypotheses=tuple(
            Hypothesis(id=h["id"], endpoint=h["endpoint"], arm=h["arm"],
                       weight=_float_or_none(h.get("weight")))
            for h in data["hypotheses"]
        ),
        transitions=tuple(
            Transition(source=t["from"], target=t["to"], weight=float(t["weight"]))
            for t in data.get("transitions", [])
        ),
    )


def build_protocol(data: Data) -> Protocol:
    """Return the Protocol described by structurally valid plain data."""
    blinding = data.get("blinding", {"level": "open"})
    sites = data.get("sites", {})
    sample = data.get("sample_size")
    schedule = data["schedule"]
    return Protocol(
        code=data["code"],
        title=build_label(data["title"]),
        phase=data["phase"],
        therapeutic_area=data["therapeutic_area"],
        version=data["version"],
        registry_id=data.get("registry_id"),
        languages=tuple(data["languages"]) if data.get("languages") is not None else None,
        description=_label_or_none(data.get("description")),
        sponsor=data.get("sponsor"),
        product=(
            Product(name=build_label(data["product"]["name"]),
                    version=str(data["product"]["version"]))
            if data.get("product") else None
        ),
        indication=_label_or_none(data.get("indication")),
        arms=tuple(
            Arm(
                code=a["code"],
                name=build_label(a["name"]),
                ratio=a.get("ratio", 1),
                description=_label_or_none(a.get("description")),
                is_control=a.get("is_control", False),
            )
            for a in data["arms"]
        ),
        blinding=Blinding(
            level=blinding["level"],
            blinded_roles=tuple(blinding.get("blinded_roles", [])),
            activation_code_prefix=blinding.get("activation_code_prefix"),
            unblinding_notify=(
                None if blinding.get("unblinding_notify") is None
                else tuple(blinding["unblinding_notify"])
            ),
            comparative_review=tuple(blinding.get("comparative_review", [])),
        ),
        randomization=_randomization(data["randomization"]),
        sites=SitePolicy(
            allow_runtime_sites=sites.get("allow_runtime_sites", True),
            initial_sites=tuple(
                Site(code=s["code"], name=s["name"], country=s.get("country"),
                     timezone=s.get("timezone"), target=s.get("target"))
                for s in sites.get("initial", [])
            ),
        ),
        eligibility=tuple(
            Criterion(id=c["id"], kind=c["kind"], text=build_label(c["text"]),
                      expression=c["expression"])
            for c in data.get("eligibility", [])
        ),
        schedule=Schedule(
            visits=tuple(_visit(v) for v in schedule["visits"]),
            unscheduled_forms=tuple(schedule.get("unscheduled_forms", [])),
            epro=tuple(
                EproWindow(
                    form=e["form"], visit=e["visit"], opens=e.get("opens", 0),
                    closes=e.get("closes", 0), remind_after_hours=e.get("remind_after_hours"),
                    every_days=e.get("every_days"), times=e.get("times"),
                )
                for e in schedule.get("epro", [])
            ),
        ),
        forms=tuple(build_form(f) for f in data["forms"]),
        device_streams=tuple(_stream(s) for s in data.get("device_streams", [])),
        intercurrent_events=tuple(_event(e) for e in data.get("intercurrent_events", [])),
        endpoints=tuple(_endpoint(e) for e in data.get("endpoints", [])),
        multiplicity=_multiplicity(data.get("multiplicity")),
        sample_size=None if sample is None else SampleSize(
            n=sample["n"],
            power=_float_or_none(sample.get("power")),
            alpha=_float_or_none(sample.get("alpha")),
            dropout=_float_or_none(sample.get("dropout")),
            assumptions=_label_or_none(sample.get("assumptions")),
        ),
        consents=tuple(
            ConsentDocument(
                id=c["id"], version=c["version"], language=c["language"],
                signer=c.get("signer", "participant"), title=build_label(c["title"]),
                body=build_label(c["body"]) if c.get("body") else None,
                comprehension=tuple(
                    ComprehensionQuestion(
                        id=q["id"], text=build_label(q["text"]),
                        choices=tuple(
                            Choice(code=ch["code"], label=build_label(ch["label"]))
                            for ch in q["choices"]
                        ),
                        answer=q["answer"],
                    )
                    for q in c.get("comprehension", [])
                ),
            )
            for c in data.get("consents", [])
        ),
        safety=_safety(data.get("safety")),
        cdisc=_cdisc(data.get("cdisc")),
        amendment=(
            AmendmentSpec(transition=data["amendment"]["transition"])
            if data.get("amendment") else None
        ),
    )
