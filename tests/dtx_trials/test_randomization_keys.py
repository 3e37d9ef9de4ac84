"""The randomization service honours every key, and `dtx audit verify` proves it.

- minimization.overall_weight reaches the design; an allocation made by a builder that drops
  it (the defect this suite was written against) is caught by the replay;
- new trials draw under hmac-sha256-v2 (per-stratum coins), a trial that recorded v1 keeps
  allocating and replaying under v1;
- an uploaded allocation list's randomization numbers are the numbers participants get;
- a stored stratum that the protocol's stratification would not build is flagged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, text

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, RandomizationState, Site, Trial
from dtx_trials.models.users import Role
from dtx_trials.services import audit, protocols, randomization
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.integrity import check_integrity
from dtx_trials.services.simulation import insert_enrolled_mci_participants
from tests.dtx_trials.trial_flow import LIBRARY, MCI_CODE, enrolled_at_sites, investigator_actor
from tests.helpers import CLI

SITES = ("BJ01", "GZ01", "HK01", "SH01")

PBD = (
    "method: permuted_block\n"
    "  block_sizes: [4, 6]          # chosen at random per block; never shown to sites"
)


def _mci_variant(tmp_path: Path, randomization_lines: str) -> Path:
    """The MCI protocol with another randomization method (same factors and sites)."""
    source = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    assert PBD in source
    path = tmp_path / "mci_variant.yaml"
    path.write_text(source.replace(PBD, randomization_lines), encoding="utf-8")
    return path


def _load(path: Path, n: int, *, rng_algorithm: str | None = None) -> tuple[int, list[str]]:
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    state = db.session.scalars(select(RandomizationState)).one()
    before = audit.snapshot(state)
    if rng_algorithm is not None:  # a trial activated by a release that drew under this version
        state.rng_algorithm = rng_algorithm
    state.secret = "3c" * 32  # reproducible allocations
    audit.record_update(db.session, CLI, "randomization.secret_fixed", state, before)
    db.session.commit()
    return trial.id, enrolled_at_sites(trial, n)


def _randomize_all(trial_id: int, subjects: list[str]) -> list[Allocation]:
    for subject in subjects:
        trial = db.session.get(Trial, trial_id)
        randomization.randomize_participant(
            db.session, investigator_actor(trial_id), trial, subject
        )
    db.session.remove()
    return list(db.session.scalars(select(Allocation).order_by(Allocation.seq_no)))


def _problems(trial_id: int) -> list[str]:
    db.session.remove()
    return [p.message for p in check_integrity(db.session, trial_id).problems]


def test_overall_weight_reaches_the_design(app: Flask, tmp_path: Path) -> None:
    path = _mci_variant(tmp_path, "method: minimization\n  p: 0.8\n  overall_weight: 2")
    trial_id, _ = _load(path, 0)
    _, protocol = protocols.active_protocol(db.session, db.session.get(Trial, trial_id))
    params = randomization.design_parameters(protocol)
    assert params["overall_weight"] == 2.0
    design = randomization.design_for(protocol)
    assert design.overall_weight == 2  # type: ignore[attr-defined]


def test_verify_catches_allocations_made_with_a_dropped_parameter(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defect: services.randomization.design_for dropped minimization.overall_weight, so
    the allocations were not the protocol's and the replay (same builder) agreed with them.
    Replayed now with every key honoured, `dtx audit verify` names the allocations."""
    path = _mci_variant(tmp_path, "method: minimization\n  p: 0.8\n  overall_weight: 2")
    trial_id, subjects = _load(path, 30)
    honest = randomization.design_parameters

    def dropping(protocol: object, list_table: object = None) -> dict[str, object]:
        params = honest(protocol, list_table)  # type: ignore[arg-type]
        params.pop("overall_weight")
        return params

    monkeypatch.setattr(randomization, "design_parameters", dropping)
    allocations = _randomize_all(trial_id, subjects)
    assert _problems(trial_id) == []  # the defective builder cannot see its own defect
    monkeypatch.undo()
    problems = _problems(trial_id)
    flagged = {int(m.split("(seq ")[1].split(")")[0]) for m in problems if "(seq " in m}
    wrong_arm = [m for m in problems if "stored arm differs from the replayed allocation" in m]
    assert wrong_arm and len(flagged) >= len(wrong_arm)
    assert all("MCI-COGTRAIN-01: allocation id=" in m for m in problems)
    # the first allocation after the first non-trivial decision already disagrees on scores
    assert any("imbalance_scores" in m or "probabilities" in m for m in problems)
    assert len(allocations) == 30


