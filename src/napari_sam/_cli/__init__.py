"""Subcommands of the ``napari-sam`` command line (one module each; see :mod:`napari_sam.cli`)."""
