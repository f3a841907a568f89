"""STA (spatio-temporal attention), 3D ResNet/ResNeXt backbones and the MARS distillation loss.

``build_model(name, ...)`` builds any registered network (``list_models()``), with attention where ``sta=`` says;
``load_pretrained`` reads MARS / 3D-ResNets checkpoints and this project's own.
"""
from mars_sta import c3d, p3d, resnet, resnext, tiny  # noqa: F401 - importing registers the architectures
from mars_sta.losses import MARSLoss, MARSLossParts
from mars_sta.pretrained import CheckpointError, LoadReport, load_pretrained
from mars_sta.registry import build_model, list_models, model_entry, register_model
from mars_sta.spec import AttentionSpec, StageAttention, parse_sta
from mars_sta.sta import IDENTITY_GATE, STA, Attention, ChannelAttention, attention_modules

__all__ = [
    "IDENTITY_GATE",
    "STA",
    "Attention",
    "AttentionSpec",
    "ChannelAttention",
    "CheckpointError",
    "LoadReport",
    "MARSLoss",
    "MARSLossParts",
    "StageAttention",
    "attention_modules",
    "build_model",
    "list_models",
    "load_pretrained",
    "model_entry",
    "parse_sta",
    "register_model",
]
