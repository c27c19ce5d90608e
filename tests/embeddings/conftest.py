"""Fixtures for tests/embeddings/: they live in emb_helpers.py, a uniquely named module that the tests import
helpers from (several folders' conftest modules would shadow each other on sys.path)."""

import emb_helpers

globals().update({k: v for k, v in vars(emb_helpers).items() if not k.startswith("__")})
