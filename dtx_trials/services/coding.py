"""Medical coding of verbatim terms against a sponsor-supplied dictionary.

The sponsor loads its dictionary (MedDRA and WHODrug are licensed: the platform ships only a tiny
synthetic one for tests and demos) as a CSV file ``term,preferred_term,body_system``. Adverse-event
terms (and concomitant medications, where the protocol maps CM) that match a dictionary term
exactly, up to case and spacing, are coded automatically; the rest wait in the coding queue until
the data manager picks a preferred term. The SDTM export reads the coded terms (AEDECOD,
AEBODSYS); an uncoded term stays null there. Every load and coding decision is audited in its
transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from analysis.exports.data import CodedTerm as ExportCodedTerm
from analysis.exports.data import coding_key
from dtx_trials.db import transaction, utcnow
from dtx_trials.models import CodedTerm, DictionaryTerm, FormRecord, Participant, Trial
from dtx_trials.services import audit
from dtx_trials.services.access import Actor, require
from dtx_trials.services.errors import Conflict, ValidationError
from dtx_trials.services.protocols import active_protocol

DICTIONARY_COLUMNS = ("term", "preferred_term", "body_system")
KINDS = {"ae": ("AE", "AETERM"), "cm": ("CM", "CMTRT")}
MAX_TEXT = 200


@dataclass(frozen=True)
class QueueItem:
    """An uncoded verbatim term and how many records carry it."""

    kind: str
    verbatim: str
    n_records: int


def parse_dictionary(text: str) -> list[tuple[str, str, str]]:
    """Return the (term, preferred term, body system) rows of a dictionary CSV; raise
    ValidationError naming the line of the first problem."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None or tuple(h.strip().lower() for h in header) != DICTIONARY_COLUMNS:
        raise ValidationError("the dictionary must be CSV with the header "
                              f"{','.join(DICTIONARY_COLUMNS)}", {"file": ["line 1: header"]})
    rows: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [" ".join(cell.split()) for cell in row]
        if len(cells) != 3 or not all(cells):
            raise ValidationError("every dictionary row needs a term, a preferred term and a "
                                  "body system", {"file": [f"line {line}: {row!r}"]})
        if any(len(c) > MAX_TEXT or not c.isascii() for c in cells):
            raise ValidationError("dictionary text is ASCII, at most 200 characters (SDTM)",
                                  {"file": [f"line {line}"]})
        key = coding_key(cells[0])
        if key in seen:
            raise ValidationError("duplicate dictionary term",
                                  {"file": [f"line {line}: '{cells[0]}' (first at line "
                                            f"{seen[key]})"]})
        seen[key] = line
        rows.append((cells[0], cells[1], cells[2]))
    if not rows:
        raise ValidationError("the dictionary has no terms", {"file": ["no rows"]})
    return rows


def load_dictionary(session: Session, actor: Actor, trial: Trial, *, name: str, version: str,
                    text: str) -> int:
    """Load a sponsor dictionary for the trial (replacing none: a name+version loads once);
    return the number of terms. Sponsor admin or data manager."""
    require(actor, "coding.dictionary", trial.id)
    name, version = name.strip(), version.strip()
    if not name or not version or len(name) > 60 or len(version) > 30:
        raise ValidationError("dictionary name (≤ 60) and version (≤ 30) are required",
                              {"name": ["required"], "version": ["required"]})
    rows = parse_dictionary(text)
    with transaction(session):
        exists = session.scalar(select(DictionaryTerm.id).where(
            DictionaryTerm.trial_id == trial.id, DictionaryTerm.dictionary == name,
            DictionaryTerm.version == version).limit(1))
        if exists is not None:
            raise Conflict(f"dictionary {name} {version} is already loaded for {trial.code}")
        for term, preferred, body_system in rows:
            entry = DictionaryTerm(trial_id=trial.id, dictionary=name, version=version,
                                   term=term, term_key=coding_key(term),
                                   preferred_term=preferred, body_system=body_system)
            session.add(entry)
            audit.record_create(session, actor, "coding.dictionary_term", entry,
                                trial_id=trial.id)
        audit.record_event(session, actor, "coding.dictionary_loaded", entity_type="trial",
                           entity_id=trial.id, trial_id=trial.id,
                           details={"dictionary": name, "version": version, "terms": len(rows),
                                    "sha256": hashlib.sha256(text.encode()).hexdigest()})
    return len(rows)


def _dictionary(session: Session, trial: Trial) -> dict[str, DictionaryTerm]:
    """The trial's dictionary by term key (the latest loaded version wins)."""
    terms = session.scalars(select(DictionaryTerm).where(DictionaryTerm.trial_id == trial.id)
                            .order_by(DictionaryTerm.id))
    return {t.term_key: t for t in terms}


