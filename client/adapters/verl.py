"""Adapter for verl (>= 0.9, its engine workers: FSDP, Megatron and the others behind ``BaseEngine``).

Turn it on with one config line (every worker process imports the module and installs the hooks)::

    actor_rollout_ref.model.external_lib=sapo_monitor.client.adapters.verl_enable

or ``VERL_USE_EXTERNAL_MODULES=sapo_monitor.client.adapters.verl_enable`` in the workers' environment;
the ``SAPO_MONITOR_*`` variables (server, token, project, run) must reach the workers too (Ray passes the
driver's environment to local workers; on a cluster, ``ray_kwargs.ray_init.runtime_env.env_vars``). In
code, ``install(run=..., server=...)`` in each worker process, or ``attach(engine, ...)`` for an engine
you drive yourself.

Per optimizer step (one ``BaseEngine.train_batch``), the wrapped policy loss (``verl_hooks.py``) observes
each micro-batch's ``old_log_prob``, ``log_prob``, ``advantages`` (per token) and ``response_mask`` and
calls the configured loss unchanged; after the step, ``end_step`` with verl's ``grad_norm`` and the
learning rate. The record's step is the actor's optimizer step count (1, 2, ...). Every data-parallel
rank does the same; rank 0 of ``engine.get_data_parallel_group()`` merges them into one record
(``client/_distributed.py``). Only the model-parallel source rank of each replica
(``engine.is_mp_src_rank_with_outputs()``: tensor-parallel rank 0 on the last pipeline stage, sequence-
parallel rank 0) observes; those ranks are exactly one data-parallel group, so tokens held by several
model-parallel ranks are counted once. Megatron's ``dynamic_context_parallel`` (only one source rank in
the group) is not supported: its records would be marked partial.

What the loss does not see is not recorded: entropy, rewards, the rollout engine's log-probs and MoE
routing. Sequence statistics are per sequence, and a sequence never spans ranks, so verl's batch
balancing (which splits GRPO groups over ranks) does not change them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sapo_monitor.client import wire
from sapo_monitor.client._warn_once import WarnOnce
from sapo_monitor.client.adapters.verl_hooks import StepContext, install_hooks, uninstall_hooks
from sapo_monitor.client.monitor import Monitor, init
from sapo_monitor.client.stats import StatsConfig

__all__ = ["VerlSession", "algo_for", "attach_verl", "install", "session", "stats_config_for", "uninstall"]

log = logging.getLogger("sapo_monitor.client")
# verl's loss modes and the algorithm names of this project (others keep verl's name).
ALGOS = {"sapo": "sapo", "gspo": "gspo", "vanilla": "grpo"}
_CONFIG_FIELDS = ("loss_agg_mode", "clip_ratio", "clip_ratio_low", "clip_ratio_high", "clip_ratio_c", "tau_pos",
                  "tau_neg", "ppo_epochs", "ppo_mini_batch_size", "entropy_coeff", "use_kl_loss", "kl_loss_coef")


def _loss_mode(config: Any) -> str:
    policy_loss = getattr(config, "policy_loss", None)
    get = getattr(policy_loss, "get", None)  # a dataclass config or an omegaconf DictConfig
    mode = get("loss_mode", "vanilla") if callable(get) else None
    return str(mode or "vanilla")


def algo_for(config: Any) -> str:
    mode = _loss_mode(config)
    return ALGOS.get(mode, mode)


def stats_config_for(config: Any) -> StatsConfig:
    """The thresholds of the loss verl optimises, from its ``ActorConfig`` (missing fields: the defaults)."""
    def get(name: str, default: float) -> float:
        value = getattr(config, name, None)
        return default if value is None else float(value)

    base = StatsConfig()
    clip = get("clip_ratio", base.eps_low)
    low, high = get("clip_ratio_low", clip), get("clip_ratio_high", clip)
    if _loss_mode(config) == "gspo":  # verl's GSPO applies its clip ratios to the sequence ratio
        return StatsConfig(tau_pos=get("tau_pos", base.tau_pos), tau_neg=get("tau_neg", base.tau_neg),
                           seq_eps_low=low, seq_eps_high=high)
    return StatsConfig(tau_pos=get("tau_pos", base.tau_pos), tau_neg=get("tau_neg", base.tau_neg),
                       eps_low=low, eps_high=high)


class VerlSession:
    """This process's monitors, one per engine whose optimizer steps ran a policy loss (the actor)."""

    def __init__(self, init_kwargs: dict[str, Any]) -> None:
        self.init_kwargs = init_kwargs
        self._monitors: dict[int, Monitor | None] = {}  # id(engine) -> monitor (None: not a source rank)
        self._steps: dict[int, int] = {}
        self._lock = threading.Lock()
        self._warn_once = WarnOnce(log)

    def monitor_for(self, engine: Any, config: Any = None) -> Monitor | None:
        """The engine's monitor, created on its first optimizer step (every rank of its data-parallel group
        gets there together); None on a rank that is not its replica's model-parallel source."""
        key = id(engine)
        with self._lock:
            if key in self._monitors:
                return self._monitors[key]
            monitor: Monitor | None = None
            try:
                if engine.is_mp_src_rank_with_outputs():
                    kwargs = dict(self.init_kwargs)
                    if config is not None:
                        kwargs.setdefault("algo", algo_for(config))
                        kwargs.setdefault("stats_config", stats_config_for(config))
                        kwargs.setdefault("config", {"loss_mode": _loss_mode(config), **{
                            f: getattr(config, f) for f in _CONFIG_FIELDS if hasattr(config, f)}})
                    tags = {"trainer": "verl", **(kwargs.pop("tags", None) or {})}
                    monitor = init(process_group=engine.get_data_parallel_group(), tags=tags, **kwargs)
            except Exception as exc:  # never into training: this rank records nothing
                self._warn_once("init", f"sapo-monitor: verl adapter could not start monitoring: {exc}")
            self._monitors[key] = monitor
            self._steps[key] = 0
            return monitor

    def on_loss(self, ctx: StepContext, args: dict[str, Any]) -> None:
        try:
            monitor = self.monitor_for(ctx.engine, args.get("config"))
            if monitor is None:
                return
            log_prob = args["log_prob"]
            monitor.observe(log_prob.detach(), args["old_log_prob"].detach(), args["advantages"].detach(),
                            args["response_mask"].detach())
        except Exception as exc:
            if self.init_kwargs.get("strict"):
                raise
            self._warn_once(f"loss-{type(exc).__name__}", f"sapo-monitor: verl loss not observed: {exc}")

    def on_step(self, ctx: StepContext, outputs: Any) -> None:
        if not ctx.losses:  # no policy loss in this step (a critic's, say)
            return
        key = id(ctx.engine)
        monitor = self._monitors.get(key)
        if monitor is None:
            return
        try:
            self._steps[key] += 1
            metrics = outputs.get("metrics", {}) if isinstance(outputs, dict) else {}
            monitor.end_step(self._steps[key], grad_norm=_scalar(metrics.get("grad_norm")), lr=_lr(ctx.engine))
        except Exception as exc:
            if self.init_kwargs.get("strict"):
                raise
            self._warn_once(f"step-{type(exc).__name__}", f"sapo-monitor: verl step not recorded: {exc}")

    def close(self, timeout: float | None = None) -> None:
        for monitor in self._monitors.values():
            if monitor is not None:
                monitor.close(timeout=timeout) if timeout is not None else monitor.close()


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def _lr(engine: Any) -> float | None:
    optimizer = getattr(engine, "optimizer", None)
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups else None


