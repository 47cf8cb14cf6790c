"""``sapo-monitor train``: run the bundled reference trainer, optionally streamed to the service."""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Any

import typer

from sapo_monitor.cli.extras import require


class Algo(str, enum.Enum):
    sapo = "sapo"
    grpo = "grpo"
    gspo = "gspo"
    pg = "pg"


class Preset(str, enum.Enum):
    default = "default"
    stress = "stress"
    routing = "routing"


class Task(str, enum.Enum):
    reverse = "reverse"
    sort = "sort"
    copy = "copy"


_TRAIN_HELP = (
    "Train the bundled reference policy on a synthetic digit task with SAPO, GRPO, GSPO or PG.\n\n"
    "Each rollout samples G responses per prompt from the current weights (pi_old) and scores them with "
    "partial credit; the policy then takes several optimizer steps over mini-batches of it. "
    "[bold]--preset default[/] learns steadily; [bold]--preset stress[/] (MoE with noisy rollout routing, "
    "32 steps per rollout, twice the learning rate, no gradient clipping) drives the unclipped "
    "[bold]pg[/] baseline into collapse; [bold]--preset routing[/] (MoE with routing noise in training and "
    "rollout forwards, 8 steps per rollout, clipped gradients) is the regime where ratios stay near 1 but vary.\n\n"
    "[bold]--at STEP:NAME=VALUE[/] (repeatable) schedules a change from that step on, e.g. --at 150:lr=2e-2, "
    "--at 120:reward=short (a hackable reward paying short answers), --at 100:train_router_noise=0.5, "
    "--at 80:epochs=8, --at 200:rollout_bf16, --at 90:nan_logprob (NaN in 1% of new log-probs).\n\n"
    "With [bold]--server[/] (or [bold]--spool[/]) every optimizer step is streamed through the client. "
    "Options left out keep the preset's value."
)


def _fmt(value: float, spec: str = ".3f") -> str:
    return format(value, spec) if math.isfinite(value) else str(value)


