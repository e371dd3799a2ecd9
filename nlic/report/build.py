"""Tables (markdown + CSV) and plots (PNG) of a sweep's runs, optionally logged to W&B.

Near-lossless runs give one row per variant and one column per tau (bpp, PSNR, max error);
lossy-only runs give one row per variant (bpp, PSNR, MS-SSIM) and rate-distortion curves.
Values come from real coding (``eval_results.json``); a tau the run only validated is taken from
``metrics.json`` (the model's estimate) and marked ``*`` in the markdown (``source`` in the CSV).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from nlic.report.collect import Run
from nlic.utils.figures import pyplot, save_figure

CSV_FIELDS = ["variant", "mode", "lossy", "mask", "lmbda", "tau", "bpp", "bpsp", "psnr", "ms_ssim", "max_err",
              "bpp_est", "enc_s_per_mp", "dec_s_per_mp", "source", "run_dir", "overrides"]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if value.is_integer() and abs(value) < 1e6 and digits == 0:
            return str(int(value))
        return f"{value:.{digits}f}"
    return str(value)


def report_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Flat rows with the CSV's fields: per (run, source, tau) for near-lossless runs (``source``
    ``eval`` = real coding, ``val`` = validation estimate), one per lossy-only run."""
    rows = []
    for run in runs:
        base = {
            "variant": run.label, "mode": run.mode, "lossy": run.lossy_name, "mask": run.mask,
            "lmbda": run.config.get("lmbda"), "run_dir": str(run.path), "overrides": " ".join(run.overrides),
        }
        if run.mode == "lossy":
            s = run.lossy_summary()
            rows.append({**base, "tau": None, **{k: s.get(k) for k in CSV_FIELDS if k in s}})
            continue
        for source in ("eval", "val"):
            for tau, vals in run.per_tau(source).items():
                bpsp = vals.get("bpsp", None if vals.get("bpp") is None else vals["bpp"] / 3)
                rows.append({**base, "tau": tau, **vals, "bpsp": bpsp, "source": source})
        nobias = run.per_tau("eval_nobias")
        if nobias:  # the bias-correction ablation on the same weights (tau 0 never uses that head)
            label = {**base, "variant": f"{run.label}, bias correction off"}
            plain = run.per_tau("eval")
            for tau, vals in sorted((({0: plain[0]} if 0 in plain else {}) | nobias).items()):
                bpsp = vals.get("bpsp", None if vals.get("bpp") is None else vals["bpp"] / 3)
                rows.append({**label, "tau": tau, **vals, "bpsp": bpsp, "source": "eval"})
    return [{k: r.get(k) for k in CSV_FIELDS} for r in rows]


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _pivot(rows: list[dict[str, Any]], key: str, digits: int) -> list[str]:
    """Markdown table: one row per variant, one column per tau."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    taus = sorted({r["tau"] for r in rows})
    cell: dict[tuple[str, int], str] = {}
    for r in rows:
        v = r.get(key)
        exact = key == "psnr" and v is None and r.get("max_err") == 0
        cell[(r["variant"], r["tau"])] = "inf" if exact else _fmt(v, digits)
    lines = ["| variant | " + " | ".join(f"τ={t}" for t in taus) + " |", "|---" * (len(taus) + 1) + "|"]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(cell.get((v, t), "–") for t in taus) + " |")
    return lines


def markdown(runs: list[Run], rows: list[dict[str, Any]], title: str) -> str:
    """The report: tables per metric and tau (near-lossless) and/or the RD table (lossy-only)."""
    n = len(runs)
    out = [f"# {title}", "", f"{n} run{'s' if n != 1 else ''}; variants named by the overrides that tell them apart.",
           ""]
    sections = (
        ("eval", "real coding, eval_results.json", (("bpp", "bpp", 3), ("psnr", "PSNR (dB)", 2),
                                                     ("max_err", "max error", 0), ("dec_s_per_mp", "decode s/MP", 2))),
        ("val", "validation estimate, metrics.json", (("bpp", "bpp", 3), ("psnr", "PSNR (dB)", 2),
                                                       ("max_err", "max error", 0))),
    )
    for source, where, metrics in sections:
        part = [r for r in rows if r["mode"] == "near_lossless" and r["source"] == source]
        for key, name, digits in metrics if part else ():
            out += [f"## {name} ({where})", "", *_pivot(part, key, digits), ""]
    lossy = [r for r in rows if r["mode"] == "lossy"]
    if lossy:
        out += ["## lossy-only rate–distortion (real coding; `*` validation estimate)", "",
                "| variant | lossy | λ | bpp | PSNR (dB) | MS-SSIM | max err | enc s/MP | dec s/MP |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(lossy, key=lambda r: (r["lossy"], r["bpp"] if r["bpp"] is not None else math.inf)):
            star = "*" if r["source"] == "val" else ""
            out.append(
                f"| {r['variant']} | {r['lossy']} | {_fmt(r['lmbda'], 4)} | {_fmt(r['bpp'], 4)}{star} | "
                f"{_fmt(r['psnr'], 2)} | {_fmt(r['ms_ssim'], 4)} | {_fmt(r['max_err'], 0)} | "
                f"{_fmt(r['enc_s_per_mp'], 2)} | {_fmt(r['dec_s_per_mp'], 2)} |"
            )
        out.append("")
    missing = [r.label for r in runs if not r.complete]
    if missing:
        out += ["Runs without results (failed or unfinished): " + ", ".join(missing), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------- plots
def plot_bpp_vs_tau(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """bpp against tau per variant: real coding solid, validation estimate dashed."""
    series: dict[tuple[str, str], list] = defaultdict(list)
    for r in rows:
        if r["mode"] == "near_lossless" and r["bpp"] is not None:
            series[(r["variant"], r["source"])].append((r["tau"], r["bpp"]))
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors: dict[str, Any] = {}
    for (name, source), pts in series.items():
        pts.sort()
        style = {"linestyle": "-" if source == "eval" else "--", "marker": "o" if source == "eval" else "."}
        if name in colors:
            style["color"] = colors[name]
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts],
                          label=f"{name} ({'real' if source == 'eval' else 'estimate'})", **style)
        colors.setdefault(name, line.get_color())
    ax.set_xlabel("τ (max absolute error)")
    ax.set_ylabel("bpp")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def plot_quality_vs_bpp(rows: list[dict[str, Any]], path: Path, metric: str = "psnr") -> Path | None:
    """Near-lossless: one line per variant over its taus.  Lossy-only: one RD curve per codec."""
    has_eval = {r["variant"] for r in rows if r["mode"] == "near_lossless" and r["source"] == "eval"}
    series = defaultdict(list)
    for r in rows:
        if r["bpp"] is None or r.get(metric) is None:
            continue
        if r["mode"] == "near_lossless" and r["source"] == "val" and r["variant"] in has_eval:
            continue  # real coding when the run has it
        name = r["variant"] if r["mode"] == "near_lossless" else r["lossy"]
        series[name].append((r["bpp"], r[metric]))
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("bpp")
    ax.set_ylabel({"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM"}.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_decode_time_vs_mask(runs: list[Run], rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean decode s/MP over each run's taus, by context mask (one bar per run)."""
    by_run = defaultdict(list)
    for r in rows:
        if r["mode"] == "near_lossless" and r.get("dec_s_per_mp") is not None:
            by_run[r["variant"]].append(r["dec_s_per_mp"])
    if not by_run:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    names, values, masks = [], [], []
    for run in runs:
        if run.label in by_run:
            names.append(run.label)
            values.append(sum(by_run[run.label]) / len(by_run[run.label]))
            masks.append(run.mask or "?")
    distinct_masks = len(set(masks)) == len(masks)
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(masks if distinct_masks else [f"{m}\n{n}" for m, n in zip(masks, names)], fontsize=7,
                       rotation=0 if distinct_masks else 30)
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")  # serial decoding is orders of magnitude slower
    ax.set_xlabel("context mask")
    ax.set_ylabel("decode s/MP (mean over τ)")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- entry points
