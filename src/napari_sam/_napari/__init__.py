"""The napari plugin: the only part of napari-sam that imports napari or Qt.

Modules
-------
widget      `SamWidget`, the "Segment Anything" dock widget (composition only)
controls    the Qt panels: model, image/target pickers, status, actions
class_table the class table editor (add, rename, colour)
prompts     prompt layers (points with polarity, boxes, preview) and their pure helpers
commit      writing masks into a Labels layer through its undoable editing path
session     the adapter between the widget and the engine (model, embeddings, segmenter)
tasks       thread workers with progress, cancel and stale-result protection
sample_data, writer   npe2 contributions
"""
