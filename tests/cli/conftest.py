"""The ``cli`` and ``cli_json`` fixtures are in tests/conftest.py, shared by every folder."""
