"""sapo-monitor: stability diagnostics for SAPO / GRPO / GSPO reinforcement-learning runs.

Import packages:
- ``sapo_monitor.client``: the light hook training code attaches (``client.attach(trainer)``).
- ``sapo_monitor.service``: the FastAPI service (extra ``[service]``).
- ``sapo_monitor.trainer``: the bundled reference SAPO trainer (extra ``[trainer]``).
"""

__version__ = "0.1.0"