def test_a_trial_allocated_with_every_key_verifies(app: Flask, tmp_path: Path) -> None:
    path = _mci_variant(tmp_path, "method: minimization\n  p: 0.8\n  overall_weight: 2")
    trial_id, subjects = _load(path, 12)
    allocations = _randomize_all(trial_id, subjects)
    assert _problems(trial_id) == []
    assert {a.evidence["rule"] for a in allocations} >= {"first_participant", "minimization"}


def test_new_trials_draw_biased_coins_per_stratum(app: Flask, tmp_path: Path) -> None:
    path = _mci_variant(tmp_path, "method: big_stick\n  bsd_b: 2")
    trial_id, subjects = _load(path, 16)
    state = db.session.scalars(select(RandomizationState)).one()
    assert state.rng_algorithm == "hmac-sha256-v2"
    allocations = _randomize_all(trial_id, subjects)
    seen: dict[str, int] = {}
    for allocation in allocations:
        seen[allocation.stratum_key] = seen.get(allocation.stratum_key, 0) + 1
        expected = f"coin|{MCI_CODE}|{allocation.stratum_key}|{seen[allocation.stratum_key]}"
        assert allocation.evidence["draw_label"] == expected
    assert len(seen) > 1 and _problems(trial_id) == []


def test_a_v1_trial_keeps_allocating_and_replaying_under_v1(app: Flask, tmp_path: Path) -> None:
    path = _mci_variant(tmp_path, "method: efron\n  efron_p: 0.67")
    trial_id, subjects = _load(path, 16, rng_algorithm="hmac-sha256-v1")
    allocations = _randomize_all(trial_id, subjects)
    assert [a.evidence["draw_label"] for a in allocations] == [
        f"coin|{MCI_CODE}|{seq}" for seq in range(1, 17)
    ]
    assert _problems(trial_id) == []
    # replaying the same allocations under v2 would not reproduce them: the version matters
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE randomization_state SET rng_algorithm = 'hmac-sha256-v2'"))
    problems = _problems(trial_id)
    assert any("draw_label differ" in m or "draw_label" in m for m in problems)


def _list_csv(numbers: bool) -> str:
    rows = ["stratum,arm" + (",randomization_number" if numbers else "")]
    for site in SITES:
        for band in ("moca_18_21", "moca_22_25"):
            for k, arm in enumerate(["sham", "cogtrain", "cogtrain", "sham"] * 3):
                number = f",K-{site}-{band[-5:]}-{k:02d}" if numbers else ""
                rows.append(f"site={site}|moca_band={band},{arm}{number}")
    return "\n".join(rows) + "\n"


def _unblinded(trial_id: int) -> Actor:
    return Actor(
        user_id=None, username="ub", printed_name="Unblinded", via="cli",
        grants=(Grant(trial_id, None, Role.UNBLINDED_STATISTICIAN),),
    )


@pytest.mark.parametrize("numbers", [True, False])
def test_uploaded_list_numbers_are_the_participants_numbers(
    app: Flask, tmp_path: Path, numbers: bool
) -> None:
    path = _mci_variant(tmp_path, "method: list")
    trial_id, subjects = _load(path, 8)
    trial = db.session.get(Trial, trial_id)
    assert randomization.upload_allocation_list(
        db.session, _unblinded(trial_id), trial, _list_csv(numbers)
    ) == 12 * 2 * len(SITES)
    allocations = _randomize_all(trial_id, subjects)
    for allocation in allocations:
        site, band = (part.split("=")[1] for part in allocation.stratum_key.split("|"))
        slot = allocation.evidence["slot"]
        expected = f"K-{site}-{band[-5:]}-{slot - 1:02d}" if numbers else (
            f"R{allocation.seq_no:05d}"
        )
        assert allocation.randomization_number == expected
        assert allocation.arm_code == ["sham", "cogtrain", "cogtrain", "sham"][(slot - 1) % 4]
    assert _problems(trial_id) == []
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE allocation SET randomization_number = 'X-1' WHERE seq_no = 3"))
    problems = _problems(trial_id)
    assert any("(seq 3): randomization number is not the one its slot carries" in m
               for m in problems)


def test_verify_flags_a_stratum_the_protocol_would_not_build(app: Flask) -> None:
    """A stored stratum without the site although the protocol stratifies by site."""
    protocols.load_library_file(db.session, CLI, LIBRARY / "cognitive_impairment.yaml")
    trial = db.session.scalars(select(Trial)).one()
    trial_id = trial.id
    sites = list(db.session.scalars(select(Site).order_by(Site.code)))
    subjects = insert_enrolled_mci_participants(db.session, CLI, trial, sites, 3)
    _randomize_all(trial_id, subjects)
    assert _problems(trial_id) == []
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE allocation SET stratum_key = 'moca_band=moca_18_21' WHERE seq_no = 2")
        )
    problems = _problems(trial_id)
    assert any("(seq 2): stratum moca_band=moca_18_21 should be site=" in m for m in problems)
