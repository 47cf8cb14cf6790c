"""Importing this module turns the verl adapter on in the importing process (``adapters/verl.py``).

It is what verl's ``actor_rollout_ref.model.external_lib=sapo_monitor.client.adapters.verl_enable`` (or
``VERL_USE_EXTERNAL_MODULES``) imports in every worker. Settings come from the ``SAPO_MONITOR_*``
environment; ``SAPO_MONITOR_VERL_RUN`` names the run (default: a new id chosen by data-parallel rank 0).
"""

from __future__ import annotations

import os

from sapo_monitor.client.adapters.verl import install

install(**({"run": os.environ["SAPO_MONITOR_VERL_RUN"]} if os.environ.get("SAPO_MONITOR_VERL_RUN") else {}))