def build_report(runs: list[Run], out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and the PNG plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = report_rows(runs)
    title = title or f"sweep {runs[0].sweep_name}"
    files: dict[str, Path] = {}
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(markdown(runs, rows, title))
    files["csv"] = write_csv(rows, out / "report.csv")
    plots = {
        "bpp_vs_tau": plot_bpp_vs_tau(rows, out / "bpp_vs_tau.png"),
        "psnr_vs_bpp": plot_quality_vs_bpp(rows, out / "psnr_vs_bpp.png", "psnr"),
        "decode_time_vs_mask": plot_decode_time_vs_mask(runs, rows, out / "decode_time_vs_mask.png"),
    }
    if any(r["mode"] == "lossy" for r in rows):
        plots["ms_ssim_vs_bpp"] = plot_quality_vs_bpp(
            [r for r in rows if r["mode"] == "lossy"], out / "ms_ssim_vs_bpp.png", "ms_ssim")
    files.update({k: v for k, v in plots.items() if v is not None})
    return files


def log_wandb(runs: list[Run], files: dict[str, Path], project: str = "nlic") -> str:
    """One W&B run (offline unless ``WANDB_MODE`` says otherwise) in the sweep's group: the table
    and the plots.  Returns the run's local folder."""
    import wandb

    out = files["markdown"].parent
    sweep = runs[0].sweep_name
    run = wandb.init(project=project, group=sweep, job_type="report", name=f"report-{sweep}", dir=str(out),
                     mode=os.environ.get("WANDB_MODE", "offline"), config={"sweep_name": sweep, "runs": len(runs)})
    try:
        with open(files["csv"], newline="") as f:
            data = list(csv.reader(f))
        payload: dict[str, Any] = {"report/table": wandb.Table(columns=data[0], data=data[1:])}
        for key, path in files.items():
            if path.suffix == ".png":
                payload[f"report/{key}"] = wandb.Image(str(path))
        run.log(payload)
        return str(run.dir)
    finally:
        run.finish()
