"""Fixtures for tests/segment/: they live in seg_helpers.py, a uniquely named module that the tests import
helpers from (several folders' conftest modules would shadow each other on sys.path)."""

import seg_helpers

globals().update({k: v for k, v in vars(seg_helpers).items() if not k.startswith("__")})
