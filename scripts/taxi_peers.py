#!/usr/bin/env python3
"""The nine steps of farmem's taxi analysis (AIFM's DataFrame app) in pandas or polars.

Usage: taxi_peers.py {pandas|polars} FILE.csv

Prints one JSON object: load_seconds, analyze_seconds and the answers in the form
`farmem-bench taxi --peers` compares with farmem's (see crates/farmem-bench/src/taxi_peers.rs).
Exits with status 3 if the engine is not installed.
"""

import json
import math
import sys
import time


def haversine_np(np, lon1, lat1, lon2, lat2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    s1 = np.sin((p2 - p1) / 2.0)
    s2 = np.sin(np.radians(lon2 - lon1) / 2.0)
    a = s1 * s1 + np.cos(p1) * np.cos(p2) * (s2 * s2)
    return (2.0 * 6371.0) * np.arcsin(np.sqrt(a))


def pairs(keys, values, conv=int):
    return [[int(k), conv(v)] for k, v in zip(keys, values)]


def run_pandas(path):
    try:
        import numpy as np
        import pandas as pd
    except ImportError:
        sys.exit(3)
    t = time.perf_counter()
    df = pd.read_csv(
        path,
        parse_dates=["tpep_pickup_datetime", "tpep_dropoff_datetime"],
        date_format="%Y-%m-%d %H:%M:%S",
    )
    load = time.perf_counter() - t
    t = time.perf_counter()
    out = {"rows": len(df), "vendors": sorted(int(v) for v in df["VendorID"].unique())}
    for vid in (1, 2):
        vc = df.loc[df["VendorID"] == vid, "passenger_count"].value_counts().sort_index()
        out[f"passengers_vendor{vid}"] = pairs(vc.index, vc.values)
    dur = (df["tpep_dropoff_datetime"] - df["tpep_pickup_datetime"]).dt.total_seconds()
    df["trip_duration"] = dur
    out["duration_mean"] = float(dur.mean())
    out["duration_min"] = int(dur.min())
    out["duration_max"] = int(dur.max())
    out["share_not_stored"] = float((df["store_and_fwd_flag"] == "N").mean())
    out["vendors_stored"] = sorted(
        int(v) for v in df.loc[df["store_and_fwd_flag"] == "Y", "VendorID"].unique()
    )
    dist = haversine_np(
        np,
        df["pickup_longitude"].to_numpy(),
        df["pickup_latitude"].to_numpy(),
        df["dropoff_longitude"].to_numpy(),
        df["dropoff_latitude"].to_numpy(),
    )
    out["trips_over_100km"] = int((dist > 100.0).sum())
    pick = df["tpep_pickup_datetime"]
    out["pickup_min"] = str(pick.min())
    out["pickup_max"] = str(pick.max())
    df["pickup_hour"] = pick.dt.hour
    df["pickup_day"] = pick.dt.day
    df["pickup_month"] = pick.dt.month
    for part in ("hour", "day", "month"):
        vc = df[f"pickup_{part}"].value_counts().sort_index()
        out[f"by_{part}"] = pairs(vc.index, vc.values)
    for part in ("day", "month"):
        med = df.groupby(f"pickup_{part}")["trip_duration"].median().sort_index()
        out[f"median_by_{part}"] = pairs(med.index, med.values, float)
    return load, time.perf_counter() - t, out


def run_polars(path):
    try:
        import numpy as np
        import polars as pl
    except ImportError:
        sys.exit(3)
    t = time.perf_counter()
    df = pl.read_csv(path, try_parse_dates=True)
    load = time.perf_counter() - t
    t = time.perf_counter()
    col, lit = pl.col, pl.lit
    out = {"rows": df.height, "vendors": sorted(df["VendorID"].unique().to_list())}
    pv = df.group_by("VendorID", "passenger_count").len().sort("VendorID", "passenger_count")
    for vid in (1, 2):
        v = pv.filter(col("VendorID") == vid)
        out[f"passengers_vendor{vid}"] = pairs(v["passenger_count"], v["len"])
    df = df.with_columns(
        (col("tpep_dropoff_datetime") - col("tpep_pickup_datetime"))
        .dt.total_seconds()
        .alias("trip_duration")
    )
    d = df.select(
        col("trip_duration").mean().alias("mean"),
        col("trip_duration").min().alias("min"),
        col("trip_duration").max().alias("max"),
        (col("store_and_fwd_flag") == "N").mean().alias("share"),
    )
    out["duration_mean"] = float(d["mean"][0])
    out["duration_min"] = int(d["min"][0])
    out["duration_max"] = int(d["max"][0])
    out["share_not_stored"] = float(d["share"][0])
    out["vendors_stored"] = sorted(
        df.filter(col("store_and_fwd_flag") == "Y")["VendorID"].unique().to_list()
    )
    p1, p2 = col("pickup_latitude").radians(), col("dropoff_latitude").radians()
    s1 = ((p2 - p1) / 2.0).sin()
    s2 = ((col("dropoff_longitude") - col("pickup_longitude")).radians() / 2.0).sin()
    a = s1 * s1 + p1.cos() * p2.cos() * (s2 * s2)
    dist = lit(2.0 * 6371.0) * a.sqrt().arcsin()
    out["trips_over_100km"] = int(df.select((dist > 100.0).sum()).item())
    pick = col("tpep_pickup_datetime")
    out["pickup_min"] = str(df.select(pick.min()).item())
    out["pickup_max"] = str(df.select(pick.max()).item())
    df = df.with_columns(
        pick.dt.hour().alias("pickup_hour"),
        pick.dt.day().alias("pickup_day"),
        pick.dt.month().alias("pickup_month"),
    )
    for part in ("hour", "day", "month"):
        vc = df.group_by(f"pickup_{part}").len().sort(f"pickup_{part}")
        out[f"by_{part}"] = pairs(vc[f"pickup_{part}"], vc["len"])
    for part in ("day", "month"):
        med = (
            df.group_by(f"pickup_{part}")
            .agg(col("trip_duration").median())
            .sort(f"pickup_{part}")
        )
        out[f"median_by_{part}"] = pairs(med[f"pickup_{part}"], med["trip_duration"], float)
    return load, time.perf_counter() - t, out


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("pandas", "polars"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    run = run_pandas if sys.argv[1] == "pandas" else run_polars
    load, analyze, answers = run(sys.argv[2])
    for k, v in answers.items():
        if isinstance(v, float) and math.isnan(v):
            answers[k] = None
    print(json.dumps({"load_seconds": load, "analyze_seconds": analyze, "answers": answers}))


if __name__ == "__main__":
    main()
