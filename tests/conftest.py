"""Suite-wide: no test (nor a process a test starts) writes into the user's ~/.cache/sapo-monitor/spool.

The environment variable is set at import, before any test runs, so subprocesses inherit it too; a test
that wants its own spool passes ``spool_dir=`` or settings, as before.
"""

from __future__ import annotations

import os
import tempfile

_SPOOL_ROOT = tempfile.mkdtemp(prefix="sapo-test-spool-")
os.environ["SAPO_MONITOR_SPOOL_DIR"] = _SPOOL_ROOT
