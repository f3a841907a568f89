"""R-C3D's network (Xu, Das, Saenko, ICCV 2017): a shared 3D backbone, a proposal subnet, temporal RoI pooling
and a classification subnet, in plain torch.

The backbone is C3D (R-C3D's, to conv5b: 8 frames per step) or any registered 3D ResNet (16 frames per step at
its last stage), with STA where its ``sta`` spec says; ``backbone_map`` runs it over a long buffer of frames up to
one stage and keeps time and space::

    buffer (N, C_in, T, H, W)
      │  stem + stages up to ``layer`` (C3D: its convs and pools, without the stage's own pool)
      ▼  feature map (N, C, L, h, w)                     L = T / temporal stride of the backbone
      │  proposal subnet: two Conv3d 3×3×3 (space stride 2) + ReLU, max over (h, w), two 1×1 convs
      ▼  anchor scores (N, L·A, 2), anchor offsets (N, L·A, 2)      A = number of anchor scales
      │  proposals [start, end) in feature steps  →  temporal RoI pooling to (time, h', w') bins
      ▼  pooled (R, C, 4, 2, 2)
      │  classification subnet: a fully connected layer
      ▼  class logits (R, K + 1), per-class offsets (R, K + 1, 2)

Segments are ``[start, end)`` in feature steps. Offsets are R-C3D's (as Faster R-CNN's boxes): centre shift over
the anchor's length and log of the length ratio. The network knows nothing of files, labels or NMS: those live in
``pipelines.detection.rc3d``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn


POOL = "pool"  # the last stage's map averaged over space: the pooled features, kept in time


def backbone_map(model: nn.Module, clip: torch.Tensor, layer: str) -> torch.Tensor:
    """The feature map (N, C, L, h, w) of a registered 3D ResNet or C3D after stage ``layer`` (no fc); ``"pool"``
    is the last stage averaged over space (h = w = 1), the features the classifier reads before time is pooled."""
    names = getattr(model, "stage_names", None)
    if names is None or layer not in (*names, POOL):
        raise ValueError(f"layer {layer!r} is not a stage of this backbone (stages: {names}, or {POOL!r})")
    stage = names[-1] if layer == POOL else layer
    stage_map = getattr(model, "stage_map", None)
    if stage_map is not None:
        x = stage_map(clip, stage)
    else:
        x = clip
        for name in ("conv1", "bn1", "relu", "maxpool", *names[:names.index(stage) + 1]):
            x = getattr(model, name)(x)
    return x.mean(dim=(3, 4), keepdim=True) if layer == POOL else x


def map_geometry(model: nn.Module, layer: str) -> tuple[int, int]:
    """Channels and input frames per step of the map at ``layer`` (C3D's conv5: 512 and 8, a 3D ResNet's last
    stage: 16 frames), measured on a probe of 64 frames: exact for every registered network. The probe is 16²
    pixels, or the size the network was built for where attention modules (tied to it) sit in it."""
    parameter = next(model.parameters())
    attention = any("sta" in name.split(".") for name, _ in model.named_modules())
    size = getattr(model, "build_kwargs", {}).get("sample_size", 16) if attention else 16
    probe = torch.zeros(1, getattr(model, "conv1").in_channels, 64, size, size, dtype=parameter.dtype,
                        device=parameter.device)
    was_training = model.training
    with torch.no_grad():
        found = backbone_map(model.eval(), probe, layer)
    model.train(was_training)
    return int(found.shape[1]), 64 // found.shape[2]


def stage_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """The backbone's top-level modules in input order, grouped by stage: a 3D ResNet's stem first."""
    groups = getattr(model, "stage_modules", None)
    if groups is not None:
        return list(groups.values())
    return [("conv1", "bn1"), *((name,) for name in getattr(model, "stage_names"))]


def freeze_before(model: nn.Module, stage: str) -> None:
    """Keep the weights of everything before ``stage`` (a 3D ResNet's stem included) as loaded: no gradient, as
    R-C3D's port fixes C3D's layers before pool2 and its ResNets' stem. Attention modules, new, stay trainable."""
    stages = list(getattr(model, "stage_names"))
    groups = stage_groups(model)
    for group in groups[:len(groups) - len(stages) + stages.index(stage)]:
        for name in group:
            for key, parameter in getattr(model, name).named_parameters():
                if "sta" not in key.split("."):
                    parameter.requires_grad_(False)


def fixed_batchnorm(model: nn.Module) -> list[nn.Module]:
    """The backbone's BatchNorm layers (attention modules' excepted: they are new) with their scale and shift fixed,
    as the port's ``set_bn_fix``; training puts them back in eval mode after each ``train()``."""
    fixed: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and "sta" not in name.split("."):
            module.requires_grad_(False)
            fixed.append(module)
    return fixed


def make_anchors(length: int, scales: Sequence[float]) -> torch.Tensor:
    """Anchors (length · A, 2) as [start, end): at every feature step t one per scale s, centred at t + 0.5.

    Step-major order: anchor ``t · A + a`` is scale ``a`` at step ``t``, the order the proposal subnet's outputs
    are flattened in.
    """
    centres = torch.arange(length, dtype=torch.float32)[:, None] + 0.5
    half = torch.as_tensor(scales, dtype=torch.float32)[None, :] / 2
    return torch.stack([centres - half, centres + half], dim=-1).reshape(-1, 2)


def encode_segments(segments: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Offsets (dc, dl) that move ``anchors`` onto ``segments``: dc = Δcentre / length, dl = log(length ratio)."""
    anchor_length = anchors[:, 1] - anchors[:, 0]
    length = segments[:, 1] - segments[:, 0]
    centre_shift = (segments.sum(1) - anchors.sum(1)) / 2
    return torch.stack([centre_shift / anchor_length, torch.log(length / anchor_length)], dim=1)


def decode_segments(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The inverse of ``encode_segments``: segments (n, 2) from anchors and offsets (n, 2)."""
    anchor_length = anchors[:, 1] - anchors[:, 0]
    centre = anchors.sum(1) / 2 + offsets[:, 0] * anchor_length
    half = anchor_length * torch.exp(offsets[:, 1].clamp(max=10.0)) / 2
    return torch.stack([centre - half, centre + half], dim=1)


def temporal_roi_pool(feature_map: torch.Tensor, rois: torch.Tensor, output: Sequence[int]) -> torch.Tensor:
    """Max-pool each segment of one buffer's map (C, L, h, w) into ``output`` = (time, h', w') bins.

    Space is max-pooled to (h', w') once for the whole map; then time bin b of a segment [s, e) takes the steps
    from floor(s + b·(e − s)/bins) to ceil(s + (b + 1)·(e − s)/bins), at least one, clipped to the map (as
    R-C3D's RoI pooling rounds bins outward). Returns (R, C, time, h', w'); gradients reach the maxima.
    """
    bins, height, width = output
    length = feature_map.shape[1]
    spatial = nn.functional.adaptive_max_pool3d(feature_map, (length, height, width))  # (C, L, h', w')
    fraction = torch.arange(bins + 1, dtype=rois.dtype, device=rois.device) / bins
    edges = rois[:, :1] + fraction[None, :] * (rois[:, 1:] - rois[:, :1])  # (R, bins + 1)
    first = edges[:, :-1].floor().clamp(0, length - 1).long()
    last = torch.maximum(edges[:, 1:].ceil().long(), first + 1).clamp(max=length)
    widest = int((last - first).max()) if len(rois) else 1
    # each bin reads its own steps, the widest bin's count of them, repeating its last step where it is narrower
    steps = torch.minimum(first[..., None] + torch.arange(widest, device=rois.device), last[..., None] - 1)
    return spatial[:, steps].amax(dim=3).permute(1, 0, 2, 3, 4)  # (C, R, bins, k, h', w') -> (R, C, bins, h', w')


class ProposalSubnet(nn.Module):
    """R-C3D's proposal subnet as its PyTorch port has it: two 3×3×3 convs (the second and first halving space)
    with ReLU, max over space, then per step and anchor scale an action/background score pair and a (dc, dl)
    offset pair.

    Args:
        channels: channels of the backbone map.
        hidden: channels of the 3×3×3 convs (R-C3D: 512).
        anchors: anchor scales per step.
    """

    def __init__(self, channels: int, hidden: int, anchors: int) -> None:
        super().__init__()
        self.anchors = anchors
        self.body = nn.Sequential(nn.Conv3d(channels, hidden, 3, stride=(1, 2, 2), padding=1), nn.ReLU(inplace=True),
                                  nn.Conv3d(hidden, hidden, 3, stride=(1, 2, 2), padding=1), nn.ReLU(inplace=True))
        self.score = nn.Conv1d(hidden, 2 * anchors, 1)
        self.offset = nn.Conv1d(hidden, 2 * anchors, 1)

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, L, h, w) → scores (N, L·A, 2) and offsets (N, L·A, 2), step-major as ``make_anchors``."""
        x = self.body(feature_map).amax(dim=(3, 4))  # (N, hidden, L)
        n, _, length = x.shape
        scores = self.score(x).view(n, self.anchors, 2, length).permute(0, 3, 1, 2).reshape(n, -1, 2)
        offsets = self.offset(x).view(n, self.anchors, 2, length).permute(0, 3, 1, 2).reshape(n, -1, 2)
        return scores, offsets


class ClassificationSubnet(nn.Module):
    """R-C3D's classification subnet as its PyTorch port has it: one fully connected layer (C3D's fc6) with ReLU
    and dropout, then K + 1 class logits and per-class offsets.

    Args:
        features: size of one flattened pooled RoI (C · time · h' · w').
        hidden: width of the fully connected layer (R-C3D: 4096).
        num_classes: K + 1, background included.
        dropout: dropout after the hidden layer (R-C3D: 0.5).
    """

    def __init__(self, features: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.score = nn.Linear(hidden, num_classes)
        self.offset = nn.Linear(hidden, 2 * num_classes)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, C, time, h', w') → logits (R, K + 1) and offsets (R, K + 1, 2)."""
        x = self.body(pooled.flatten(1))
        return self.score(x), self.offset(x).view(-1, self.num_classes, 2)


