"""The detectors a rule can run (one module per family) and the registry of kinds by name.

Each kind compiles a rule's parameters into a closure ``step(state, metrics) -> bool | None``:
``True`` when the condition holds at this step, ``False`` when it does not, ``None`` when the step
carries none of the metrics the rule reads (the alert lifecycle then stays where it is).

``state`` is a plain dict of JSON-serialisable numbers and short lists, owned by one (run, rule), so
it can be stored after every batch and survives restarts. Detectors that learn a baseline (running
medians, EWMAs) do not learn from the steps on which they fire: a spike must not become the new
normal while it lasts. Closures (not methods looking up parameters) because this runs for every
rule on every ingested step and must stay cheap.
"""

from .base import Kind, QuietFn, StepFn, validate_params
from .ewma import EWMA_ANOMALY
from .hacking import REWARD_HACK
from .level import RATE_OF_CHANGE, THRESHOLD
from .median import MEDIAN_SPIKE
from .nonfinite import NONFINITE
from .outcome import BELOW_BASELINE, DROP_FROM_BEST
from .ratios import SIGN_SHIFT, SIGN_SPREAD, TAILS
from .shift import SHIFT
from .silence import SILENCE
from .trend import TREND

__all__ = ["CUSTOM_KINDS", "KINDS", "Kind", "QuietFn", "StepFn", "validate_params"]

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        THRESHOLD,
        RATE_OF_CHANGE,
        EWMA_ANOMALY,
        MEDIAN_SPIKE,
        NONFINITE,
        TAILS,
        SIGN_SPREAD,
        SIGN_SHIFT,
        SHIFT,
        TREND,
        REWARD_HACK,
        BELOW_BASELINE,
        DROP_FROM_BEST,
        SILENCE,
    )
}
CUSTOM_KINDS = ("threshold", "rate_of_change", "ewma_anomaly", "shift", "trend")
