"""Models: backbones (registry), the view/preprocessing layer, heads and the Zoobot model."""
from zoobot_tf.models.backbones import build_backbone, list_backbones
from zoobot_tf.models.heads import DirichletConcentration
from zoobot_tf.models.preprocessing import GalaxyView
from zoobot_tf.models.zoobot import Zoobot, define_model, dtype_policy

__all__ = ["Zoobot", "define_model", "build_backbone", "list_backbones", "GalaxyView", "DirichletConcentration",
           "dtype_policy"]
