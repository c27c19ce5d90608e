"""The npe2 contributions besides the widget: sample data and the labels writer."""

from __future__ import annotations

import numpy as np
from gui_helpers import gui

from napari_sam.labels import LabelScheme, to_metadata


def test_manifest_lists_widget_samples_and_writer() -> None:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-sam")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Segment Anything"]
    assert {s.key for s in manifest.contributions.sample_data} == {"nuclei_2d", "nuclei_3d"}
    (writer,) = manifest.contributions.writers
    assert writer.layer_types == ["labels"] and ".tif" in writer.filename_extensions


def test_sample_data_are_nuclei_images() -> None:
    from napari_sam._napari.sample_data import nuclei_2d, nuclei_3d

    (image, meta, kind), = nuclei_2d()
    assert kind == "image" and image.shape == (256, 256) and image.dtype == np.uint16
    (stack, meta3, _), = nuclei_3d()
    assert stack.shape == (32, 256, 256) and meta3["scale"][0] > 1


def test_writer_keeps_the_class_table(tmp_path) -> None:
    import napari
    from napari.layers import Labels

    from napari_sam.io import read_labels

    scheme = LabelScheme(divisor=1000, classes={1: "nucleus", 2: "dividing"})
    data = np.zeros((2, 16, 16), np.uint32)
    data[0, 2:6, 2:6] = 2001
    layer = Labels(data, name="cells", metadata={"napari_sam": to_metadata(scheme)})
    written = napari.save_layers(str(tmp_path / "cells.tif"), [layer], plugin="napari-sam")
    labels, read_scheme, record = read_labels(written[0])
    np.testing.assert_array_equal(labels, data)
    assert read_scheme == scheme
    assert record["layer"] == "cells"


@gui
def test_samples_open_from_the_menu_entry(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sam", "nuclei_2d")
    assert viewer.layers[-1].data.shape == (256, 256)
