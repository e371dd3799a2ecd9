"""Collect the runs of a finished Hydra sweep from their own result files.

A job folder holds ``.hydra/overrides.yaml`` and ``.hydra/config.yaml`` (Hydra), ``metrics.json``
(final training/validation metrics) and ``eval_results.json`` (real coding; written by the
near-lossless evaluation or, with ``"mode": "lossy"``, by the lossy-only one).  Nothing is
recomputed: a report is a view of those files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlic.errors import NlicError

#: overrides that never name a variant (they are the same for every job or only steer the run)
_NOISE_PREFIXES = ("+sweeps=", "sweeps=", "hydra.", "debug=", "logger=", "trainer=", "launcher=", "paths.")
_TAU_KEY = re.compile(r"^(?:eval/)?(bpp|bpp_est|bpsp|psnr|max_err|enc_s_per_mp|dec_s_per_mp)_tau(\d+)$")
#: the same model coded without its bias-correction head (evaluate.without_bias_correction)
_NOBIAS_KEY = re.compile(r"^(?:eval/)?(bpp|bpp_est|bpsp|psnr|max_err|enc_s_per_mp|dec_s_per_mp)_nobias_tau(\d+)$")
_VAL_KEY = re.compile(r"^val/(bpp|bpsp|psnr|max_err)_tau(\d+)$")


@dataclass
class Run:
    """One job of a sweep and what it wrote."""

    path: Path
    overrides: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    label: str = ""

    @property
    def mode(self) -> str:
        """``lossy`` (lossy-only run) or ``near_lossless``."""
        if self.eval is not None and self.eval.get("mode") == "lossy":
            return "lossy"
        target = str((self.config.get("model") or {}).get("_target_", ""))
        return "lossy" if "lossy_module" in target else "near_lossless"

    @property
    def complete(self) -> bool:
        return self.eval is not None or bool(self.metrics)

    @property
    def sweep_name(self) -> str:
        return str(self.config.get("sweep_name", "adhoc"))

    @property
    def lossy_name(self) -> str:
        """Short name of the lossy codec (the ``lossy=`` choice, else the class name)."""
        for o in self.overrides:
            if o.startswith("lossy="):
                return o.split("=", 1)[1]
        return str((self.config.get("lossy") or {}).get("_target_", "?")).rsplit(".", 1)[-1]

    @property
    def mask(self) -> str | None:
        return (self.config.get("residual") or {}).get("mask")

    def per_tau(self, source: str = "eval") -> dict[int, dict[str, Any]]:
        """``{tau: {bpp, bpsp, psnr, max_err, ...}}`` of a near-lossless run.

        ``source="eval"``: real coding (``eval_results.json`` summary: bpp from real bytes, enc/dec
        s/MP).  ``source="eval_nobias"``: the same, coded without the bias-correction head (tau > 0).
        ``source="val"``: the last validation (``metrics.json`` ``val/*_tau*``: the model's rate
        estimate at every tau of the run's tau set).  PSNR is ``None`` when exact.
        """
        out: dict[int, dict[str, Any]] = {}
        if source.startswith("eval"):
            items = (self.eval or {}).get("summary", {}).items() if self.mode == "near_lossless" else []
            pattern = _NOBIAS_KEY if source == "eval_nobias" else _TAU_KEY
        else:
            items, pattern = self.metrics.items(), _VAL_KEY
        for key, value in items:
            m = pattern.match(key)
            if m:
                if m.group(1) == "psnr" and value is not None and value >= 100.0:
                    value = None  # exact reconstruction (validation caps PSNR at 100 dB)
                out.setdefault(int(m.group(2)), {})[m.group(1)] = value
        return dict(sorted(out.items()))

    def lossy_summary(self) -> dict[str, Any]:
        """Lossy-only run: ``{bpp, bpp_est, bpsp, psnr, ms_ssim, max_err, enc/dec_s_per_mp, source}``."""
        if self.eval is not None and self.eval.get("mode") == "lossy":
            return {**self.eval.get("summary", {}), "source": "eval"}
        m = self.metrics
        return {"bpp": m.get("val/bpp"), "psnr": m.get("val/psnr"), "ms_ssim": m.get("val/ms_ssim"), "source": "val"}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NlicError(f"{path} is not valid JSON: {err}") from None


def _job_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.parts)


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders under ``sweep_dir`` (those with ``.hydra/overrides.yaml``), in job order."""
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return sorted(dirs, key=lambda p: _job_key(p.relative_to(sweep_dir)))


def load_run(path: Path) -> Run:
    hydra_dir = path / ".hydra"
    overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
    cfg_file = hydra_dir / "config.yaml"
    config = (yaml.safe_load(cfg_file.read_text()) or {}) if cfg_file.is_file() else {}
    return Run(path=path, overrides=[str(o) for o in overrides], config=config,
               metrics=_read_json(path / "metrics.json") or {}, eval=_read_json(path / "eval_results.json"))


def variant_labels(runs: list[Run]) -> list[str]:
    """Name each run by the overrides that tell it apart from the sweep's other runs."""
    kept = [[o for o in r.overrides if not o.startswith(_NOISE_PREFIXES)] for r in runs]
    common = set.intersection(*(set(k) for k in kept)) if len(kept) > 1 else set()
    labels = []
    for r, k in zip(runs, kept):
        own = [o for o in k if o not in common]
        labels.append(" ".join(own) if own else (" ".join(k) or r.path.name))
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # identical labels (repeated jobs): add the job folder
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1 or labels.count(label) > 1:
            labels[i] = f"{label} [{runs[i].path.name}]"
    return labels


def collect_runs(sweep_dir: str | Path) -> list[Run]:
    """Every job of a sweep folder (a multirun dir, or one run folder), labelled by its overrides."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NlicError(f"sweep folder not found: {sweep_dir}")
    dirs = find_run_dirs(sweep_dir)
    if not dirs:
        raise NlicError(f"no runs under {sweep_dir} (expected job folders with .hydra/overrides.yaml)")
    runs = [load_run(d) for d in dirs]
    for run, label in zip(runs, variant_labels(runs)):
        run.label = label
    return runs
