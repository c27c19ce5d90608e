"""Fixtures for tests/training/: they live in train_helpers.py, a uniquely named module that the tests import
helpers from (several folders' conftest modules would shadow each other on sys.path)."""

import train_helpers

globals().update({k: v for k, v in vars(train_helpers).items() if not k.startswith("__")})
