from __future__ import annotations

import pytest

from tests.client.receiver import Receiver


@pytest.fixture
def receiver():
    rx = Receiver().start()
    yield rx
    rx.stop()