_session: VerlSession | None = None


def session() -> VerlSession | None:
    return _session


def install(**init_kwargs: Any) -> VerlSession:
    """Hook verl in this process; ``init_kwargs`` go to :func:`~sapo_monitor.client.init` (run, server,
    project, ...; algo, config and stats_config default to the actor's). A second call replaces them."""
    global _session
    if _session is not None:
        _session.init_kwargs = init_kwargs
        return _session
    new = VerlSession(init_kwargs)
    install_hooks(new.on_loss, new.on_step)
    _session = new
    return new


def uninstall(timeout: float | None = None) -> None:
    """Close this process's monitors and remove the hooks."""
    global _session
    if _session is not None:
        _session.close(timeout)
        _session = None
    uninstall_hooks()


def attach_verl(engine: Any, **init_kwargs: Any) -> Monitor:
    """``attach(engine)`` for a verl ``BaseEngine`` driven by your own code: hooks verl, starts the engine's
    monitor now (call it on every rank of the engine's data-parallel group) and returns it; a rank that is
    not its replica's model-parallel source gets a monitor that records nothing."""
    config = init_kwargs.pop("actor_config", None)
    monitor = install(**init_kwargs).monitor_for(engine, config)
    if monitor is None:
        return Monitor(run_id=init_kwargs.get("run") or "verl-model-parallel-peer",
                       spec=wire.RunSpec(project="default", name="verl"), delivery=None)
    return monitor
