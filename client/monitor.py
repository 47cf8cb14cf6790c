"""``Monitor``: what training code talks to. ``init`` builds one; adapters call it from trainer hooks.

Per optimizer step: ``observe`` once per micro-batch (statistics accumulate on the device), then
``end_step`` (one device-to-host transfer, a :class:`~sapo_monitor.client.wire.StepRecord` handed to
the background delivery). With ``stats_batch`` > 1, small CPU steps are instead copied and computed
a batch at a time (``_deferred.py``). Neither raises into training code: a problem is logged once, with its reason,
and training goes on (``strict=True`` re-raises input errors, for tests and debugging).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sapo_monitor.client import _signals, wire
from sapo_monitor.client._alerts import Alert, AlertWatch
from sapo_monitor.client._deferred import DeferredSteps, record_from_stats
from sapo_monitor.client._delivery import Delivery
from sapo_monitor.client._distributed import (
    DEFAULT_RANK_TIMEOUT,
    RankReducer,
    StoreExchange,
    data_parallel_group,
)
from sapo_monitor.client._spool import Spool
from sapo_monitor.client._warn_once import WarnOnce
from sapo_monitor.client.errors import ConfigError, InputError
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.client.stats import StatsConfig, StepAccumulator, check_inputs
from sapo_monitor.client.stats.summary import StepSummary

if TYPE_CHECKING:
    import torch
    from sapo_monitor.client._transport import Transport

__all__ = ["RUN_ID_RE", "Monitor", "init"]

log = logging.getLogger("sapo_monitor.client")
RUN_ID_RE = wire.RUN_ID_RE  # the one run-id rule (wire.names), the service's too


class Monitor:
    """One run's statistics and delivery. Build it with :func:`init` (or ``attach``)."""

    def __init__(self, *, run_id: str, spec: wire.RunSpec, delivery: Delivery | None,
                 stats_config: StatsConfig = StatsConfig(), strict: bool = False, stats_batch: int = 1,
                 stats_batch_wait: float = 1.0, exchange: StoreExchange | None = None,
                 rank_timeout: float = DEFAULT_RANK_TIMEOUT) -> None:
        self.run_id = run_id
        self.spec = spec
        self.stats_config = stats_config
        self.strict = strict
        self.stats_batch = stats_batch
        self._delivery = delivery  # None on data-parallel ranks other than 0: they never deliver
        self._warn_once = WarnOnce(log)
        # Data-parallel runs: each step's summary goes to the reducer; rank 0's merges every rank's.
        self._reducer = RankReducer(exchange, emit=self._submit, warn=self._warn_once, timeout=rank_timeout) \
            if exchange is not None and exchange.rank >= 0 else None
        # A process outside the data-parallel group (a model-parallel peer holding the same tokens): no-op.
        self._silent = delivery is None and self._reducer is None
        # Data-parallel rank 0: end_step waits for (and returns) the merged record (TRL's log mirror).
        self.wait_for_merged_record = False
        self._acc = StepAccumulator(stats_config)
        # stats_batch > 1: small steps keep copies of their tensors and are computed stats_batch at a time.
        self._deferred = DeferredSteps(stats_config, max_steps=stats_batch, max_wait=stats_batch_wait,
                                       emit=self._submit, warn=self._warn_once,
                                       emit_summary=self._reducer.submit if self._reducer else None) \
            if stats_batch > 1 and not self._silent else None
        self._micro: list[dict[str, torch.Tensor]] = []  # deferred mode: this step's micro-batches (copies)
        self._last_step: int | None = None
        self._closed = False
        # The run's firing alerts from the ingest answers (init wires it to the delivery; stop_on lives here).
        self.alert_watch = AlertWatch()
        atexit.register(self._at_exit)

    @property
    def alerts(self) -> list[Alert]:
        """The run's alerts firing as of the service's latest ingest answer."""
        return self.alert_watch.alerts

    def on_alert(self, callback: Callable[[Alert], None]) -> None:
        """Call ``callback(alert)`` once for each newly firing alert, on the delivery thread (keep it
        short); an exception it raises is logged, never raised into training."""
        self.alert_watch.on_alert(callback)

    @property
    def spool_dir(self) -> Path | None:
        """The run's spool; None on data-parallel ranks other than 0 (they keep none)."""
        return self._delivery.spool.dir if self._delivery is not None else None

    @property
    def rank(self) -> int:
        """This process's rank in the data-parallel group (0 without one); only rank 0 delivers."""
        return self._reducer.rank if self._reducer is not None else 0

    @property
    def last_step(self) -> int | None:
        return self._last_step

    def observe(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        **optional_tensors: torch.Tensor | None,
    ) -> None:
        """Fold one micro-batch into the current step (tensors: see ``stats.compute_step_stats``)."""
        if self._silent:
            return
        try:
            present = {k: v for k, v in optional_tensors.items() if v is not None}
            if self._deferred is None:
                self._acc.add(logp_new, logp_old, advantages, mask, **present)
            else:  # checked now, computed later: keep our own copies, never the caller's tensors
                check_inputs(logp_new, logp_old, advantages, mask, **present)
                import torch

                with torch.no_grad():
                    self._micro.append({name: t.detach().clone() for name, t in (
                        ("logp_new", logp_new), ("logp_old", logp_old), ("advantages", advantages), ("mask", mask),
                        *present.items())})
        except Exception as exc:
            if self.strict and isinstance(exc, InputError):
                raise
            self._warn_once(f"observe-{type(exc).__name__}", f"sapo-monitor: observe() skipped a micro-batch "
                                                             f"of run {self.run_id}: {exc}")

    def end_step(
        self,
        step: int | None = None,
        *,
        loss: float | None = None,
        grad_norm: float | None = None,
        lr: float | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> wire.StepRecord | None:
        """Close the step: aggregate its micro-batches and queue the record (does not wait for the network).

        ``step`` defaults to the previous step + 1 (starting at 0). ``metrics`` adds extra named values
        (names ``[a-z0-9_.]+``). Returns the record that was queued, or None when the step's statistics
        wait to be computed with the next small steps (``stats_batch`` > 1).
        """
        if step is None:
            step = 0 if self._last_step is None else self._last_step + 1
        self._last_step = step
        when = time.time()
        values: dict[str, float] = {}
        for name, value in (("loss", loss), ("grad_norm", grad_norm), ("lr", lr), *(metrics or {}).items()):
            if value is None:
                continue
            try:
                if not wire.METRIC_NAME_RE.match(name):
                    raise ValueError(f"metric name {name!r} must match {wire.METRIC_NAME_RE.pattern}")
                values[name] = float(value)
            except (TypeError, ValueError) as exc:
                self._warn_once(f"metric-{name}", f"sapo-monitor: metric {name!r} dropped: {exc}")
        if self._reducer is not None or self._silent:
            return self._reduce_step(int(step), when, values) if self._reducer is not None else None
        micro: list[dict[str, torch.Tensor]] = []
        if self._deferred is not None:
            micro, self._micro = self._micro, []
            try:
                key = self._deferred.batch_key(micro[0]) if len(micro) == 1 else None
                if key is not None:
                    self._deferred.add(int(step), when, micro[0], values, key)
                    return None
            except Exception as exc:  # add logs its own failures; belt and braces for training's sake
                self._warn_once("deferred", f"sapo-monitor: step {step} of run {self.run_id} not batched: {exc}")
            self._compute_waiting()  # records stay in step order
        stats: dict[str, float | list[int]] = {}
        try:
            for batch in micro:  # deferred mode, a step computed at once: its micro-batches (our copies)
                self._acc.add(**batch)
            stats = self._acc.result() if not self._acc.empty else {}
        except Exception as exc:
            self._warn_once(f"stats-{type(exc).__name__}", f"sapo-monitor: statistics of step {step} of run "
                                                           f"{self.run_id} failed: {exc}")
        finally:
            self._acc.reset()  # drop every tensor of the step
        record = record_from_stats(int(step), when, stats, values)
        self._submit(record)
        return record

    def _reduce_step(self, step: int, when: float, values: dict[str, float]) -> wire.StepRecord | None:
        """Data-parallel: this rank's summary to the reducer; an empty one if it has none or failed, so
        rank 0 is not left waiting for it. With ``wait_for_merged_record`` rank 0 returns the merged
        record (waiting at most ``rank_timeout`` for its peers: adapters that mirror it need it now)."""
        assert self._reducer is not None
        micro: list[dict[str, torch.Tensor]] = []
        if self._deferred is not None:  # small steps: summaries a batch at a time, still in step order
            micro, self._micro = self._micro, []
            try:
                key = self._deferred.batch_key(micro[0]) if len(micro) == 1 else None
                if key is not None:
                    self._deferred.add(step, when, micro[0], values, key)
                    return None
            except Exception as exc:
                self._warn_once("deferred", f"sapo-monitor: step {step} of run {self.run_id} not batched: {exc}")
            self._compute_waiting()
        summary = StepSummary()
        try:
            for batch in micro:
                self._acc.add(**batch)
            if not self._acc.empty:
                summary = self._acc.summaries()[0]
        except Exception as exc:
            self._warn_once(f"stats-{type(exc).__name__}", f"sapo-monitor: statistics of step {step} of run "
                                                           f"{self.run_id} failed: {exc}")
        finally:
            self._acc.reset()
        seq = self._reducer.submit(step, when, summary, values)
        if self.wait_for_merged_record and self._reducer.rank == 0:
            return self._reducer.wait_record(seq, self._reducer.timeout + 1.0)
        return None

    def _submit(self, record: wire.StepRecord) -> None:
        if self._delivery is None:
            return
        try:
            self._delivery.submit(record)
        except Exception as exc:  # submit does not raise; belt and braces for training's sake
            self._warn_once("submit", f"sapo-monitor: could not queue step {record.step}: {exc}")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every step so far is delivered (or, offline, in the spool). True when done."""
        self._compute_waiting()
        if self._reducer is not None and not self._reducer.flush(timeout):
            return False
        return self._delivery.flush(timeout) if self._delivery is not None else True

    def secure(self, timeout: float = 2.0) -> bool:
        """Put every step ended so far on disk, without the network (SIGTERM's handler, ``_signals``).
        True when all of them are there within ``timeout`` seconds."""
        self._compute_waiting()
        return self._delivery.spool_now(timeout) if self._delivery is not None else True

    def _compute_waiting(self) -> None:
        if self._deferred is not None:
            try:
                self._deferred.flush()
            except Exception as exc:  # flush logs its own failures; belt and braces for training's sake
                self._warn_once("deferred", f"sapo-monitor: waiting steps of run {self.run_id} lost: {exc}")

    def close(self, timeout: float | None = None, *, status: str = "finished") -> None:
        """Deliver what is pending, mark the run ``status``, stop the worker. Also runs at exit."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        self._compute_waiting()
        if self._reducer is not None:
            self._reducer.close(timeout)
        if self._delivery is None:
            return
        try:
            self._delivery.close(timeout, status=status)
        except Exception as exc:
            log.warning("sapo-monitor: closing run %s: %s", self.run_id, exc)

    def _at_exit(self) -> None:
        self.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(status="failed" if exc_type is not None else "finished")

    def __repr__(self) -> str:
        return f"Monitor(run={self.run_id!r}, project={self.spec.project!r}, spool={str(self.spool_dir)!r})"


def init(
    run: str | None = None,
    *,
    project: str | None = None,
    server: str | None = None,
    token: str | None = None,
    spool_dir: str | Path | None = None,
    algo: str | None = None,
    config: Mapping[str, Any] | Any | None = None,
    tags: Mapping[str, Any] | None = None,
    stats_config: StatsConfig | None = None,
    name: str | None = None,
    strict: bool = False,
    stats_batch: int | None = None,
    default_stats_batch: int = 1,
    transport: Transport | None = None,
    settings: ClientSettings | None = None,
    process_group: Any = None,
    rank_timeout: float = DEFAULT_RANK_TIMEOUT,
    stop_on: str | Iterable[str] | None = None,
) -> Monitor:
    """Start monitoring a run.

    Args:
        run: the run id (wire.RUN_ID_RULE: letters, digits, ``.``, ``_``, ``-``, starting with a letter or
            digit, a dot only between two others, at most 200); reusing one resumes it (and its spool). Default: a new id.
        project: project name (default ``SAPO_MONITOR_PROJECT`` or "default").
        server: service URL (default ``SAPO_MONITOR_SERVER``); None: offline, steps go to the spool only.
        token: bearer token (default ``SAPO_MONITOR_TOKEN``).
        spool_dir: spool root (default ``SAPO_MONITOR_SPOOL_DIR`` or ``~/.cache/sapo-monitor/spool``).
        algo: "sapo", "grpo", "gspo", ...; config: the run's configuration (dict or dataclass);
        tags: string labels. stats_config: thresholds of the statistics. name: display name.
        strict: re-raise input errors from ``observe`` instead of logging them.
        stats_batch: compute the statistics of up to this many small CPU steps together (default
            ``SAPO_MONITOR_STATS_BATCH`` or 1: every step at ``end_step``). Above 1, ``end_step`` of a small
            step returns None and its record follows within ``stats_batch`` steps or ``flush_interval``.
        default_stats_batch: ``stats_batch`` when neither the argument nor the settings give one (adapters
            set it for trainers whose steps are small).
        transport: replaces the HTTP transport (tests); settings: replaces the environment.
        process_group: the data-parallel ``torch.distributed`` group (default: the default group when
            initialised). Call ``init`` on every rank: rank 0's records cover every rank's tokens; the
            other ranks never touch the network or a spool (see ``_distributed.py``).
        rank_timeout: seconds rank 0 waits for a peer's step before recording the step without it.
        stop_on: ``"critical"``, ``"warning"`` or a list of severities and rule ids: the first firing alert that
            matches sets ``monitor.alert_watch.stop_alert`` and calls its ``on_stop`` callbacks (adapters stop
            the trainer there). Default None: never.

    Raises:
        ConfigError: a bad run id or server URL.
    """
    settings = settings or _settings_from_env()
    overrides: dict[str, Any] = {}
    if server is not None:
        overrides["server"] = server
    if token is not None:
        overrides["token"] = token
    if project is not None:
        overrides["project"] = project
    if spool_dir is not None:
        overrides["spool_dir"] = Path(spool_dir)
    if overrides:
        try:
            settings = ClientSettings.model_validate({**settings.model_dump(), **overrides})
        except Exception as exc:
            raise ConfigError(str(exc)) from exc
    group = data_parallel_group(process_group)
    exchange = StoreExchange(group) if group is not None else None
    run_id = run or _new_run_id(algo)
    if not wire.is_run_id(run_id):  # the service would refuse every batch of it, and it names a spool folder
        raise ConfigError(f"run id {run_id!r} is not valid: {wire.RUN_ID_RULE}")
    spec = wire.RunSpec(
        project=settings.project,
        name=name or run_id,
        algorithm=algo,
        config=_checked_config(config),
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        status="running",
    )
    batch = next(b for b in (stats_batch, settings.stats_batch, default_stats_batch) if b is not None)
    if batch < 1:
        raise ConfigError(f"stats_batch must be >= 1, got {batch}")
    if exchange is not None and exchange.rank != 0:  # a peer (statistics sent to rank 0), or outside the group
        return Monitor(run_id=run_id, spec=spec, delivery=None, stats_config=stats_config or StatsConfig(),
                       strict=strict, stats_batch=batch, stats_batch_wait=settings.flush_interval, exchange=exchange,
                       rank_timeout=rank_timeout)
    if transport is None and settings.server is not None:
        from sapo_monitor.client._transport import HttpTransport

        token_value = settings.token.get_secret_value() if settings.token else None
        transport = HttpTransport(settings.server, token_value, timeout=settings.timeout)
        # The run page in the service's web UI, printed once as the run starts (as wandb does).
        print(f"sapo-monitor: run {run_id} at {str(settings.server).rstrip('/')}/#/run/{run_id}", file=sys.stderr)
    spool = Spool(settings.run_spool_dir(run_id))
    watch = AlertWatch(stop_on)
    delivery = Delivery(run_id=run_id, spec_doc=spec.to_wire(), spool=spool, transport=transport, settings=settings,
                        on_response=watch.handle)
    if transport is None:
        log.info("sapo-monitor: no server set; run %s is recorded offline in %s", run_id, spool.dir)
    monitor = Monitor(run_id=run_id, spec=spec, delivery=delivery, stats_config=stats_config or StatsConfig(),
                      strict=strict, stats_batch=batch, stats_batch_wait=settings.flush_interval, exchange=exchange,
                      rank_timeout=rank_timeout)
    monitor.alert_watch = watch
    _signals.install(monitor)  # SIGTERM puts every ended step on disk, then goes on as before
    return monitor


def _settings_from_env() -> ClientSettings:
    try:
        return ClientSettings()
    except Exception as exc:
        raise ConfigError(f"invalid SAPO_MONITOR_* environment: {exc}") from exc


def _new_run_id(algo: str | None) -> str:
    return f"{algo or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _checked_config(config: Any) -> dict[str, Any]:
    """The config as JSON data the service stores (wire.encode_tree's checks), else ConfigError."""
    try:
        return wire.encode_tree(_jsonable(config or {}), loc=["config"])  # type: ignore[no-any-return]
    except wire.WireError as exc:
        raise ConfigError(f"config is not storable: {exc}") from None


def _jsonable(value: Any) -> Any:
    """Plain JSON data from configs: dataclasses, paths, enums, tuples; non-finite floats as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else wire.encode_float(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return str(value)
