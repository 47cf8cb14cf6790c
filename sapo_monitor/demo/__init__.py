"""``sapo-monitor demo``: the service, four stress runs (SAPO, GRPO, GSPO, unclipped PG), the comparison.

Modules: ``server`` (background ``serve`` process), ``receiver`` (local webhook receiver),
``session`` (the steps of the demo), ``outcome`` (per-run summary), ``plot`` (the PNG).
"""
