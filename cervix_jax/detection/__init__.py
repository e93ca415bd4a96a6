"""RetinaNet detection maths (pure functions): anchors, box IoU and coding, matching and targets, focal
loss, host-side NMS and detections, image-level scores, and COCO box AP. The model is
`models/retinanet.py`."""
from cervix_jax.detection.anchors import anchors_for_shape, feature_shapes, num_anchors
from cervix_jax.detection.boxes import (box_area, box_iou, clip_boxes, decode_boxes, encode_boxes,
                                        mask_to_box)
from cervix_jax.detection.coco import coco_ap
from cervix_jax.detection.losses import focal_loss, retinanet_loss, smooth_l1
from cervix_jax.detection.matching import detection_targets, match_anchors
from cervix_jax.detection.postprocess import (SCORE_RULES, batched_nms, detections_from_outputs,
                                              image_scores, nms)

__all__ = ["anchors_for_shape", "feature_shapes", "num_anchors", "box_area", "box_iou", "clip_boxes",
           "decode_boxes", "encode_boxes", "mask_to_box", "coco_ap", "focal_loss", "retinanet_loss",
           "smooth_l1", "detection_targets", "match_anchors", "SCORE_RULES", "batched_nms",
           "detections_from_outputs", "image_scores", "nms"]
