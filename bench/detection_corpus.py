"""The labelled corpus of bundled-trainer runs for ``bench/detection.py``: what to run, running it, labels.

Every run is recorded by the real client attached to the trainer with no server: its spool holds
exactly the request bodies the service would ingest. Layout under the cache directory::

    spool/<run_id>/run.json, batches/*.json.gz   the client's spool of the run (upload / backtest reads it)
    labels.json                                  {run_id: label}, label fields in :class:`Label`

Kinds of run (``Label.kind``):

* ``healthy``: a preset x algorithm x seed without faults whose curves show no collapse (hindsight rule);
* ``collapse``: such a run that collapsed on its own; onset from the hindsight rule below;
* ``fault:<name>``: a run with one scheduled fault (trainer/faults.py); onset = the scheduled step.

Hindsight rule (offline, on the run's whole recorded curve; ``hindsight_onset``): smooth the mean
reward over 10-step windows (``start`` = steps 1-10). A run collapsed when its smoothed reward at the
end is below ``best - max(0.05, half of the gain from start to best)`` (0.05 is about 4 standard errors
of a 10-step mean here), or when it reversed for a sustained stretch: 20 or more consecutive windows
below ``running best - max(0.05, 25% of that best)``, the best counted from steps 6-15 on (learning reversed for 20+ steps, even if the run
recovered later: at the time, "collapsing" was the truth; the stress preset's second rollout does this
to most runs). The onset is the step after the centre of the last window that stood within 10% of that
fall from the best (where the decline began). Also collapsed: entropy ending below 20% of its start
while the final reward is not above the start (the policy became deterministic without learning);
onset at the centre of the first window below that.

Fault kinds that, measured on this corpus, do not make learning stop or reverse (``PRECURSOR_ONLY``:
epochs=8 without clipping, bf16 rollouts and training routing noise 1.5 leave the reward curve intact
on every seed; epochs=16, tried as a stronger fault on 3 seeds (pg, sapo, grpo), did too) are scored by warnings, not critical alerts: a critical there would
break the severity contract (critical = collapsing). The reward hack counts as a collapse: the reward
climbs but the answers degenerate (mean response length falls to ~1 token, the task score with it);
its hindsight verdict is that length collapse (``length_collapsed``).
"""

from __future__ import annotations

import gzip
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["ALGOS", "FAULTS", "PRECURSOR_ONLY", "PRESETS", "Label", "RunPlan", "default_cache", "hindsight_onset", "plan_corpus",
           "read_labels", "read_steps", "record_run", "relabel", "write_labels"]

ALGOS = ("sapo", "grpo", "gspo", "pg")
PRESETS = ("default", "stress", "routing")
# Fault kind -> (the --at change, extra config). Strong enough to break a run that learns; the bench
# reports which of them the hindsight rule also sees as a collapse.
FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lr": ("lr=2e-2", {}),
    "reward_hack": ("reward=short", {}),
    "router_noise": ("train_router_noise=1.5", {"moe": True}),
    "epochs": ("epochs=8", {"max_grad_norm": None}),
    "rollout_bf16": ("rollout_bf16", {}),
    "nan_logprob": ("nan_logprob", {}),
}
# Fault kinds scored by a warning within the window (they do not collapse the run; see the docstring).
PRECURSOR_ONLY: dict[str, str] = {
    "epochs": "8 epochs per rollout without clipping: reward keeps rising on 5/5 seeds (16: 3/3 tried)",
    "rollout_bf16": "bf16 rollouts: mismatch rises, learning goes on on 5/5 seeds",
    "router_noise": "training routing noise 1.5: ratio spread rises, learning goes on on 5/5 seeds",
}


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    preset: str
    algo: str
    seed: int
    steps: int
    kind: str  # "matrix" (labelled healthy or collapse after the run) or "fault:<name>"
    faults: str = ""
    onset: int | None = None  # the scheduled step for a fault run
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Label:
    run_id: str
    kind: str  # healthy | collapse | fault:<name>
    onset: int | None  # first failing step (None for healthy runs)
    preset: str
    algo: str
    seed: int
    steps: int
    moe: bool
    faults: str
    collapsed: bool  # the hindsight rule's verdict (for fault runs: did the fault visibly break the run)
    hindsight_onset: int | None
    reward_first: float
    reward_best: float
    reward_last: float


def plan_corpus(seeds: int, steps: int) -> list[RunPlan]:
    """Every preset x algorithm x seed, then each fault on ``seeds`` runs (algorithm rotating with the seed).

    Fault onsets sit between 40% and 60% of the run so there are steps before and after them.
    """
    plans = [
        RunPlan(f"{preset}-{algo}-s{seed}", preset, algo, seed, steps, "matrix")
        for preset in PRESETS for algo in ALGOS for seed in range(seeds)
    ]
    for i, (name, (change, extra)) in enumerate(FAULTS.items()):
        for seed in range(seeds):
            algo = ALGOS[(seed + i) % len(ALGOS)]
            onset = int(steps * (0.4 + 0.2 * ((seed * 7 + i * 3) % 5) / 4))
            plans.append(RunPlan(f"fault-{name}-{algo}-s{seed}", "default", algo, seed, steps, f"fault:{name}",
                                 f"{onset}:{change}", onset, tuple(sorted(extra.items()))))
    return sorted(plans, key=lambda p: p.seed)  # seed by seed: an interrupted build is still balanced


def _smooth(xs: Sequence[float], k: int = 10) -> list[float]:
    """Trailing means over ``k`` steps, full windows only: entry i covers steps i+1 .. i+k (1-based)."""
    clean = [x if math.isfinite(x) else 0.0 for x in xs]
    return [sum(clean[i : i + k]) / k for i in range(len(clean) - k + 1)]