def train(
    algo: Algo = typer.Option(
        Algo.sapo,
        "--algo",
        help="Policy loss: sapo (soft gate), grpo (token clip), gspo (sequence clip) or pg (unclipped baseline).",
    ),
    preset: Preset = typer.Option(
        Preset.default,
        "--preset",
        help="Starting configuration: 'default' learns steadily, 'stress' applies off-policy pressure.",
    ),
    steps: int = typer.Option(300, "--steps", min=1, help="Number of optimizer steps to take."),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Random seed: the same seed gives the same run, bitwise, on CPU with the same thread count.",
    ),
    moe: bool | None = typer.Option(
        None,
        "--moe/--dense",
        help="Mixture-of-Experts or dense feed-forward layers (default: the preset's; stress is MoE).",
    ),
    lr: float | None = typer.Option(
        None, "--lr", min=0.0, help="AdamW learning rate (default: 1e-3, stress 2e-3)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Passes over each rollout batch (default 1, stress 4)."
    ),
    minibatch_size: int | None = typer.Option(
        None, "--minibatch-size", min=1, help="Responses per optimizer step (default 32, stress 16)."
    ),
    prompts: int | None = typer.Option(None, "--prompts", min=1, help="Prompts per rollout (default 16)."),
    group_size: int | None = typer.Option(
        None, "--group-size", min=2, help="Responses sampled per prompt, G (default 8)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", min=0.01, help="Sampling temperature of the policy (default 1.0)."
    ),
    max_grad_norm: float | None = typer.Option(
        None,
        "--max-grad-norm",
        min=0.0,
        help="Clip the gradient norm to this value; 0 turns clipping off (default 1.0, stress off).",
    ),
    router_noise: float | None = typer.Option(
        None,
        "--router-noise",
        min=0.0,
        help="Std of the Gaussian noise on MoE router logits in the rollout engine (default 0, stress 0.5).",
    ),
    rollout_bf16: bool | None = typer.Option(
        None,
        "--rollout-bf16/--rollout-fp32",
        help="Sample from a bfloat16 copy of the policy to emulate a lower-precision inference engine.",
    ),
    tau_pos: float | None = typer.Option(
        None, "--tau-pos", min=0.0, help="SAPO gate temperature for positive advantages (default 1.0)."
    ),
    tau_neg: float | None = typer.Option(
        None, "--tau-neg", min=0.0, help="SAPO gate temperature for negative advantages (default 1.05)."
    ),
    eps_low: float | None = typer.Option(
        None, "--eps-low", min=0.0, help="GRPO lower clip width, ratio floor 1 - eps_low (default 0.2)."
    ),
    eps_high: float | None = typer.Option(
        None, "--eps-high", min=0.0, help="GRPO upper clip width, ratio ceiling 1 + eps_high (default 0.2)."
    ),
    warm_start: int | None = typer.Option(
        None, "--warm-start", min=0, help="Supervised steps on correct answers before RL (default 20)."
    ),
    task: Task | None = typer.Option(None, "--task", help="The digit task: reverse (default), sort or copy."),
    threads: int = typer.Option(
        1,
        "--threads",
        min=1,
        envvar="SAPO_MONITOR_THREADS",
        help="CPU threads for torch. One is fastest for this small model, and robust when the CPU is shared (e.g. with the service); runs are bitwise reproducible for a fixed thread count.",
    ),
    stop_on: str | None = typer.Option(
        None,
        "--stop-on",
        envvar="SAPO_MONITOR_STOP_ON",
        help="Stop training cleanly after the current step when the service reports a matching alert: "
        "'critical', 'warning' (any alert) or a comma-separated list of severities and rule ids. Needs --server. "
        "Default: never stop.",
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        envvar="SAPO_MONITOR_SERVER",
        help="Stream every step to the sapo-monitor service at this URL (e.g. http://127.0.0.1:8321).",
    ),
    project: str = typer.Option(
        "default",
        "--project",
        envvar="SAPO_MONITOR_PROJECT",
        help="Project the run belongs to on the service.",
    ),
    run: str | None = typer.Option(
        None, "--run", help="Run name on the service (default: <algo>-<preset>-s<seed>)."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="SAPO_MONITOR_TOKEN", help="API token for the service, if it requires one."
    ),
    spool: Path | None = typer.Option(
        None,
        "--spool",
        envvar="SAPO_MONITOR_SPOOL_DIR",
        help="Spool directory: without --server the steps are written there for a later 'sapo-monitor upload'.",
    ),
    at: list[str] = typer.Option(
        [],
        "--at",
        metavar="STEP:NAME[=VALUE]",
        help="Scheduled change (fault) from optimizer step STEP on; repeatable. NAME is one of lr, weight_decay, "
        "max_grad_norm, temperature, tau_pos, tau_neg, eps_low, eps_high, seq_eps_low, seq_eps_high, epochs, "
        "rollout_bf16, reward (task|short), train_router_noise, rollout_router_noise (a noise std), nan_logprob "
        "(a token share; bare: 0.01). See trainer/faults.py.",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Data-parallel ranks on this machine (gloo processes): each samples 1/N of the prompts and mini-batch "
        "and gradients are averaged; --prompts and --minibatch-size must be multiples of N. With --server, "
        "rank 0's record of each step covers every rank's tokens.",
    ),
) -> None:
    require("torch", "trainer")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from sapo_monitor.trainer import StepLog, Trainer, make_config
    from sapo_monitor.trainer.faults import parse_schedule

    overrides: dict[str, Any] = {
        "threads": threads,
        "moe": moe,
        "lr": lr,
        "epochs": epochs,
        "minibatch_size": minibatch_size,
        "prompts_per_rollout": prompts,
        "group_size": group_size,
        "temperature": temperature,
        "tau_pos": tau_pos,
        "tau_neg": tau_neg,
        "eps_low": eps_low,
        "eps_high": eps_high,
        "warm_start_steps": warm_start,
        "rollout_bf16": rollout_bf16,
        "task": task.value if task else None,
        "faults": " ".join(item.strip() for item in at) or None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if max_grad_norm is not None:
        overrides["max_grad_norm"] = max_grad_norm or None
    if router_noise is not None:
        overrides["router_noise"] = router_noise
        overrides["rollout_router_noise"] = router_noise > 0
    try:
        config = make_config(preset.value, algo=algo.value, steps=steps, seed=seed, **overrides)
        parse_schedule(config.faults)  # a bad --at item is named before any rank starts
        trainer = Trainer(config) if nproc == 1 else None
        for name in ("prompts_per_rollout", "minibatch_size"):
            if getattr(config, name) % nproc:
                raise ValueError(f"--{name.replace('_per_rollout', '').replace('_', '-')} "
                                 f"{getattr(config, name)} must be a multiple of --nproc {nproc}")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    console = Console()
    if config.faults:
        console.print("fault schedule: " + "  ".join(f.spec() for f in parse_schedule(config.faults)))
    run_name = run or f"{algo.value}-{preset.value}-s{seed}"
    monitor = None
    attach_kwargs = {"run": run_name, "project": project, "server": server, "token": token, "spool_dir": spool}
    if stop_on:
        if not server:
            raise typer.BadParameter("needs --server (alerts come from the service)", param_hint="--stop-on")
        attach_kwargs["stop_on"] = stop_on
    if (server or spool) and trainer is not None:
        from sapo_monitor.client import attach

        monitor = attach(trainer, **attach_kwargs)
    if server or spool:
        where = server or f"spool {spool}"
        console.print(f"streaming run [bold]{run_name}[/] (project {project}) to {where}")

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, refresh_per_second=5) as progress:
            bar = progress.add_task(f"{algo.value}/{preset.value}", total=steps, stats="")

            def show(entry: StepLog) -> None:
                stats = (
                    f"reward {_fmt(entry.reward)}  entropy {_fmt(entry.entropy)}  "
                    f"ratio std {_fmt(entry.ratio_std, '.3g')}  max {_fmt(entry.ratio_max, '.3g')}"
                )
                progress.update(bar, completed=entry.step, stats=stats)

            if trainer is not None:
                summary = trainer.train(progress=show)
            else:  # every rank attaches the client; rank 0 delivers
                from sapo_monitor.trainer.distributed import launch

                summary = launch(config, nproc, monitor=attach_kwargs if server or spool else None, progress=show)
    finally:
        if monitor is not None:
            monitor.close()

    table = Table(title=f"run {run_name}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    w = summary.window
    rows = [
        ("algorithm / preset", f"{summary.algo} / {summary.preset}"),
        ("optimizer steps / rollouts", f"{summary.steps} / {summary.rollouts}"),
        (f"reward, first {w} steps", _fmt(summary.reward_first)),
        (f"reward, last {w} steps", _fmt(summary.reward_last)),
        ("reward gain", _fmt(summary.reward_gain, "+.3f")),
        (f"entropy, first / last {w}", f"{_fmt(summary.entropy_first)} / {_fmt(summary.entropy_last)}"),
        (
            "ratio std, max / last",
            f"{_fmt(summary.ratio_std_max, '.3g')} / {_fmt(summary.ratio_std_last, '.3g')}",
        ),
        ("non-finite steps (skipped)", f"{summary.nonfinite_steps} ({summary.skipped_steps})"),
        ("wall time", f"{summary.wall_s:.1f} s"),
    ]
    if trainer is not None and trainer.stop_reason is not None:
        rows.append(("stopped early", trainer.stop_reason))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the ``sapo-monitor`` app."""
    app.command("train", help=_TRAIN_HELP)(train)
