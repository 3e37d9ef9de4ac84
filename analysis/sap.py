"""The statistical analysis plan runner: every endpoint the protocol declares, with its
sensitivity analyses, subgroups and multiplicity, plus disposition, baseline and safety tables.

``run_sap(data, blinded=..., labels=..., seed=...)`` takes plain `TrialData` and returns a frozen,
JSON-serialisable `AnalysisResults`. A blinded run replaces every arm code by a label before any
computation, so nothing downstream can carry a real arm: either one pooled label for every arm
(blinded data review, ICH E9 section 7.1: no comparison between groups) or dummy labels A, B, ...
derived from a secret key (`arm_labels`) that the results never contain. The seed drives only
the imputations; it says nothing about which arm is which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.adam.bds import source_dataset
from analysis.datasets import (
    SubjectData,
    TrialData,
    baseline_values,
    endpoint_frame,
    in_population,
    subject_events,
    used_the_dtx,
    visible_visits,
)
from analysis.estimators._covariance import CovarianceStructure
from analysis.estimators.ancova import fit_ancova
from analysis.estimators.binary import compare_proportions, fit_cmh, fit_logistic
from analysis.estimators.gee import fit_gee, fit_random_intercept
from analysis.estimators.mmrm import fit_mmrm
from analysis.estimators.survival import estimate_kaplan_meier, fit_cox, pooled_kaplan_meier
from analysis.intercurrent import HANDLING
from analysis.multiplicity import (
    adjust_bonferroni,
    adjust_fixed_sequence,
    adjust_graphical,
    adjust_hochberg,
    adjust_holm,
)
from analysis.results import (
    AnalysisError,
    EffectEstimate,
    Serialisable,
    sample_mean,
    sample_sd,
)
from analysis.sensitivity import as_effect, impute_and_pool, tipping_point
from analysis.subgroups import estimate_subgroup_effects
from ecrf.model import FormDef, Label
from protocols.model import (
    BINARY_MODELS,
    SURVIVAL_MODELS,
    USE_STREAM_KINDS,
    Arm,
    Endpoint,
    IntercurrentEvent,
    Protocol,
)

Progress = Callable[[int, int, str], None]
COVARIANCE: dict[str, CovarianceStructure] = {
    "unstructured": "UN",
    "compound_symmetry": "CS",
    "ar1": "AR1",
    "toeplitz": "TOEP",
}
CONTINUOUS = frozenset({"ancova", "mmrm"})


@dataclass(frozen=True)
class EndpointAnalysis(Serialisable):
    """One endpoint's analysis as pre-specified, with its headline effect."""

    id: str
    name: str
    name_zh: str | None
    role: str
    model: str
    population: str
    estimand: Mapping[str, Any]
    n_by_arm: Mapping[str, int]
    n_missing_by_arm: Mapping[str, int]
    headline: Mapping[str, Any] | None
    result: Mapping[str, Any] | None
    supportive: Mapping[str, Any]
    sensitivity: tuple[Mapping[str, Any], ...]
    subgroups: tuple[Mapping[str, Any], ...]
    mean_by_visit: tuple[Mapping[str, Any], ...]
    warnings: tuple[str, ...]
    error: str | None = None
    # per estimand event: detection, strategy, what was done, participants per arm
    intercurrent: tuple[Mapping[str, Any], ...] = ()
    # missing analysed outcome per arm: after an event (hypothetical) or unrelated, and how
    missing_data: Mapping[str, Any] | None = None
    # the ADaM dataset whose ANL01FL records this analysis reads (report footnotes name it);
    # None when the endpoint's model has no ADaM dataset yet
    source_dataset: str | None = None


@dataclass(frozen=True)
class AnalysisResults(Serialisable):
    trial: str
    title: str
    protocol_version: str
    blinded: bool
    arms: tuple[Mapping[str, Any], ...]  # label, name (real names only when unblinded)
    reference_arm: str | None
    cutoff_on: str | None
    seed: int
    disposition: Mapping[str, Any]
    baseline: tuple[Mapping[str, Any], ...]
    endpoints: tuple[EndpointAnalysis, ...]
    multiplicity: Mapping[str, Any] | None
    safety: Mapping[str, Any]
    listings: Mapping[str, Any]
    # unblinded | comparative (keyed dummy labels) | pooled (blinded data review)
    review: str = "unblinded"

    def endpoint(self, endpoint_id: str) -> EndpointAnalysis:
        for endpoint in self.endpoints:
            if endpoint.id == endpoint_id:
                return endpoint
        raise AnalysisError(f"no endpoint {endpoint_id!r}")


POOLED = "All"  # the one label of a pooled blinded review


def arm_labels(protocol: Protocol, key: bytes) -> dict[str, str]:
    """Dummy labels A, B, ... for the real arm codes, in the order of HMAC-SHA256(key, code).

    Without the key every assignment is equally likely; with it the mapping can be recomputed
    (and checked against the commitment a run records, `label_commitment`)."""
    if len(key) < 16:
        raise ValueError("the label key must hold at least 128 bits")
    codes = sorted(
        (arm.code for arm in protocol.arms),
        key=lambda code: hmac.new(key, code.encode(), hashlib.sha256).digest(),
    )
    return {code: chr(ord("A") + i) for i, code in enumerate(codes)}


def pooled_labels(protocol: Protocol) -> dict[str, str]:
    """Every arm under one label: the blinded data review sees the trial as one group."""
    return {arm.code: POOLED for arm in protocol.arms}


def label_commitment(labels: Mapping[str, str], nonce: bytes) -> str:
    """SHA-256 commitment to a label mapping: hiding (the nonce is secret) and binding."""
    text = "\n".join(f"{code}={label}" for code, label in sorted(labels.items()))
    return hashlib.sha256(nonce + b"\x00" + text.encode()).hexdigest()


def arm_terms(protocol: Protocol) -> list[str]:
    """Every way the protocol names an arm: codes and English/Chinese names."""
    terms = {a.code for a in protocol.arms} | {a.name.en for a in protocol.arms}
    terms |= {a.name.zh for a in protocol.arms if a.name.zh}
    return sorted(terms, key=len, reverse=True)


