"""Generate the seeded reference datasets under tests/reference/data/ (run once, commit CSVs).

Usage: python tests/reference/make_data.py
Every dataset is deterministic (numpy default_rng with a fixed seed per file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data"


def _arms(rng: np.random.Generator, n: int, arms: list[str], ratio: list[int]) -> np.ndarray:
    block = np.repeat(arms, ratio)
    reps = -(-n // len(block))
    out = np.concatenate([rng.permutation(block) for _ in range(reps)])[:n]
    return out


def make_ancova() -> None:
    rng = np.random.default_rng(101)
    n = 120
    arm = _arms(rng, n, ["control", "active"], [1, 1])
    stratum = rng.choice(["S1", "S2", "S3"], size=n, p=[0.5, 0.3, 0.2])
    base = rng.normal(22, 4, n).round(1)
    age = rng.normal(72, 6, n).round(0)
    shift = pd.Series(stratum).map({"S1": 0.0, "S2": 1.0, "S3": -0.5}).to_numpy()
    chg = -1.0 - 1.8 * (arm == "active") + 0.25 * (base - 22) + 0.05 * (age - 72) + shift
    chg = (chg + rng.normal(0, 3, n)).round(2)
    chg[rng.random(n) < 0.06] = np.nan
    sex = rng.choice(["F", "M"], size=n)
    pd.DataFrame(
        {"subject": [f"A{i:03d}" for i in range(n)], "arm": arm, "stratum": stratum,
         "sex": sex, "base": base, "age": age, "chg": chg}
    ).to_csv(DATA / "ancova_a.csv", index=False)

    rng = np.random.default_rng(102)
    n = 160
    arm = _arms(rng, n, ["placebo", "high", "low"], [2, 1, 1])
    region = rng.choice(["EU", "US"], size=n, p=[0.6, 0.4])
    severity = rng.choice(["mild", "moderate", "severe"], size=n)
    base = rng.normal(50, 10, n).round(0)
    eff = pd.Series(arm).map({"placebo": 0.0, "low": -2.0, "high": -4.0}).to_numpy()
    chg = (eff + 0.1 * (base - 50) + (region == "US") * 1.5 + rng.normal(0, 5, n)).round(1)
    pd.DataFrame(
        {"subject": [f"B{i:03d}" for i in range(n)], "arm": arm, "region": region,
         "severity": severity, "base": base, "chg": chg}
    ).to_csv(DATA / "ancova_b.csv", index=False)


def _mmrm(seed: int, n: int, arms: list[str], ratio: list[int], visits: list[str],
          effects: list[float], drop: float, intermittent: float, strata: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = len(visits)
    sd = np.linspace(3.0, 5.0, k)
    corr = 0.4 + 0.5 * np.exp(-0.5 * np.abs(np.subtract.outer(np.arange(k), np.arange(k))))
    np.fill_diagonal(corr, 1.0)
    sigma = corr * np.outer(sd, sd)
    arm = _arms(rng, n, arms, ratio)
    base = rng.normal(30, 5, n).round(1)
    stratum = rng.choice(["low", "high"], size=n, p=[0.55, 0.45])
    err = rng.multivariate_normal(np.zeros(k), sigma, size=n)
    rows = []
    for i in range(n):
        dropout_at = k
        for j in range(1, k):
            if rng.random() < drop:
                dropout_at = j
                break
        for j in range(k):
            eff = effects[arms.index(arm[i])] * (j + 1) / k
            y = -0.5 * (j + 1) + eff + 0.3 * (base[i] - 30) * (1 + 0.2 * j) + err[i, j]
            if strata:
                y += 1.2 * (stratum[i] == "high")
            missing = j >= dropout_at or (0 < j < k - 1 and rng.random() < intermittent)
            rows.append({
                "subject": f"S{i:04d}", "arm": arm[i], "visit": visits[j], "visitnum": j + 1,
                "base": base[i], "stratum": stratum[i],
                "chg": np.nan if missing else round(float(y), 3),
            })
    frame = pd.DataFrame(rows)
    return frame


def make_mmrm() -> None:
    a = _mmrm(201, 150, ["control", "active"], [1, 2], ["W04", "W08", "W12", "W16"],
              [0.0, -2.5], drop=0.08, intermittent=0.07, strata=True)
    a.to_csv(DATA / "mmrm_a.csv", index=False)
    b = _mmrm(202, 96, ["placebo", "low", "high"], [1, 1, 1], ["V1", "V2", "V3"],
              [0.0, -1.0, -3.0], drop=0.12, intermittent=0.1, strata=False)
    b.to_csv(DATA / "mmrm_b.csv", index=False)


def make_binary() -> None:
    rng = np.random.default_rng(301)
    n = 200
    arm = _arms(rng, n, ["control", "active"], [1, 1])
    stratum = rng.choice(["S1", "S2", "S3"], size=n, p=[0.4, 0.35, 0.25])
    base = rng.normal(10, 2, n).round(1)
    sex = rng.choice(["F", "M"], size=n)
    lin = -0.6 + 0.8 * (arm == "active") - 0.2 * (base - 10)
    lin += pd.Series(stratum).map({"S1": 0.0, "S2": 0.5, "S3": -0.4}).to_numpy()
    resp = (rng.random(n) < 1 / (1 + np.exp(-lin))).astype(int)
    pd.DataFrame({"subject": [f"R{i:03d}" for i in range(n)], "arm": arm, "stratum": stratum,
                  "sex": sex, "base": base, "resp": resp}).to_csv(
        DATA / "binary_a.csv", index=False)

    rng = np.random.default_rng(302)
    n = 90
    arm = _arms(rng, n, ["placebo", "dtx"], [1, 2])
    stratum = rng.choice(["site1", "site2", "site3"], size=n, p=[0.5, 0.3, 0.2])
    p = np.where(arm == "dtx", 0.45, 0.2)
    resp = (rng.random(n) < p).astype(int)
    base = rng.normal(0, 1, n).round(2)
    pd.DataFrame({"subject": [f"Q{i:03d}" for i in range(n)], "arm": arm, "stratum": stratum,
                  "base": base, "resp": resp}).to_csv(DATA / "binary_b.csv", index=False)


def make_survival() -> None:
    rng = np.random.default_rng(401)
    n = 160
    arm = _arms(rng, n, ["control", "active"], [1, 1])
    stratum = rng.choice(["A", "B"], size=n)
    age = rng.normal(60, 8, n).round(0)
    rate = 0.05 * np.exp(-0.5 * (arm == "active") + 0.4 * (stratum == "B") + 0.02 * (age - 60))
    t_event = rng.exponential(1 / rate)
    t_cens = rng.uniform(5, 40, n)
    time = np.ceil(np.minimum(t_event, t_cens))  # whole months: many ties
    event = (t_event <= t_cens).astype(int)
    pd.DataFrame({"subject": [f"T{i:03d}" for i in range(n)], "arm": arm, "stratum": stratum,
                  "age": age, "time": time, "event": event}).to_csv(
        DATA / "survival_a.csv", index=False)

    rng = np.random.default_rng(402)
    n = 120
    arm = _arms(rng, n, ["soc", "dtx"], [1, 2])
    stratum = rng.choice(["s1", "s2", "s3"], size=n, p=[0.4, 0.4, 0.2])
    rate = 0.08 * np.exp(-0.3 * (arm == "dtx") + 0.3 * (stratum == "s2") - 0.3 * (stratum == "s3"))
    t_event = rng.exponential(1 / rate)
    t_cens = np.where(rng.random(n) < 0.3, rng.uniform(1, 30, n), 30.0)
    time = np.ceil(np.minimum(t_event, t_cens) * 7) / 7  # whole days in weeks
    time = np.round(time, 6)
    event = (t_event <= t_cens).astype(int)
    pd.DataFrame({"subject": [f"U{i:03d}" for i in range(n)], "arm": arm, "stratum": stratum,
                  "time": time, "event": event}).to_csv(DATA / "survival_b.csv", index=False)


def make_gee() -> None:
    for seed, n, ratio, name in ((501, 100, [1, 1], "gee_a"), (502, 90, [1, 2], "gee_b")):
        rng = np.random.default_rng(seed)
        arm = _arms(rng, n, ["control", "active"], ratio)
        subj_eff = rng.normal(0, 0.25, n)
        age = rng.integers(6, 13, n)
        rows = []
        for i in range(n):
            for eye in ("OD", "OS"):
                if eye == "OS" and rng.random() < 0.12:
                    continue
                base = round(float(rng.normal(24, 0.8)), 2)
                y = 0.35 - 0.12 * (arm[i] == "active") + 0.03 * (base - 24) + subj_eff[i]
                y += 0.01 * (age[i] - 9) + rng.normal(0, 0.15)
                rows.append({"subject": f"E{i:03d}", "eye": eye, "arm": arm[i], "age": age[i],
                             "base": base, "chg": round(float(y), 4)})
        pd.DataFrame(rows).to_csv(DATA / f"{name}.csv", index=False)


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    make_ancova()
    make_mmrm()
    make_binary()
    make_survival()
    make_gee()