class RC3DHeads(nn.Module):
    """Everything of R-C3D above the shared backbone map: the proposal and the classification subnet.

    Args:
        channels: channels of the backbone map the heads read.
        num_classes: K + 1, background included.
        anchor_scales: anchor lengths in feature steps (R-C3D on THUMOS'14: 2 to 16 steps of 8 frames).
        pool: temporal RoI pooling output (time, h', w'); R-C3D: (4, 2, 2).
        proposal_hidden: channels of the proposal subnet's convs.
        hidden: width of the classification subnet's fully connected layer.
        dropout: dropout in the classification subnet.
    """

    def __init__(self, *, channels: int, num_classes: int, anchor_scales: Sequence[float],
                 pool: Sequence[int] = (4, 2, 2), proposal_hidden: int = 512, hidden: int = 4096,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.anchor_scales = tuple(float(s) for s in anchor_scales)
        self.pool = tuple(int(p) for p in pool)
        self.proposal = ProposalSubnet(channels, proposal_hidden, len(self.anchor_scales))
        pooled = channels * self.pool[0] * self.pool[1] * self.pool[2]
        self.classification = ClassificationSubnet(pooled, hidden, num_classes, dropout)

    def start_from_fc6(self, fc6: nn.Linear) -> bool:
        """Copy C3D's ``fc6`` into the classification subnet's fully connected layer, as the port's RoI head is
        C3D's fc6 (8192 = 512 × 4 × 2 × 2 pooled inputs, 4096 outputs); False, fresh weights kept, where the shapes
        differ."""
        layer = cast(nn.Linear, self.classification.body[0])
        if layer.weight.shape != fc6.weight.shape:
            return False
        with torch.no_grad():
            layer.weight.copy_(fc6.weight)
            layer.bias.copy_(fc6.bias)
        return True

    def anchors(self, length: int) -> torch.Tensor:
        return make_anchors(length, self.anchor_scales)

    def classify(self, feature_map: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and offsets of ``rois`` (R, 2) on one buffer's map (C, L, h, w)."""
        return self.classification(temporal_roi_pool(feature_map, rois, self.pool))
