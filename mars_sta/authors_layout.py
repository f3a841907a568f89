"""The checkpoint layout of the STA-MARS code published with the paper, and this project's, converted both ways.

The authors' module (``falayer``) is a block's ``fa`` child with parts ``conv3d_1_fa`` (Conv3d c → 1, kernel
(1, s, s)), ``deconv3d_fa`` (ConvTranspose3d 1 → 1, kernel (3, 1, 1)), ``bn1_fa`` (BatchNorm3d(1)), ``conv3d_2_fa``
(Conv3d 1 → c, kernel (3, 1, 1)) and ``bn2_fa`` (BatchNorm3d(c)). Here the same module is ``STA(batch_norm=True)``,
the block's ``sta`` child, whose Deconv and Conv2 are the equivalent 1D convolutions of length 3: a (3, 1, 1)
kernel applied to a (N, 1, L, 1, 1) tensor computes exactly what a length-3 kernel computes on (N, 1, L), so only
the weight shapes differ, by two trailing 1s.
"""
from __future__ import annotations

import re

import torch

# authors' part name → this project's STA attribute
PARTS = {"conv3d_1_fa": "conv1", "deconv3d_fa": "deconv", "bn1_fa": "bn1", "conv3d_2_fa": "conv2", "bn2_fa": "bn2"}
_AUTHORS_KEY = re.compile(rf"^(?P<block>.+)\.fa\.(?P<part>{'|'.join(PARTS)})\.(?P<leaf>\w+)$")
_PROJECT_KEY = re.compile(rf"^(?P<block>.+)\.sta\.(?P<part>{'|'.join(PARTS.values())})\.(?P<leaf>\w+)$")


def has_authors_keys(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds any attention module in the authors' ``fa`` layout."""
    return any(_AUTHORS_KEY.match(key) for key in state)


def from_authors_layout(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``<block>.fa.<part>.*`` keys to ``<block>.sta.<attr>.*`` and give their weights ``target``'s shapes.

    Keys of other layers pass unchanged; a renamed tensor whose element count differs from the target's keeps its
    shape, so that ``load_pretrained`` reports the mismatch by name.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _AUTHORS_KEY.match(key)
        if match:
            key = f"{match['block']}.sta.{PARTS[match['part']]}.{match['leaf']}"
            wanted = target.get(key)
            if wanted is not None and wanted.shape != value.shape and wanted.numel() == value.numel():
                value = value.reshape(wanted.shape)
        converted[key] = value
    return converted


def to_authors_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse for the modules that have the authors' BatchNorms; other keys (plain STA included) pass unchanged.

    1D kernels (Deconv and Conv2 weights, three dimensions) become the authors' (3, 1, 1) kernels.
    """
    authors_blocks = {match["block"] for key in state if (match := _PROJECT_KEY.match(key)) and match["part"] == "bn1"}
    inverse = {mine: theirs for theirs, mine in PARTS.items()}
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _PROJECT_KEY.match(key)
        if match and match["block"] in authors_blocks:
            key = f"{match['block']}.fa.{inverse[match['part']]}.{match['leaf']}"
            if match["leaf"] == "weight" and value.dim() == 3:
                value = value.reshape(*value.shape, 1, 1)
        converted[key] = value
    return converted
