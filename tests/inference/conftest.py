"""What the inference tests share: the session's tiny run."""

import pytest


@pytest.fixture
def run(tiny_run):
    """(run folder, its image folder): see tests/conftest.py's ``tiny_run``."""
    return tiny_run
