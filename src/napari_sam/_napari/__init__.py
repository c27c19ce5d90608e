"""The napari plugin: the only part of napari-sam that imports napari or Qt.

Modules
-------
widget         `SamWidget`, the "Segment Anything" dock widget (composition, scripting API)
workflow       what the widget does: decode on prompt change, commit, refine, propagate, ...
controls       the Qt panels and layer pickers (layout only)
class_table    the label scheme and class table editor
labels_target  the target Labels layer and its scheme (metadata, colours)
model_picker   model choice, loading/downloading in a worker
prompts        prompt layers (points with polarity, boxes, preview) and their pure helpers
commit         writing masks into a Labels layer through its undoable editing path
session        the adapter between the widget and the engine (model, embeddings, segmenter)
tasks          thread workers with progress, cancel and stale-result protection
sample_data, writer   npe2 contributions (see ../napari.yaml)
"""
