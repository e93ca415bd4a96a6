"""Models: ResNet (resnet.py), FPN (fpn.py), paper B's pyramid classifier (pyramid.py), paper A's
patch model (patch.py), and the explainer-facing `ExplainableModel` (parts.py)."""