def _redact_labels(node: Any, pattern: re.Pattern[str]) -> Any:
    """Return a copy of a protocol tree whose text never names an arm (blinded runs)."""
    if isinstance(node, Label):
        return Label(
            pattern.sub("[arm]", node.en), pattern.sub("[arm]", node.zh) if node.zh else None
        )
    if isinstance(node, Arm):
        return node
    if isinstance(node, tuple):
        return tuple(_redact_labels(item, pattern) for item in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {
            f.name: _redact_labels(getattr(node, f.name), pattern) for f in dataclasses.fields(node)
        }
        return dataclasses.replace(node, **changes)
    return node


def redact_protocol(protocol: Protocol) -> Protocol:
    words = "|".join(re.escape(t) for t in arm_terms(protocol))
    pattern = re.compile(rf"(?<![\w-])(?:{words})(?![\w-])", re.IGNORECASE)
    redacted: Protocol = _redact_labels(protocol, pattern)
    return redacted


def _mask(data: TrialData, labels: Mapping[str, str]) -> TrialData:
    subjects = tuple(
        dataclasses.replace(s, arm=labels.get(s.arm) if s.arm else None) for s in data.subjects
    )
    return dataclasses.replace(data, subjects=subjects)


def _blinded_view(data: TrialData, labels: Mapping[str, str]) -> TrialData:
    return dataclasses.replace(_mask(data, labels), protocol=redact_protocol(data.protocol))


def _reference(protocol: Protocol, endpoint: Endpoint | None, labels: Mapping[str, str]) -> str:
    code = (endpoint.analysis.reference_arm if endpoint else None) or (
        protocol.control_arm.code if protocol.control_arm else protocol.arms[-1].code
    )
    return labels[code]


def _effect_dict(effect: EffectEstimate | None) -> dict[str, Any] | None:
    return None if effect is None else effect.to_dict()


def _numeric_columns(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    return [n for n in names if n in frame and frame[n].notna().any()]


def _fit(
    endpoint: Endpoint,
    frame: pd.DataFrame,
    reference: str,
    *,
    model: str | None = None,
    covariance: CovarianceStructure | None = None,
) -> tuple[Any, EffectEstimate | None, dict[str, Any]]:
    """Fit the endpoint's model; return (result, headline effect, supportive results)."""
    spec = endpoint.analysis
    model = model or spec.model
    covariates = (
        _numeric_columns(frame, ["baseline", *spec.covariates])
        if model in ("ancova", "gee_per_eye", "logistic")
        else _numeric_columns(frame, spec.covariates)
    )
    strata = [s for s in spec.strata if s in frame and frame[s].notna().any()]
    outcome = "change" if spec.change_from_baseline else "value"
    supportive: dict[str, Any] = {}
    alpha = spec.alpha
    if model == "ancova":
        result = fit_ancova(
            frame,
            outcome=outcome,
            arm="arm",
            reference_arm=reference,
            covariates=covariates,
            strata=strata,
            alpha=alpha,
        )
        return result, result.effects[0] if result.effects else None, supportive
    if model == "mmrm":
        result = fit_mmrm(
            frame,
            outcome=outcome,
            arm="arm",
            visit="visit",
            subject="subject",
            reference_arm=reference,
            baseline="baseline",
            covariates=_numeric_columns(frame, spec.covariates),
            strata=strata,
            covariance=covariance or COVARIANCE[spec.covariance or "unstructured"],
            visit_order=list(spec.visits),
            alpha=alpha,
        )
        last = spec.visits[-1]
        headline = next((e for e in result.effects if e.visit == last), None)
        return result, headline, supportive
    if model in BINARY_MODELS:
        binary = frame.dropna(subset=["response"])
        if model == "logistic":
            result = fit_logistic(
                binary,
                outcome="response",
                arm="arm",
                reference_arm=reference,
                covariates=covariates,
                strata=strata,
                alpha=alpha,
            )
            supportive["risk_difference"] = compare_proportions(
                binary, outcome="response", arm="arm", reference_arm=reference, alpha=alpha
            )
            return result, result.effects[0] if result.effects else None, supportive
        if model == "risk_difference":
            result = compare_proportions(
                binary, outcome="response", arm="arm", reference_arm=reference, alpha=alpha
            )
            headline = next(
                (e for e in result.effects if e.ci_method != "wald"),
                result.effects[0] if result.effects else None,
            )
            return result, headline, supportive
        combined = binary.assign(
            _stratum=binary[strata].astype(str).agg("|".join, axis=1) if strata else "all"
        )
        result = fit_cmh(
            combined,
            outcome="response",
            arm="arm",
            stratum="_stratum",
            reference_arm=reference,
            alpha=alpha,
        )
        return result, result.effects[0] if result.effects else None, supportive
    if model == "km_logrank":
        timed = frame.dropna(subset=["time", "event"])
        survival = estimate_kaplan_meier(
            timed,
            time="time",
            event="event",
            arm="arm",
            reference_arm=reference,
            strata=strata,
            alpha=alpha,
        )
        return survival, None, supportive
    if model == "cox":
        timed = frame.dropna(subset=["time", "event"])
        result = fit_cox(
            timed,
            time="time",
            event="event",
            arm="arm",
            reference_arm=reference,
            covariates=_numeric_columns(timed, spec.covariates),
            strata=strata,
            alpha=alpha,
        )
        return result, result.effects[0] if result.effects else None, supportive
    if model == "gee_per_eye":
        complete = frame.dropna(subset=[outcome])
        result = fit_gee(
            complete,
            outcome=outcome,
            arm="arm",
            cluster="subject",
            reference_arm=reference,
            covariates=covariates,
            factors=strata,
            alpha=alpha,
        )
        supportive["random_intercept"] = fit_random_intercept(
            complete,
            outcome=outcome,
            arm="arm",
            cluster="subject",
            reference_arm=reference,
            covariates=covariates,
            factors=strata,
            alpha=alpha,
        )
        return result, result.effects[0] if result.effects else None, supportive
    raise AnalysisError(f"unknown model {model}")


def _counts(
    frame: pd.DataFrame, arms: Sequence[str], outcome: str
) -> tuple[dict[str, int], dict[str, int]]:
    # vectorised: "first" arm and "any value" per subject without a Python call per subject
    grouped = frame.assign(_has=frame[outcome].notna()).groupby("subject")
    per_subject = pd.DataFrame({"arm": grouped["arm"].first(), "has": grouped["_has"].any()})
    truncated = frame.attrs.get("truncated", {})
    n = {arm: int((per_subject["arm"] == arm).sum()) + truncated.get(arm, 0) for arm in arms}
    analysed = per_subject[per_subject["has"]]
    missing = {arm: n[arm] - int((analysed["arm"] == arm).sum()) for arm in arms}
    return n, missing


def detection_text(event: IntercurrentEvent, protocol: Protocol) -> str:
    """How the event is found in the data, in words (stream by its label, which a blinded run
    has redacted)."""
    if event.detected_by == "form_field":
        date = f"dated by {event.date_field}" if event.date_field else "dated by the visit"
        return f"form data: {event.condition} ({date})"
    if event.detected_by == "repeating_form":
        rule = f" where {event.condition}" if event.condition else ""
        return f"log form {event.form}{rule}, first {event.date_field}"
    if event.detected_by == "device_inactivity":
        stream = next((d.label.en for d in protocol.device_streams if d.id == event.stream), "")
        return (f"device data ({stream}): no use for {event.inactive_days} consecutive "
                "days (dated by the last day of use)")
    reasons = f" ({', '.join(event.reasons)})" if event.reasons else " (any reason)"
    return f"withdrawal{reasons}, dated by the withdrawal"


def _per_arm(frame: pd.DataFrame, mask: pd.Series, arms: Sequence[str]) -> dict[str, int]:
    subjects = frame[mask].groupby("subject")["arm"].first()
    return {arm: int((subjects == arm).sum()) for arm in arms}


def _intercurrent_summary(
    protocol: Protocol, endpoint: Endpoint, frame: pd.DataFrame, arms: Sequence[str]
) -> list[dict[str, Any]]:
    """Per estimand event: how it is detected, the strategy, what was done and counts by arm."""
    out: list[dict[str, Any]] = []
    for item in endpoint.estimand.intercurrent_events:
        event = protocol.intercurrent_event(item.event)
        column = f"ice_{item.event}"
        has = frame[column].notna() if column in frame else pd.Series(False, index=frame.index)
        changed = (frame["ice_event"] == item.event) if "ice_event" in frame else has & False
        actions = (
            frame.loc[changed, "ice_action"].value_counts().to_dict() if changed.any() else {}
        )
        truncated = frame.attrs.get("truncated", {}) if item.strategy == "while_on_treatment" \
            else {}
        out.append(
            {
                "event": item.event,
                "description": event.description.en,
                "detected_by": event.detected_by,
                "detection": detection_text(event, protocol),
                "strategy": item.strategy,
                "composite_value": item.composite_value,
                "handling": HANDLING.get(item.strategy, ""),
                "n_with_event": _per_arm(frame, has, arms),
                "n_affected": {
                    arm: n + truncated.get(arm, 0)
                    for arm, n in _per_arm(frame, changed, arms).items()
                },
                "records_changed": {str(k): int(v) for k, v in actions.items()},
            }
        )
    return out


def _missing_summary(
    endpoint: Endpoint, frame: pd.DataFrame, arms: Sequence[str], outcome: str
) -> dict[str, Any] | None:
    """Participants whose analysed outcome (final visit) is missing, by arm and by cause."""
    spec = endpoint.analysis
    if spec.model in SURVIVAL_MODELS or outcome not in frame:
        return None
    final = frame[frame["visit"] == spec.visits[-1]] if "visit" in frame and spec.visits \
        else frame
    missing = final[outcome].isna()
    after_event = missing & (final["ice_action"] == "set_missing")
    model = spec.model
    how = {
        "mmrm": "missing at random: the MMRM likelihood uses every observed visit",
        "ancova": "missing at random given the covariates: complete-case ANCOVA (the same "
        "estimate as multiple imputation under MAR with these covariates)",
        "gee_per_eye": "excluded (GEE is valid under MCAR only); see the sensitivity analyses",
    }.get(model, "excluded from the fit (valid under MAR given the covariates); see the "
          "sensitivity analyses")
    return {
        "visit": spec.visits[-1] if spec.visits else None,
        "after_hypothetical_event": _per_arm(final, after_event, arms),
        "other": _per_arm(final, missing & ~after_event, arms),
        "handling": how,
    }


def _mean_by_visit(
    frame: pd.DataFrame, column: str, days: Mapping[str, int]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "visit" not in frame or column not in frame:
        return rows
    for (arm, visit), group in frame.dropna(subset=[column]).groupby(["arm", "visit"], sort=False):
        values = group[column].astype(float)
        sd = sample_sd(values)
        rows.append(
            {
                "arm": str(arm),
                "visit": str(visit),
                "day": days.get(str(visit)),
                "n": len(values),
                "mean": sample_mean(values),
                "se": sd / math.sqrt(len(values)) if sd is not None else None,
            }
        )
    return rows


def _sensitivities(
    data: TrialData, endpoint: Endpoint, frame: pd.DataFrame, reference: str, seed: int
) -> list[dict[str, Any]]:
    spec = endpoint.analysis
    outcome = "change" if spec.change_from_baseline else "value"
    out: list[dict[str, Any]] = []
    final = frame[frame["visit"] == spec.visits[-1]] if "visit" in frame and spec.visits else frame
    for sensitivity in spec.sensitivity:
        entry: dict[str, Any] = {
            "id": sensitivity.id,
            "method": sensitivity.method,
            "description": sensitivity.description.en,
            "supplementary": sensitivity.is_supplementary,
        }
        try:
            if sensitivity.method == "per_protocol":
                pp = endpoint_frame(data, endpoint, "per_protocol")
                _, effect, _ = _fit(endpoint, pp, reference)
                entry.update(population="per_protocol", effects=[_effect_dict(effect)])
            elif sensitivity.method in ("complete_case", "alternative_model", "other"):
                model: str = "ancova" if spec.model == "mmrm" else spec.model
                covariance: CovarianceStructure | None = (
                    "CS" if spec.model == "mmrm" and sensitivity.method != "complete_case" else None
                )
                model = spec.model if covariance else model
                subset = final if model == "ancova" and spec.model == "mmrm" else frame
                _, effect, _ = _fit(endpoint, subset, reference, model=model, covariance=covariance)
                entry.update(
                    model=model if not covariance else "mmrm (CS)", effects=[_effect_dict(effect)]
                )
            elif sensitivity.method in (
                "multiple_imputation_mar",
                "reference_based_mi",
                "tipping_point",
            ):
                if spec.model not in CONTINUOUS:
                    raise AnalysisError(
                        f"multiple imputation is implemented for continuous "
                        f"endpoints, not {spec.model}"
                    )
                mi_frame = final.assign(baseline=final["baseline"])
                covariates = _numeric_columns(mi_frame, ["baseline", *spec.covariates])
                strata = [s for s in spec.strata if s in mi_frame and mi_frame[s].notna().any()]
                common = {
                    "outcome": outcome,
                    "arm": "arm",
                    "reference_arm": reference,
                    "covariates": covariates,
                    "strata": strata,
                    "seed": seed,
                    "alpha": spec.alpha,
                }
                if sensitivity.method == "tipping_point":
                    sd = float(mi_frame[outcome].std(ddof=1) or 1.0)
                    primary = _fit(endpoint, frame, reference)[1]
                    sign = 1.0 if primary is None or primary.estimate < 0 else -1.0
                    deltas = [round(sign * sd * k / 4, 4) for k in range(0, 9)]
                    results, tip = tipping_point(mi_frame, deltas=deltas, **common)  # type: ignore[arg-type]
                    entry.update(
                        strategy="delta-adjusted MAR",
                        deltas=deltas,
                        effects=[r.to_dict() for r in results],
                        tipping_delta=tip,
                    )
                else:
                    strategy = "mar" if sensitivity.method == "multiple_imputation_mar" else "j2r"
                    pooled = impute_and_pool(mi_frame, strategy=strategy, **common)  # type: ignore[arg-type]
                    entry.update(
                        strategy=strategy,
                        effects=[
                            {
                                **as_effect(p).to_dict(),
                                "n_imputed": p.n_imputed,
                                "n_imputations": p.n_imputations,
                            }
                            for p in pooled
                        ],
                    )
            else:
                raise AnalysisError(f"sensitivity method {sensitivity.method} not implemented")
        except (AnalysisError, ValueError, KeyError) as exc:
            entry.update(status="not_run", note=str(exc))
        out.append(entry)
    return out


def _subgroups(endpoint: Endpoint, frame: pd.DataFrame, reference: str) -> list[dict[str, Any]]:
    spec = endpoint.analysis
    out: list[dict[str, Any]] = []
    if not spec.subgroups:
        return out
    binary = spec.model in BINARY_MODELS
    outcome = "response" if binary else ("change" if spec.change_from_baseline else "value")
    final = frame[frame["visit"] == spec.visits[-1]] if "visit" in frame and spec.visits else frame
    final = final.dropna(subset=[outcome]) if outcome in final else final
    for subgroup in spec.subgroups:
        column = f"subgroup_{subgroup.id}"
        try:
            if spec.model not in ("ancova", "mmrm", "logistic"):
                raise AnalysisError("subgroups are estimated for ANCOVA/MMRM/logistic endpoints")
            result = estimate_subgroup_effects(
                final.dropna(subset=[column]),
                outcome=outcome,
                arm="arm",
                subgroup=column,
                reference_arm=reference,
                covariates=_numeric_columns(final, ["baseline", *spec.covariates]),
                strata=[s for s in spec.strata if s in final and final[s].notna().any()],
                method="logistic" if binary else "ancova",
                alpha=spec.alpha,
            )
            out.append(
                {
                    **result.to_dict(),
                    "id": subgroup.id,
                    "label": subgroup.label.en,
                    "level_labels": {lv.code: lv.label.en for lv in subgroup.levels},
                }
            )
        except (AnalysisError, ValueError) as exc:
            out.append(
                {
                    "id": subgroup.id,
                    "label": subgroup.label.en,
                    "status": "not_run",
                    "note": str(exc),
                }
            )
    return out


def _outcome_column(model: str, change_from_baseline: bool) -> str:
    if model in ("km_logrank", "cox"):
        return "time"
    if model in BINARY_MODELS:
        return "response"
    return "change" if change_from_baseline else "value"


def _endpoint_base(
    data: TrialData, endpoint: Endpoint, arms: Sequence[str], reference: str | None
) -> dict[str, Any]:
    treatment = (
        f"{' vs '.join(arms)} (reference {reference})"
        if reference is not None
        else "all arms pooled (blinded data review)"
    )
    estimand = {
        "population": endpoint.estimand.population.en,
        "analysis_set": endpoint.estimand.analysis_set,
        "variable": endpoint.estimand.variable.en,
        "treatment": treatment,
        "intercurrent_events": [
            {
                "event": e.event,
                "description": data.protocol.intercurrent_event(e.event).description.en,
                "strategy": e.strategy,
                "composite_value": e.composite_value,
            }
            for e in endpoint.estimand.intercurrent_events
        ],
        "summary": endpoint.estimand.summary.en,
    }
    return {
        "id": endpoint.id,
        "name": endpoint.name.en,
        "name_zh": endpoint.name.zh,
        "role": endpoint.role,
        "model": endpoint.analysis.model,
        "population": endpoint.estimand.analysis_set,
        "estimand": estimand,
        "source_dataset": source_dataset(data.protocol, endpoint.id) or None,
    }


def analyse_endpoint(
    data: TrialData, endpoint: Endpoint, reference: str, arms: Sequence[str], seed: int
) -> EndpointAnalysis:
    spec = endpoint.analysis
    base = _endpoint_base(data, endpoint, arms, reference)
    try:
        frame = endpoint_frame(data, endpoint)
        outcome = _outcome_column(spec.model, spec.change_from_baseline)
        n, missing = _counts(frame, arms, outcome)
        result, headline, supportive = _fit(endpoint, frame, reference)
        missing_data = _missing_summary(endpoint, frame, arms, outcome)
        warnings = tuple(getattr(result, "warnings", ()))
        if missing_data is not None:
            lost = sum(missing_data["after_hypothetical_event"].values()) + sum(
                missing_data["other"].values()
            )
            if lost:
                warnings += (
                    f"{lost} participant(s) without an analysed outcome at "
                    f"{missing_data['visit']}: {missing_data['handling']}",
                )
        return EndpointAnalysis(
            intercurrent=tuple(_intercurrent_summary(data.protocol, endpoint, frame, arms)),
            missing_data=missing_data,
            **base,
            n_by_arm=n,
            n_missing_by_arm=missing,
            headline=_effect_dict(headline),
            result=result.to_dict(),
            supportive={k: v.to_dict() for k, v in supportive.items()},
            sensitivity=tuple(_sensitivities(data, endpoint, frame, reference, seed)),
            subgroups=tuple(_subgroups(endpoint, frame, reference)),
            mean_by_visit=tuple(
                _mean_by_visit(
                    frame,
                    "change" if spec.change_from_baseline else "value",
                    {v.id: v.day for v in data.protocol.schedule.visits},
                )
            ),
            warnings=warnings,
        )
    except (AnalysisError, ValueError, KeyError, ZeroDivisionError) as exc:
        return EndpointAnalysis(
            **base,
            n_by_arm={},
            n_missing_by_arm={},
            headline=None,
            result=None,
            supportive={},
            sensitivity=(),
            subgroups=(),
            mean_by_visit=(),
            warnings=(),
            error=str(exc),
        )


def _arm_effect(analysis: EndpointAnalysis, arm: str) -> Mapping[str, Any] | None:
    """The endpoint's effect of ``arm`` versus its reference, at the headline's visit and with
    the headline's interval method (the headline itself for the first active arm)."""
    headline = analysis.headline
    if headline is None:
        return None
    effects = (analysis.result or {}).get("effects", ())
    for effect in effects:
        left = re.split(r" - | vs | / ", str(effect.get("contrast", "")))[0]
        if (
            left == arm
            and effect.get("visit") == headline.get("visit")
            and effect.get("ci_method") == headline.get("ci_method")
        ):
            return effect  # type: ignore[no-any-return]
    return None


def _p_of(effect: Mapping[str, Any] | None) -> float:
    """A missing p-value (analysis failed) counts as 1: the hypothesis is never rejected."""
    p = effect.get("p_value") if effect else None
    return float(p) if isinstance(p, int | float) and not math.isnan(p) else 1.0


def _declared_multiplicity(
    protocol: Protocol, analyses: Sequence[EndpointAnalysis], labels: Mapping[str, str],
    blinded: bool,
) -> dict[str, Any]:
    spec = protocol.multiplicity
    assert spec is not None
    # a blinded run names hypotheses H1, H2, ... (a sponsor's ids may name an arm)
    name = {h.id: f"H{k}" if blinded else h.id for k, h in enumerate(spec.hypotheses, 1)}
    family: list[dict[str, Any]] = []
    for h in spec.hypotheses:
        analysis = next(a for a in analyses if a.id == h.endpoint)
        effect = _arm_effect(analysis, labels[h.arm])
        family.append(
            {
                "id": name[h.id],
                "endpoint": h.endpoint,
                "arm": labels[h.arm],
                "contrast": effect.get("contrast") if effect else None,
                "p_value": _p_of(effect),
                "weight": h.weight,
                "note": None if effect else (analysis.error or "no effect estimate"),
            }
        )
    tests = [(f["id"], f["p_value"]) for f in family]
    ids = [name[h.id] for h in spec.hypotheses]
    if spec.procedure == "fixed_sequence":
        result = adjust_fixed_sequence(tests, spec.alpha)
    elif spec.procedure == "holm":
        result = adjust_holm(tests, spec.alpha)
    elif spec.procedure == "hochberg":
        result = adjust_hochberg(tests, spec.alpha)
    elif spec.procedure == "bonferroni":
        weights = [h.weight for h in spec.hypotheses]
        result = adjust_bonferroni(
            tests, spec.alpha,
            None if any(w is None for w in weights) else [float(w or 0) for w in weights],
        )
    else:
        matrix = [[0.0] * len(ids) for _ in ids]
        for t in spec.transitions:
            matrix[ids.index(name[t.source])][ids.index(name[t.target])] = t.weight
        result = adjust_graphical(
            tests, spec.alpha, [float(h.weight or 0) for h in spec.hypotheses], matrix
        )
        for f in family:
            f["transitions"] = {
                name[t.target]: t.weight for t in spec.transitions if name[t.source] == f["id"]
            }
    return {
        "declared": True,
        "procedure": spec.procedure,
        "alpha": spec.alpha,
        "order": ids,
        "family": family,
        "result": result.to_dict(),
    }


def _multiplicity(
    protocol: Protocol, analyses: Sequence[EndpointAnalysis], labels: Mapping[str, str],
    blinded: bool = False,
) -> dict[str, Any] | None:
    """The confirmatory family and its adjusted p-values: as the protocol's ``multiplicity``
    declares it, else every active arm of each endpoint with a multiplicity_order, in order
    (fixed sequence, with Holm shown for reference)."""
    if protocol.multiplicity is not None:
        return _declared_multiplicity(protocol, analyses, labels, blinded)
    ordered = sorted(
        (e for e in protocol.endpoints if e.analysis.multiplicity_order),
        key=lambda e: e.analysis.multiplicity_order or 0,
    )
    tests: list[tuple[str, float]] = []
    family: list[dict[str, Any]] = []
    for endpoint in ordered:
        analysis = next(a for a in analyses if a.id == endpoint.id)
        reference = _reference(protocol, endpoint, labels)
        active = [labels[a.code] for a in protocol.arms if labels[a.code] != reference]
        for arm in sorted(active) if len(active) > 1 else active:
            name = endpoint.id if len(active) == 1 else f"{endpoint.id} ({arm})"
            effect = _arm_effect(analysis, arm)
            tests.append((name, _p_of(effect)))
            family.append({"id": name, "endpoint": endpoint.id, "arm": arm,
                           "contrast": effect.get("contrast") if effect else None,
                           "p_value": _p_of(effect), "weight": None, "note": None})
    if len(tests) < 2:
        return None
    alpha = ordered[0].analysis.alpha
    fixed = adjust_fixed_sequence(tests, alpha).to_dict()
    return {
        "declared": False,
        "order": [t[0] for t in tests],
        "alpha": alpha,
        "family": family,
        "result": fixed,
        "fixed_sequence": fixed,
        "holm": adjust_holm(tests, alpha).to_dict(),
        "procedure": "fixed_sequence",
        "note": "fixed-sequence (hierarchical) testing in the protocol's multiplicity_order, "
        "every active arm of an endpoint before the next endpoint; Holm shown for reference",
    }


def _disposition(
    data: TrialData,
    labels: Sequence[str],
    primary: EndpointAnalysis | None,
) -> dict[str, Any]:
    subjects = data.subjects
    failed = [s for s in subjects if s.status == "screen_failed"]
    pending = [s for s in subjects if s.arm is None and s.status != "screen_failed"]
    reasons: Counter[str] = Counter()
    for s in failed:
        reasons["not meeting eligibility criteria" if s.failed_criteria else "other reasons"] += 1
    for s in pending:
        reasons[
            "declined to participate"
            if s.status == "withdrawn"
            else "other reasons (screening or randomization pending)"
        ] += 1
    use_streams = [s.id for s in data.protocol.device_streams if s.kind in USE_STREAM_KINDS]
    per_arm: dict[str, dict[str, Any]] = {}
    for label in labels:
        randomized = [s for s in subjects if s.arm == label]
        # received the allocated DTx: a day of recorded use from treatment start (to the
        # cut-off); a protocol without a DTx-use stream cannot tell, so None (not recorded)
        received = (
            sum(1 for s in randomized if used_the_dtx(data, s))
            if use_streams else None
        )
        withdrawn = [s for s in randomized if s.withdrawn_on is not None]
        lost = [s for s in withdrawn if "lost" in (s.withdrawal_reason or "").lower()]
        analysed = (
            primary.n_by_arm.get(label, 0) - primary.n_missing_by_arm.get(label, 0)
            if primary and primary.n_by_arm
            else 0
        )
        # counted from each participant's status, never the randomized less the withdrawn
        # (an interim report's participants still in follow-up are ongoing, not completed)
        completed = sum(1 for s in randomized if s.status == "completed" and s.withdrawn_on is None)
        per_arm[label] = {
            "completed": completed,
            "ongoing": len(randomized) - len(withdrawn) - completed,
            "analysis_sets": {
                population: sum(1 for s in randomized if in_population(data, s, population))
                for population in ("fas", "per_protocol", "safety")
            },
            "allocated": len(randomized),
            "received": received,
            "not_received": None if received is None else len(randomized) - received,
            "lost_to_follow_up": len(lost),
            "discontinued": len(withdrawn) - len(lost),
            "discontinued_reasons": dict(
                Counter(  # not lost to follow-up: the test of `lost`, not a scan of it
                    s.withdrawal_reason or "not given" for s in withdrawn
                    if "lost" not in (s.withdrawal_reason or "").lower()
                )
            ),
            "analysed": analysed,
            "excluded_from_analysis": len(randomized) - analysed,
        }
    failed_by_criterion = Counter(c for s in failed for c in s.failed_criteria)
    events: dict[str, Counter[str]] = {e.id: Counter() for e in data.protocol.intercurrent_events}
    if events:
        for s in subjects:
            if s.arm is None:
                continue
            for event_id in subject_events(data, s):
                events[event_id][s.arm] += 1
    for label in labels:
        per_arm[label]["intercurrent_events"] = {
            event_id: counts.get(label, 0) for event_id, counts in events.items()
        }
    return {
        "assessed": len(subjects),
        "excluded": len(failed) + len(pending),
        "excluded_reasons": dict(reasons),
        "failed_criteria": dict(failed_by_criterion),
        "randomized": sum(1 for s in subjects if s.arm is not None),
        "arms": per_arm,
        "intercurrent_event_labels": {
            e.id: e.description.en for e in data.protocol.intercurrent_events
        },
    }


def _baseline_table(data: TrialData, labels: Sequence[str]) -> list[dict[str, Any]]:
    protocol = data.protocol
    early = [v for v in protocol.schedule.visits if v.anchor != "randomization" or v.day <= 0]
    fields = []
    seen: set[str] = set()
    for visit in early:
        for form_id in visit.forms:
            for f in protocol.form(form_id).fields:
                if (
                    f.id not in seen
                    and not f.identifier
                    and f.type in ("integer", "decimal", "single_choice", "yesno", "calculated")
                ):
                    seen.add(f.id)
                    fields.append(f)
    randomized = [s for s in data.subjects if s.arm is not None]
    values = {s.subject: baseline_values(data, s) for s in randomized}
    by_label = {  # each arm's subjects' baseline values, in subject order, found once
        label: [values[s.subject] for s in randomized if s.arm == label] for label in labels
    }
    everyone = [values[s.subject] for s in randomized]
    rows: list[dict[str, Any]] = []
    for f in fields:
        groups = {label: [v.get(f.id) for v in by_label[label]] for label in labels}
        groups["Total"] = [v.get(f.id) for v in everyone]
        if f.type in ("single_choice", "yesno"):
            choices = (
                [(c.code, c.label.en) for c in f.choices]
                if f.choices
                else [("1", "Yes"), ("0", "No")]
            )
            for code, text in choices:
                cells = {}
                for label, vals in groups.items():
                    n = sum(1 for v in vals if str(v) == code)
                    cells[label] = {"n": n, "percent": 100 * n / len(vals) if vals else None}
                rows.append(
                    {
                        "field": f.id,
                        "choice": code,
                        "label": f"{f.label.en}: {text}",
                        "kind": "count",
                        "cells": cells,
                    }
                )
        else:
            cells = {}
            for label, vals in groups.items():
                numbers = pd.Series(
                    [v for v in vals if isinstance(v, int | float) and not isinstance(v, bool)],
                    dtype=float,
                )
                cells[label] = {
                    "n": len(numbers),
                    "mean": sample_mean(numbers),
                    "sd": sample_sd(numbers),
                    "median": float(numbers.median()) if len(numbers) else None,
                    "min": float(numbers.min()) if len(numbers) else None,
                    "max": float(numbers.max()) if len(numbers) else None,
                }
            rows.append(
                {
                    "field": f.id,
                    "label": f.label.en + (f" ({f.unit})" if f.unit else ""),
                    "kind": "numeric",
                    "cells": cells,
                }
            )
    return rows


def _safety(data: TrialData, labels: Sequence[str]) -> dict[str, Any]:
    forms = [f for f in data.protocol.forms if f.repeating and "adverse" in f.id]
    randomized = [
        s for s in data.subjects if s.arm is not None and in_population(data, s, "safety")
    ]
    n_arm = {label: sum(1 for s in randomized if s.arm == label) for label in labels}
    if not forms:
        return {"n_by_arm": n_arm, "overview": [], "by_term": [], "serious": []}
    form = forms[0]
    term = next((f.id for f in form.fields if "term" in f.id), form.fields[0].id)
    roles = _ae_field_roles(form)
    serious = next((f.id for f in form.fields if "serious" in f.id), None)
    onset = next((f.id for f in form.fields if "onset" in f.id), None)
    any_ae: dict[str, set[str]] = defaultdict(set)
    any_sae: dict[str, set[str]] = defaultdict(set)
    by_term: dict[tuple[str, str], set[str]] = defaultdict(set)
    sae_listing: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for s in randomized:
        for event in s.repeats.get(form.id, ()):
            events.append(
                {
                    "subject": s.subject,
                    "arm": s.arm,
                    "term": str(event.get(term) or "").strip(),
                    # codes only as carried by the data (a coding dictionary); never invented
                    "soc": _code_of(event, ("soc", "aebodsys", "ae_soc")),
                    "pt": _code_of(event, ("pt", "aedecod", "ae_pt")),
                    **{
                        role: (None if event.get(fid) in (None, "") else str(event.get(fid)))
                        for role, fid in roles.items()
                    },
                    "withdrawal_reason": s.withdrawal_reason,
                }
            )
            name = str(event.get(term) or "unspecified").strip().lower()
            any_ae[s.arm or ""].add(s.subject)
            by_term[(name, s.arm or "")].add(s.subject)
            if serious and str(event.get(serious)) == "1":
                any_sae[s.arm or ""].add(s.subject)
                sae_listing.append(
                    {
                        "subject": s.subject,
                        "arm": s.arm,
                        "term": name,
                        "onset": event.get(onset) if onset else None,
                    }
                )

    def cell(subjects: set[str], label: str) -> dict[str, Any]:
        n = len(subjects)
        return {"n": n, "percent": 100 * n / n_arm[label] if n_arm[label] else None}

    terms = sorted(
        {t for t, _ in by_term}, key=lambda t: -sum(len(by_term[(t, a)]) for a in labels)
    )
    return {
        "n_by_arm": n_arm,
        "overview": [
            {"label": "Any adverse event", "cells": {a: cell(any_ae[a], a) for a in labels}},
            {
                "label": "Any serious adverse event",
                "cells": {a: cell(any_sae[a], a) for a in labels},
            },
        ],
        "by_term": [
            {"term": t, "cells": {a: cell(by_term[(t, a)], a) for a in labels}} for t in terms[:40]
        ],
        "serious": sae_listing,
        "events": events,
        "fields": {role: _choice_labels(form, fid) for role, fid in roles.items()},
        "withdrawals": [
            {"subject": s.subject, "arm": s.arm, "reason": s.withdrawal_reason}
            for s in randomized
            if s.withdrawn_on is not None
        ],
        "exposure": _exposure(data, randomized),
    }


#: What the AE form fields are for, recognised by their ids (as collected: a protocol whose
#: form has no such field gets "not collected" in the report, never a default).
AE_FIELD_ROLES = {
    "onset": ("onset",),
    "severity": ("severity", "intensity", "grade"),
    "relationship": ("related", "relationship", "causality"),
    "serious": ("serious",),
    "outcome": ("outcome",),
}


def _ae_field_roles(form: FormDef) -> dict[str, str]:
    roles: dict[str, str] = {}
    for role, words in AE_FIELD_ROLES.items():
        found = next((f.id for f in form.fields if any(w in f.id for w in words)), None)
        if found is not None:
            roles[role] = found
    return roles


def _choice_labels(form: FormDef, field_id: str) -> dict[str, Any]:
    """A field's id, label and choices in order (code, en, zh): the order is the scale."""
    fdef = next(f for f in form.fields if f.id == field_id)
    choices = [(c.code, c.label.en, c.label.zh or c.label.en) for c in fdef.choices or ()]
    if fdef.type == "yesno":
        choices = [("0", "No", "否"), ("1", "Yes", "是")]
    return {"field": field_id, "label": fdef.label.en, "label_zh": fdef.label.zh or fdef.label.en,
            "choices": choices}


def _code_of(event: Mapping[str, object], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = event.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _exposure(data: TrialData, randomized: Sequence[SubjectData]) -> list[dict[str, Any]]:
    """DTx use per participant and daily device stream: days observed, days used, mean/day."""
    out: list[dict[str, Any]] = []
    for s in randomized:
        for stream in data.protocol.device_streams:
            days = s.device_days.get(stream.id)
            if not days:
                continue
            values = list(days.values())
            out.append(
                {
                    "subject": s.subject,
                    "arm": s.arm,
                    "stream": stream.id,
                    "days": len(values),
                    "days_used": len([v for v in values if v > 0]),
                    "mean_per_day": sum(values) / len(values),
                    "adherent": s.adherent,
                }
            )
    return out


def _listings(
    data: TrialData, primary: Endpoint | None, baseline: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    demographic_fields = [str(r["field"]) for r in baseline if r["kind"] == "numeric"][:3]
    withdrawn = [
        {
            "subject": s.subject,
            "arm": s.arm,
            "withdrawn_on": str(s.withdrawn_on),
            "reason": s.withdrawal_reason,
        }
        for s in data.subjects
        if s.arm is not None and s.withdrawn_on is not None
    ]
    efficacy: list[dict[str, Any]] = []
    if primary is not None:
        try:
            frame = endpoint_frame(data, primary)
            for row in frame.itertuples(index=False):
                efficacy.append(
                    {
                        "subject": row.subject,
                        "arm": row.arm,
                        "visit": getattr(row, "visit", None),
                        "value": _finite(getattr(row, "value", None)),
                        "change": _finite(getattr(row, "change", None)),
                    }
                )
        except AnalysisError:
            efficacy = []
    return {
        "discontinued": withdrawn,
        "primary_efficacy": efficacy,
        "deviations": [
            {"subject": s.subject, "arm": s.arm, "deviation": d}
            for s in data.subjects
            if s.arm is not None
            for d in s.deviations
        ],
        "adherence": [
            {"subject": s.subject, "arm": s.arm, "adherent": s.adherent}
            for s in data.subjects
            if s.arm is not None
        ],
        # the first numeric baseline variables of each randomized participant (listing 16.2.4)
        "demographics": [
            {
                "subject": s.subject,
                "arm": s.arm,
                "values": {
                    f: _finite(v) for f, v in baseline_values(data, s).items()
                    if f in demographic_fields
                },
            }
            for s in data.subjects
            if s.arm is not None
        ],
    }


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def _pooled_summary(frame: pd.DataFrame, model: str, outcome: str) -> dict[str, Any]:
    """Whole-trial figures a blinded data review may see: n, spread, event and response rates."""
    values = frame.groupby("subject")[outcome].last() if "subject" in frame else frame[outcome]
    observed = values.dropna().astype(float)
    out: dict[str, Any] = {"n": len(values), "n_observed": len(observed)}
    if model in ("km_logrank", "cox"):
        events = frame.groupby("subject")["event"].last().astype(float)
        follow_up = observed.sum()
        out.update(events=int(events.sum()), follow_up=float(follow_up),
                   event_rate=float(events.sum() / follow_up) if follow_up > 0 else None)
    elif model in BINARY_MODELS:
        out.update(responders=int(observed.sum()),
                   proportion=float(observed.mean()) if len(observed) else None)
    else:
        out.update(mean=sample_mean(observed), sd=sample_sd(observed))
    return out


def _pooled_endpoint(data: TrialData, endpoint: Endpoint) -> EndpointAnalysis:
    """An endpoint in a pooled blinded review: descriptive figures of all arms together."""
    spec = endpoint.analysis
    base = _endpoint_base(data, endpoint, [POOLED], None)
    try:
        frame = endpoint_frame(data, endpoint)
        outcome = _outcome_column(spec.model, spec.change_from_baseline)
        n, missing = _counts(frame, [POOLED], outcome)
        final = (
            frame[frame["visit"] == spec.visits[-1]] if "visit" in frame and spec.visits else frame
        )
        days = {v.id: v.day for v in data.protocol.schedule.visits}
        result: dict[str, Any] = {
            "model": "pooled blinded review: all arms together, no comparison between groups",
            "pooled": _pooled_summary(final, spec.model, outcome),
        }
        if spec.model in ("km_logrank", "cox"):
            curve, median = pooled_kaplan_meier(final, time="time", event="event", label=POOLED)
            result.update(curves=[curve.to_dict()], medians=[median.to_dict()])
        return EndpointAnalysis(
            intercurrent=tuple(_intercurrent_summary(data.protocol, endpoint, frame, [POOLED])),
            **base,
            n_by_arm=n,
            n_missing_by_arm=missing,
            headline=None,
            result=result,
            supportive={},
            sensitivity=(),
            subgroups=(),
            mean_by_visit=tuple(
                _mean_by_visit(frame, "change" if spec.change_from_baseline else "value", days)
            ),
            warnings=(),
        )
    except (AnalysisError, ValueError, KeyError, ZeroDivisionError) as exc:
        return EndpointAnalysis(
            **base, n_by_arm={}, n_missing_by_arm={}, headline=None, result=None, supportive={},
            sensitivity=(), subgroups=(), mean_by_visit=(), warnings=(), error=str(exc),
        )


def run_sap(
    data: TrialData,
    *,
    blinded: bool,
    labels: Mapping[str, str] | None = None,
    seed: int = 20261123,
    progress: Progress | None = None,
    protocol_version: str = "",
) -> AnalysisResults:
    """Run every endpoint of the protocol's analysis plan on `data`.

    A blinded run takes its `labels` from `arm_labels` (keyed dummy labels, comparative review)
    or `pooled_labels` (pooled review: descriptive summaries of the whole trial only)."""
    protocol = data.protocol
    if not blinded:
        labels = {arm.code: arm.code for arm in protocol.arms}
    elif labels is None or set(labels) != {arm.code for arm in protocol.arms}:
        raise ValueError("a blinded run needs a label for every arm (arm_labels, pooled_labels)")
    masked = _blinded_view(data, labels) if blinded else data
    protocol = masked.protocol  # protocol texts never name an arm in a blinded run
    arm_order = sorted(set(labels.values())) if blinded else [a.code for a in protocol.arms]
    pooled = blinded and arm_order == [POOLED]
    total = len(protocol.endpoints) + 2
    analyses: list[EndpointAnalysis] = []
    for i, endpoint in enumerate(protocol.endpoints):
        if progress:
            progress(i, total, endpoint.id)
        analyses.append(
            _pooled_endpoint(masked, endpoint)
            if pooled
            else analyse_endpoint(
                masked, endpoint, _reference(protocol, endpoint, labels), arm_order, seed
            )
        )
    if progress:
        progress(total - 2, total, "tables")
    primary_endpoint = protocol.primary_endpoints[0] if protocol.primary_endpoints else None
    primary = next((a for a in analyses if primary_endpoint and a.id == primary_endpoint.id), None)
    arms = tuple(
        {
            "label": labels[a.code],
            "name": "Arm " + labels[a.code] if blinded else a.name.en,
            "name_zh": None if blinded else a.name.zh,
            "ratio": a.ratio,
        }
        for a in protocol.arms
    )
    if pooled:
        arms = ({"label": POOLED, "name": "All participants (pooled)", "name_zh": None,
                 "ratio": None},)
    baseline = tuple(_baseline_table(masked, arm_order))
    results = AnalysisResults(
        trial=protocol.code,
        title=protocol.title.en,
        protocol_version=protocol_version or protocol.version,
        blinded=blinded,
        arms=tuple(sorted(arms, key=lambda a: str(a["label"]))) if blinded else arms,
        reference_arm=_reference(protocol, None, labels),
        cutoff_on=data.cutoff_on.isoformat() if data.cutoff_on else None,
        seed=seed,
        disposition=_disposition(masked, arm_order, primary),
        baseline=baseline,
        endpoints=tuple(analyses),
        multiplicity=None if pooled else _multiplicity(protocol, analyses, labels, blinded),
        safety=_safety(masked, arm_order),
        listings=_listings(masked, primary_endpoint, baseline),
        review="pooled" if pooled else "comparative" if blinded else "unblinded",
    )
    if progress:
        progress(total, total, "done")
    return results


__all__ = [
    "POOLED",
    "AnalysisResults",
    "EndpointAnalysis",
    "SubjectData",
    "TrialData",
    "arm_labels",
    "label_commitment",
    "pooled_labels",
    "run_sap",
    "visible_visits",
]
