"""Fixtures for tests/_napari/: they live in gui_helpers.py, a uniquely named module that the tests import
helpers from (several folders' conftest modules would shadow each other on sys.path)."""

import gui_helpers

globals().update({k: v for k, v in vars(gui_helpers).items() if not k.startswith("__")})
