"""User checkpoints (Keras HDF5, torchvision state dicts) -> Flax variables, strictly.

`python -m cervix_jax.convert.cli` turns a RetinaNet file into a backbone checkpoint for the pyramid
classifier (config.model.backbone_checkpoint).
"""
from cervix_jax.convert.common import ConversionError, strict_assemble
from cervix_jax.convert.keras import resnet50_from_keras_applications, retinanet_from_keras
from cervix_jax.convert.torchvision import retinanet_from_torchvision

__all__ = ["ConversionError", "strict_assemble", "resnet50_from_keras_applications",
           "retinanet_from_keras", "retinanet_from_torchvision"]
