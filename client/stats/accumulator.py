"""``StepAccumulator``: a step's sufficient statistics, merged over its micro-batches on the device."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sapo_monitor.client.errors import InputError
from sapo_monitor.client.stats.catalogue import assemble, named_sums
from sapo_monitor.client.stats.checks import check_inputs, check_optional_names
from sapo_monitor.client.stats.config import CPU_BLOCK_POSITIONS, QUANTILES, ZERO_SIGNAL_ABS, StatsConfig
from sapo_monitor.client.stats.features import GROUPS, TOK, on_device, per_step, sign_groups, token_features
from sapo_monitor.client.stats.sketch import QuantileSketch
from sapo_monitor.client.stats.summary import StepSummary

if TYPE_CHECKING:
    import torch

__all__ = ["StepAccumulator"]


class StepAccumulator:
    """Sufficient statistics of one step (or of a batch of K steps), merged over micro-batches on the device.

    ``add`` once per micro-batch, then ``result`` once: the result equals one ``add`` of all the
    tokens (quantiles within the grid tolerance). ``add_steps`` takes K whole steps of one shape at once
    and ``results`` gives their K records: small steps cost per operation, not per token, so K steps
    together cost about what one does. Holds only tensors it computed itself, never the caller's.

    The work keeps the [rows, T] layout: no gathers, no data-dependent shapes. Per-token features
    (``TOK``) are summed per sequence, and the sums weighted by each sequence's groups (``GROUPS``:
    all, A > 0, A < 0, ...) give the per-step, per-group sums in one small batched matrix product.
    Sums are shifted by pivot values fixed at each step's first micro-batch (so variances of
    near-constant data keep full precision) and therefore simply add across micro-batches; extremes
    take max. The log-ratios are kept (compact) or binned into the grid (masked) for the quantiles and
    the histogram. Every stored tensor has the step as its leading dimension.
    """

    def __init__(self, config: StatsConfig = StatsConfig(), *, compact: bool | None = None) -> None:
        self.config = config
        # compact=True keeps every log-ratio for exact quantiles by sorting (cheap on a CPU); False bins
        # them into the grid on the device as they come (the default on accelerators).
        self.compact = compact
        self._sketch = QuantileSketch()
        self.reset()

    @property
    def empty(self) -> bool:
        return self.calls == 0

    def reset(self) -> None:
        """Forget everything (drops the references to the kept tensors)."""
        self._pivots: torch.Tensor | None = None  # [K, 3]: lr, r - 1, reward of each step's first batch
        self._sums: dict[str, torch.Tensor] = {}  # additive, [K, ...]
        self._maxes: dict[str, torch.Tensor] = {}  # max-merged, [K, ...]
        self._sketch.reset()  # the log-ratios, for the quantiles and the histogram
        self.calls = 0
        self.steps = 1

    def _add_sum(self, name: str, value: torch.Tensor) -> None:
        old = self._sums.get(name)
        self._sums[name] = value if old is None else old + value

    def _add_max(self, name: str, value: torch.Tensor) -> None:
        import torch

        old = self._maxes.get(name)
        self._maxes[name] = value if old is None else torch.maximum(old, value)

    # ------------------------------------------------------------------------------------ adding
    def add(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        **optional_tensors: torch.Tensor | None,
    ) -> None:
        """Fold one micro-batch into the step (see :func:`compute_step_stats` for the arguments)."""
        import torch

        if self.steps != 1 and not self.empty:
            raise InputError("this accumulator holds a batch of steps (add_steps); reset it first")
        with torch.no_grad():
            self._add(logp_new, logp_old, advantages, mask, optional_tensors, 1)
        self.calls += 1

    def add_steps(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        **optional_tensors: torch.Tensor | None,
    ) -> None:
        """K whole steps of one shape: tensors as for ``add`` with a leading step dimension ([K, B, T],
        [K, B], expert ids [K, L, B, T, k]). Once, on an empty accumulator; ``results`` gives K records."""
        import torch

        check_optional_names(optional_tensors)
        if not self.empty:
            raise InputError("add_steps needs an empty accumulator")
        if logp_new.dim() != 3:
            raise InputError(f"logp_new must be [K, B, T], got shape {tuple(logp_new.shape)}")
        k = logp_new.shape[0]

        def rows(t: torch.Tensor | None, name: str) -> torch.Tensor | None:
            if t is None:
                return None
            if t.shape[:1] != (k,):
                raise InputError(f"{name} has shape {tuple(t.shape)}; expected K={k} steps first")
            if name.startswith("experts"):  # [K, L, B, T, k] -> [L, K*B, T, k]
                t = t if t.dim() == 5 else t.unsqueeze(1)
                return t.transpose(0, 1).reshape(t.shape[1], -1, *t.shape[3:])
            return t.reshape(-1, *t.shape[2:])

        flat = {name: rows(t, name) for name, t in optional_tensors.items()}
        with torch.no_grad():
            self._add(rows(logp_new, "logp_new"), rows(logp_old, "logp_old"),  # type: ignore[arg-type]
                      rows(advantages, "advantages"), rows(mask, "mask"), flat, k)  # type: ignore[arg-type]
        self.steps = k
        self.calls += 1

    def _add(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        opt: dict[str, torch.Tensor | None],
        steps: int,
    ) -> None:
        # Runs under no_grad: nothing computed here requires grad, so nothing is detached. ``steps`` (K)
        # whole steps come as K equal blocks of rows.
        import torch

        f64 = torch.float64
        per_row = check_inputs(logp_new, logp_old, advantages, mask, **opt)
        shape = tuple(logp_new.shape)
        device = logp_new.device
        cfg = self.config
        n_rows, n_cols = shape

        adv = on_device(advantages, device, f64)
        per_token = adv.dim() == 2
        pos, neg = adv > 0, adv < 0
        groups = sign_groups(adv, pos, neg)  # [len(GROUPS), rows] or [len(GROUPS), rows, T]
        # SAPO's temperature per sequence (or token) follows the advantage's sign.
        tau = groups[1] * (cfg.tau_pos - cfg.tau_neg) + cfg.tau_neg
        if not per_token:
            tau = tau.unsqueeze(1)  # broadcasts over positions

        # A block of sequences at a time. On a CPU every float64 temporary of a block stays in cache
        # and is reused: full-size temporaries would cost more in allocation and page faults than in
        # arithmetic. A small step (or batch of steps) is one block, where each operation counts.
        rows = max(1, CPU_BLOCK_POSITIONS // max(n_cols, 1)) if device.type == "cpu" else max(n_rows, 1)
        feat = torch.empty(len(TOK), min(rows, n_rows), n_cols, dtype=f64, device=device)
        compact = self.compact if self.compact is not None else device.type == "cpu"
        m: torch.Tensor | None  # the mask as booleans (the block loop keeps it only per token)
        if rows >= n_rows or steps > 1:
            row_sums, len64, tok, m = self._add_block(logp_new, logp_old, mask, tau,
                                                      groups if per_token else None, per_row, feat, compact, steps)
        else:
            row_sums = torch.empty(len(TOK), n_rows, dtype=f64, device=device)
            len64 = torch.empty(n_rows, dtype=f64, device=device)
            tok = torch.zeros(1, len(TOK), len(GROUPS), dtype=f64, device=device) if per_token else None
            for r0 in range(0, n_rows, rows):
                b = slice(r0, min(r0 + rows, n_rows))
                sums, lens, tok_b, _ = self._add_block(
                    logp_new[b], logp_old[b], mask[b], tau[b], groups[:, b] if per_token else None,
                    {k: v[:, b] if k.startswith("experts") else v[b] for k, v in per_row.items()}, feat, compact, 1,
                )
                row_sums[:, b], len64[b] = sums, lens
                if tok is not None and tok_b is not None:
                    tok += tok_b
            m = on_device(mask, device) > 0 if per_token else None
        if tok is None:  # per-sequence groups: weight each sequence's sums, step by step
            tok = per_step(row_sums, groups, steps)
        self._add_sum("tok", tok)  # [K, len(TOK), len(GROUPS)]
        self._add_sequences(row_sums, len64, adv, pos, neg, m, steps)
        rewards = opt.get("rewards")
        if rewards is not None:
            assert self._pivots is not None
            d = on_device(rewards, device, f64).reshape(steps, -1) - self._pivots[:, 2:]
            self._add_sum("reward", torch.stack([torch.ones_like(d), d, d.square()], 1).sum(2))

    def _add_block(
        self,
        logp_new: torch.Tensor,
        logp_old: torch.Tensor,
        mask: torch.Tensor,
        tau: torch.Tensor,
        groups: torch.Tensor | None,
        opt: dict[str, torch.Tensor],
        feat: torch.Tensor,
        compact: bool,
        steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One block of sequences (all K steps' when K > 1): the token features summed per sequence
        [len(TOK), b], masked tokens per sequence [b], the per-step group sums when ``groups`` is per
        token, and the mask as booleans."""
        import torch

        f64, device = torch.float64, logp_new.device
        m = on_device(mask, device) > 0
        old64 = on_device(logp_old, device, f64)
        x = on_device(logp_new, device, f64) - old64
        # v - v is 0 exactly for finite v and NaN for NaN and +-Inf: one test for lr's finiteness.
        valid = m & ((x - x) == 0)
        vf = valid.to(f64)
        x = torch.where(valid, x, 0.0)  # lr 0 where excluded: r - 1, k3 and the clip flags vanish there
        if self._pivots is None:  # each step's first kept value (0 if none): the shift that keeps ties exact
            lr_pivot = x.reshape(steps, -1).gather(1, valid.reshape(steps, -1).to(torch.uint8).argmax(1, keepdim=True))
            rw = opt.get("rewards")
            rw_pivot = on_device(rw.reshape(steps, -1)[:, :1], device, f64) if rw is not None else lr_pivot
            self._pivots = torch.cat([lr_pivot, lr_pivot.exp() - 1.0, rw_pivot], 1)  # [K, 3]
        n_rows = x.shape[0]
        if feat.shape[1] != n_rows:
            feat = feat[:, :n_rows]
        if steps == 1:
            token_features(x, vf, tau, self._pivots[0, 0], self._pivots[0, 1], self.config, feat)
        else:  # [K, B, T] views: each step's pivots broadcast over its own rows
            t = x.shape[1]
            token_features(x.view(steps, -1, t), vf.view(steps, -1, t), tau.view(steps, -1, tau.shape[1]),
                            self._pivots[:, :1, None], self._pivots[:, 1:2, None], self.config,
                            feat.view(len(TOK), steps, -1, t))
        row_sums = feat.sum(2)
        tok = None if groups is None else per_step(feat.reshape(len(TOK), n_rows, -1),
                                                    groups.reshape(len(GROUPS), n_rows, -1), steps)
        self._sketch.add(x, valid, compact=compact, steps=steps)
        if len(opt) > ("rewards" in opt):
            self._add_optional(opt, old64, valid, row_sums[0].reshape(steps, -1).sum(1), steps)
        return row_sums, m.sum(1, dtype=f64), tok, m

    def _add_optional(self, opt: dict[str, torch.Tensor], old64: torch.Tensor, valid: torch.Tensor,
                      n: torch.Tensor, steps: int) -> None:
        """The optional per-token tensors of one block (shapes checked): ``old64`` the float64 logp_old,
        ``valid`` the finite masked tokens, ``n`` [K] their count per step."""
        import torch

        f64, device = torch.float64, old64.device
        entropy = opt.get("entropy")
        if entropy is not None:
            ent = torch.where(valid, on_device(entropy, device, f64), 0.0).reshape(steps, -1).sum(1)
            self._add_sum("entropy", torch.stack([ent, n], 1))
        rollout = opt.get("logp_rollout")
        if rollout is not None:
            d = torch.where(valid, old64 - on_device(rollout, device, f64), 0.0)
            sums = torch.stack([d, d.expm1() - d]).reshape(2, steps, -1).sum(2)
            self._add_sum("mismatch", torch.cat([sums, n.unsqueeze(0)]).T)
            self._add_max("mismatch", d.abs().reshape(steps, -1).amax(1, keepdim=True) if d.numel()
                          else torch.zeros(steps, 1, dtype=f64, device=device))
        eo, en = opt.get("experts_old"), opt.get("experts_new")
        if eo is not None and en is not None:  # [L, b, T, k]
            # Compare chosen sets, not orders: sort the k ids of each (layer, token).
            changed = (on_device(eo, device).sort(-1).values != on_device(en, device).sort(-1).values).any(-1).sum(0)
            flips = torch.where(valid, changed, 0).reshape(steps, -1).sum(1, dtype=f64)  # flipped (layer, token)
            self._add_sum("moe", torch.stack([flips, n * eo.shape[0]], 1))

    def _add_sequences(self, row_sums: torch.Tensor, len64: torch.Tensor, adv: torch.Tensor, pos: torch.Tensor,
                       neg: torch.Tensor, m: torch.Tensor | None, steps: int) -> None:
        """GSPO's sequence ratio s_i (geometric mean), its band, dispersion within a sequence, zero signal.

        ``row_sums``: the token features summed per sequence; ``len64``: masked tokens per sequence
        (non-finite ones included); ``m``: the mask as booleans (read for per-token advantages only)."""
        import torch

        assert self._pivots is not None
        cfg, f64 = self.config, torch.float64
        n_i = row_sums[0]
        shift, shift_sq = (row_sums[1:3] / n_i.clamp(min=1)).unbind(0)  # means of lr - pivot, of its square
        lr_pivot = self._pivots[0, 0] if steps == 1 else self._pivots[:, 0].repeat_interleave(n_i.numel() // steps)
        seq_mean = lr_pivot + shift
        s = seq_mean.exp()
        if adv.dim() == 2:  # a sequence's advantage: the mean over its masked tokens
            assert m is not None
            adv = torch.where(m, adv, 0.0).sum(1) / len64.clamp(min=1)
            pos, neg = adv > 0, adv < 0
        seq_clip = torch.where(pos, s > 1.0 + cfg.seq_eps_high, neg & (s < 1.0 - cfg.seq_eps_low))
        d_s = s - 1.0
        seq_features = torch.stack([
            len64.clamp(max=1.0), d_s, d_s.square(), seq_clip, (shift_sq - shift.square()).clamp(min=0).sqrt(),
            adv.abs() < ZERO_SIGNAL_ABS, len64, len64 - n_i,  # non-finite
        ])  # rows of SEQ (booleans become 0/1); row 0: 1 for sequences with a masked token
        ok = n_i > 0
        # Summed over the sequences with a finite token (the ratio statistics), and with any masked token.
        self._add_sum("seq", per_step(torch.stack([ok.to(f64), seq_features[0]]), seq_features, steps))
        # Maxima of the response length (0 for a sequence without tokens: only read when some sequence
        # has one), of the sequence mean log-ratio and of its negative (-inf without finite tokens).
        seq_mean = torch.where(ok, seq_mean, -math.inf)
        maxima = torch.stack([len64, seq_mean, torch.where(ok, -seq_mean, -math.inf)])
        self._add_max("seq", maxima.reshape(3, steps, -1).amax(2).T if n_i.numel()
                      else torch.full((steps, 3), -math.inf, dtype=f64, device=n_i.device))



    def result(self) -> dict[str, float | list[int]]:
        """The step's statistics (one device-to-host transfer). Empty dict when nothing was added."""
        records = self.results()
        return records[0] if records else {}

    def results(self) -> list[dict[str, float | list[int]]]:
        """Each step's statistics (``add_steps``: K records, in order), in one device-to-host transfer."""
        if self.empty or self._pivots is None:
            return []
        lr_range, est, frac, outside, hist = self._sketch.result(self._sums["tok"][:, 0, :1])
        records = []
        for host in self._host_rows(lr_range=lr_range, hist=hist, est=est, frac=frac, outside=outside):
            h = named_sums(host)
            nq = len(QUANTILES)
            est_h, frac_h = host["est"], host["frac"]
            n_valid = int(h["n_valid"])
            if n_valid > 0 and any(host["outside"]):
                est_h = self._sketch.exact_order_stats(n_valid)
            quantiles = {
                name: est_h[i] + frac_h[i] * (est_h[nq + i] - est_h[i]) if frac_h[i] > 0 else est_h[i]
                for i, (name, _) in enumerate(QUANTILES)
            }
            out = assemble(h, quantiles)
            out["hist.log_ratio"] = [int(c) for c in host["hist"]]
            records.append(out)
        return records

    def summaries(self) -> list[StepSummary]:
        """Each step's mergeable summary (``summary.merge`` combines data-parallel ranks'; its ``stats()``
        equals ``results()`` for one rank, quantiles within the grid bound where the sketch is a grid)."""
        if self.empty or self._pivots is None:
            return []
        n = self._sums["tok"][:, 0, :1]
        hist = self._sketch.result(n)[4]  # bins a large compact step into the grid: parts() sends cells
        sketches = self._sketch.parts(n)
        return [StepSummary(host, sketch) for host, sketch in zip(self._host_rows(hist=hist), sketches, strict=True)]

    def _host_rows(self, **extra: torch.Tensor) -> list[dict[str, list[float]]]:
        """Per step, the host copy of the sums, maxima and ``extra`` parts: one device-to-host transfer."""
        import torch

        assert self._pivots is not None
        steps = self.steps
        parts: list[tuple[str, torch.Tensor]] = [
            ("pivots", self._pivots),
            *((f"sum.{k}", v) for k, v in self._sums.items()),
            *((f"max.{k}", v) for k, v in self._maxes.items()),
            *extra.items(),
        ]
        # cat promotes the counts (int64) to float64 exactly: the one transfer of the batch.
        host_rows = torch.cat([v.reshape(steps, -1) for _, v in parts], 1).tolist()
        widths = [v.numel() // steps for _, v in parts]
        rows = []
        for row in host_rows:
            host: dict[str, list[float]] = {}
            at = 0
            for (name, _), width in zip(parts, widths, strict=True):
                host[name] = row[at : at + width]
                at += width
            rows.append(host)
        return rows