def _sustained_reversal(r: Sequence[float], rel: float = 0.25, stretch: int = 20, start: int = 5) -> int | None:
    """Onset of the first stretch of ``stretch`` windows below ``running best - max(0.05, rel * best)``; the
    best counts from window ``start`` on (steps 6-15: RL's opening transient after the warm start is no best)."""
    best, best_i, i = -math.inf, start, start
    while i < len(r):
        if r[i] > best:
            best, best_i = r[i], i
        bound = best - max(0.05, rel * best)
        if r[i] >= bound:
            i += 1
            continue
        j = i
        while j < len(r) and r[j] < bound:
            j += 1
        if j - i >= stretch:
            near = best - 0.1 * (best - min(r[i:j]))
            return max(k for k in range(best_i, i) if r[k] >= near) + 6
        i = j
    return None


def length_collapsed(lengths: Sequence[float], fraction: float = 0.5) -> bool:
    """The mean response length over the last 10 steps below ``fraction`` of the first 10 steps'."""
    r = _smooth(lengths)
    return len(r) > 0 and r[-1] < fraction * r[0]


def hindsight_onset(rewards: Sequence[float], entropies: Sequence[float]) -> int | None:
    """The hindsight rule of the module docstring: the collapse onset step (1-based), or None."""
    if len(rewards) < 20:
        return None
    r = _smooth(rewards)  # r[i] ends at step i + 10
    start = r[0]
    best_i = max(range(len(r)), key=r.__getitem__)
    best, end = r[best_i], r[-1]
    fall = best - end
    if fall > max(0.05, 0.5 * (best - start)):
        near = best - 0.1 * fall
        last_near = max(i for i in range(len(r)) if r[i] >= near)
        return last_near + 6  # the centre of the window that last stood near the best, plus one
    reversal = _sustained_reversal(r)
    if reversal is not None:
        return reversal
    e = _smooth(entropies)
    e0 = e[0]
    if e[-1] < 0.2 * e0 and end <= start + 0.05:
        return next(i for i in range(len(e)) if e[i] < 0.2 * e0) + 6
    return None


def record_run(plan: RunPlan, cache: Path) -> Label:
    """Train one planned run with the client attached to a spool under ``cache``; its label."""
    import torch
    from sapo_monitor.client import attach
    from sapo_monitor.trainer import Trainer, make_config

    torch.set_num_threads(1)
    cfg = make_config(plan.preset, algo=plan.algo, seed=plan.seed, steps=plan.steps, faults=plan.faults,
                      **dict(plan.overrides))
    trainer = Trainer(cfg)
    spool_root = cache / "spool"
    monitor = attach(trainer, run=plan.run_id, project="detection-corpus", server=None, spool_dir=spool_root,
                     tags={"corpus_kind": plan.kind})
    try:
        summary = trainer.train()
    finally:
        monitor.close()
    rewards = [e.reward for e in summary.history]
    onset = hindsight_onset(rewards, [e.entropy for e in summary.history])
    if plan.kind == "matrix":
        kind, label_onset = ("collapse", onset) if onset is not None else ("healthy", None)
    else:
        kind, label_onset = plan.kind, plan.onset
    r = _smooth(rewards) or [math.nan]
    return Label(plan.run_id, kind, label_onset, plan.preset, plan.algo, plan.seed, plan.steps, cfg.moe,
                 plan.faults, onset is not None, onset, r[0], max(r), r[-1])


def relabel(lab: Label, steps: Sequence[dict[str, Any]]) -> Label:
    """The label recomputed offline from the run's recorded ``reward.mean`` / ``entropy.mean`` (the corpus
    itself, so a changed hindsight rule needs no retraining)."""
    from sapo_monitor.client.wire import decode_float

    def series(name: str) -> list[float]:
        return [decode_float(d["metrics"].get(name, "NaN")) for d in steps]

    rewards = series("reward.mean")
    onset = hindsight_onset(rewards, series("entropy.mean"))
    r = _smooth(rewards) or [math.nan]
    kind, label_onset = lab.kind, lab.onset
    collapsed = onset is not None
    if not lab.kind.startswith("fault:"):
        kind, label_onset = ("collapse", onset) if onset is not None else ("healthy", None)
    elif lab.kind == "fault:reward_hack":
        collapsed = length_collapsed(series("response_len.mean"))
    return replace(lab, kind=kind, onset=label_onset, collapsed=collapsed, hindsight_onset=onset,
                   reward_first=r[0], reward_best=max(r), reward_last=r[-1])


def read_steps(run_dir: Path) -> list[dict[str, Any]]:
    """A spooled run's step records (wire documents), in step order, the last record of a step winning."""
    by_step: dict[int, dict[str, Any]] = {}
    for path in sorted((run_dir / "batches").glob("*.json.gz")):
        for doc in json.loads(gzip.decompress(path.read_bytes()))["steps"]:
            by_step[int(doc["step"])] = doc
    return [by_step[k] for k in sorted(by_step)]


def default_cache() -> Path:
    """``build/detection-corpus`` in the repository (git-ignored build area) or, outside it, a temp dir."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / ".git").exists():
        return repo / "build" / "detection-corpus"
    return Path(tempfile.gettempdir()) / "sapo-detection-corpus"


def write_labels(cache: Path, labels: Sequence[Label]) -> None:
    doc = {lab.run_id: asdict(lab) for lab in sorted(labels, key=lambda x: x.run_id)}
    tmp = cache / "labels.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(cache / "labels.json")


def read_labels(cache: Path) -> dict[str, Label]:
    path = cache / "labels.json"
    if not path.exists():
        return {}
    return {k: Label(**v) for k, v in json.loads(path.read_text()).items()}
