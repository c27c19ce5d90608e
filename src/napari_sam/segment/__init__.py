"""Stack-level segmentation: prompts on any slice, propagation through z, segment everything.

The engine is :class:`Segmenter`; the helpers below are its parts, usable on their own
(coordinates in napari order: (row, col), (z, row, col); boxes (min_row, min_col, max_row,
max_col)).
"""

from napari_sam.segment._util import SegmentationCancelled
from napari_sam.segment.amg import box_iou, box_nms, crop_boxes, masks_to_boxes, point_grid, stability_score
from napari_sam.segment.everything import EverythingParams, MaskRecord, everything_params, generate_masks
from napari_sam.segment.instances import paint_records, write_instances
from napari_sam.segment.linking import iou_table, link_slices, match_labels
from napari_sam.segment.masks import (
    bounding_box,
    enlarge_box,
    fill_holes,
    interior_points,
    remove_small_islands,
    remove_small_regions,
)
from napari_sam.segment.prompts import group_by_slice, parse_box, parse_boxes, split_points
from napari_sam.segment.propagation import PropagationReport, SliceResult, StopCriteria, propagate_positions
from napari_sam.segment.segmenter import Segmenter

__all__ = [
    "EverythingParams",
    "MaskRecord",
    "PropagationReport",
    "SegmentationCancelled",
    "Segmenter",
    "everything_params",
    "SliceResult",
    "StopCriteria",
    "bounding_box",
    "box_iou",
    "box_nms",
    "crop_boxes",
    "enlarge_box",
    "fill_holes",
    "generate_masks",
    "group_by_slice",
    "interior_points",
    "iou_table",
    "link_slices",
    "masks_to_boxes",
    "match_labels",
    "paint_records",
    "parse_box",
    "parse_boxes",
    "point_grid",
    "propagate_positions",
    "remove_small_islands",
    "remove_small_regions",
    "split_points",
    "stability_score",
    "write_instances",
]
