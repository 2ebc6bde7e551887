"""The open_clip family: every model that open_clip runs (CLIP, MobileCLIP S1, S2, B and SigLIP2).

A store entry is an open_clip "local-dir" (:mod:`runners.families.open_clip_torch`, the
engine). Its image preparer is open_clip's inference transform up to tensor conversion, from
the entry's ``preprocess_cfg`` (:func:`runners.preparers.geometry.geometry_from_open_clip`).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from runners.contract import FamilyAdapter, ImagePreparer, ModelSpec
from runners.entry_files import read_json
from runners.preparers.centre_crop_guard import guarded_preparer
from runners.preparers.geometry import geometry_from_open_clip

if TYPE_CHECKING:
    from runners.backends.downloads import UpstreamFiles

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


class OpenClipFamily(FamilyAdapter):
    name = "open_clip"

    def engine(self) -> ModuleType:
        from runners.families import open_clip_torch

        return open_clip_torch

    def load_image_preparer(self, directory: Path) -> ImagePreparer:
        return guarded_preparer(geometry_from_open_clip(read_json(directory / CONFIG_FILE)["preprocess_cfg"]))

    def upstream_files(self, model: ModelSpec) -> list[UpstreamFiles]:
        """The Hub files an import of ``model``'s upstream weights fetches."""
        return self.engine().upstream_files(model)


OPEN_CLIP = OpenClipFamily()