def _verbatims(session: Session, trial: Trial) -> Counter[tuple[str, str]]:
    """(kind, verbatim) of every submitted AE/CM record the protocol maps, with counts."""
    _, protocol = active_protocol(session, trial)
    sources: dict[str, tuple[str, str]] = {}
    if protocol.cdisc is not None:
        for kind, (domain, variable) in KINDS.items():
            for mapping in protocol.cdisc.domain_maps(domain):
                for var in mapping.variables:
                    if var.variable == variable and var.field and mapping.form:
                        sources[mapping.form] = (kind, var.field)
    found: Counter[tuple[str, str]] = Counter()
    if not sources:
        return found
    for record in session.scalars(
        select(FormRecord).join(Participant).where(
            Participant.trial_id == trial.id, FormRecord.status != "draft",
            FormRecord.form_code.in_(list(sources)))
    ):
        kind, field_id = sources[record.form_code]
        value = (record.data or {}).get(field_id)
        if isinstance(value, str) and value.strip():
            found[(kind, " ".join(value.split()))] += 1
    return found


def auto_code(session: Session, actor: Actor, trial: Trial) -> int:
    """Code every uncoded verbatim that matches a dictionary term exactly (case and spacing
    aside); return how many were coded. Data manager."""
    require(actor, "coding.code", trial.id)
    with transaction(session):
        dictionary = _dictionary(session, trial)
        coded = _coded(session, trial)
        n = 0
        for (kind, verbatim), _ in sorted(_verbatims(session, trial).items()):
            key = coding_key(verbatim)
            match = dictionary.get(key)
            if (kind, key) in coded or match is None:
                continue
            _store(session, actor, trial, kind, verbatim, match, "auto")
            coded[(kind, key)] = match.preferred_term
            n += 1
    return n


def _coded(session: Session, trial: Trial) -> dict[tuple[str, str], str]:
    return {(c.kind, c.term_key): c.preferred_term
            for c in session.scalars(select(CodedTerm).where(CodedTerm.trial_id == trial.id))}


def _store(session: Session, actor: Actor, trial: Trial, kind: str, verbatim: str,
           match: DictionaryTerm, method: str) -> CodedTerm:
    entry = CodedTerm(trial_id=trial.id, kind=kind, term_key=coding_key(verbatim),
                      verbatim=verbatim[:MAX_TEXT], preferred_term=match.preferred_term,
                      body_system=match.body_system, dictionary=match.dictionary,
                      version=match.version, method=method, coded_by_id=actor.user_id,
                      coded_at=utcnow())
    session.add(entry)
    audit.record_create(session, actor, f"coding.{method}", entry, trial_id=trial.id)
    return entry


def coding_queue(session: Session, actor: Actor, trial: Trial) -> list[QueueItem]:
    """The verbatim terms still uncoded, most frequent first. Data manager (and readers of
    coding: sponsor admin, monitor)."""
    require(actor, "coding.read", trial.id)
    coded = _coded(session, trial)
    items = [QueueItem(kind, verbatim, n)
             for (kind, verbatim), n in _verbatims(session, trial).items()
             if (kind, coding_key(verbatim)) not in coded]
    return sorted(items, key=lambda i: (-i.n_records, i.kind, i.verbatim.casefold()))


def code_term(session: Session, actor: Actor, trial: Trial, *, kind: str, verbatim: str,
              dictionary_term: str) -> CodedTerm:
    """Code a verbatim term to a dictionary term (by its term text); audited. Data manager."""
    require(actor, "coding.code", trial.id)
    if kind not in KINDS:
        raise ValidationError("unknown term kind", {"kind": [f"one of {', '.join(KINDS)}"]})
    with transaction(session):
        known = _verbatims(session, trial)
        if (kind, " ".join(verbatim.split())) not in known:
            raise ValidationError("no record carries this verbatim term",
                                  {"verbatim": [verbatim[:80]]})
        if len(coding_key(verbatim)) > MAX_TEXT:  # the queue shows what a form let through
            raise ValidationError(
                f"a verbatim term longer than {MAX_TEXT} characters is not coded (SDTM "
                "--TERM holds 200): correct it on its form, through a data query",
                {"verbatim": [f"{len(verbatim)} characters, at most {MAX_TEXT}"]})
        if (kind, coding_key(verbatim)) in _coded(session, trial):
            raise Conflict(f"'{verbatim[:80]}' is already coded")
        match = _dictionary(session, trial).get(coding_key(dictionary_term))
        if match is None:
            raise ValidationError("not a term of the loaded dictionary",
                                  {"dictionary_term": [dictionary_term[:80]]})
        return _store(session, actor, trial, kind, " ".join(verbatim.split()), match, "manual")


def dictionary_terms(session: Session, actor: Actor, trial: Trial) -> list[DictionaryTerm]:
    """The loaded dictionary's terms (for the coding page's choices)."""
    require(actor, "coding.read", trial.id)
    return sorted(_dictionary(session, trial).values(), key=lambda t: t.term.casefold())


def coded_terms(session: Session, trial: Trial, kind: str = "ae") -> Mapping[str, ExportCodedTerm]:
    """Coded terms of a kind by coding key, for the SDTM export."""
    return {
        c.term_key: ExportCodedTerm(c.preferred_term, c.body_system, c.dictionary, c.version)
        for c in session.scalars(select(CodedTerm).where(CodedTerm.trial_id == trial.id,
                                                         CodedTerm.kind == kind))
    }
