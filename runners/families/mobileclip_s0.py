"""The MobileCLIP-S0 family: Apple's ``mobileclip_s0.pt``, which open_clip does not ship
(:mod:`runners.families.mobileclip_s0_torch`, the engine).

Apple's preprocessing is torchvision's bilinear resize of the shorter side to 256 on a PIL
image (PIL's resize), a 256x256 centre crop, and a conversion to 0..1 (done by the runner).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from PIL import Image

from runners.contract import FamilyAdapter, ImagePreparer, ModelSpec
from runners.entry_files import read_json
from runners.preparers.centre_crop_guard import guarded_preparer
from runners.preparers.geometry import ImageGeometry

if TYPE_CHECKING:
    from runners.backends.downloads import UpstreamFiles

CONFIG_FILE = "mobileclip_config.json"  # architecture and preprocessing (written by the engine)


class MobileClipS0Family(FamilyAdapter):
    name = "mobileclip_s0"

    def engine(self) -> ModuleType:
        from runners.families import mobileclip_s0_torch

        return mobileclip_s0_torch

    def load_image_preparer(self, directory: Path) -> ImagePreparer:
        preprocess = read_json(directory / CONFIG_FILE)["preprocess"]
        size, resample = preprocess["image_size"], Image.Resampling[preprocess["interpolation"].upper()]
        return guarded_preparer(ImageGeometry("shortest", resample, "pil", shorter_side=size, crop=(size, size)))

    def upstream_files(self, model: ModelSpec) -> list[UpstreamFiles]:
        """The Hub files an import of ``model``'s upstream weights fetches."""
        return self.engine().upstream_files(model)


MOBILECLIP_S0 = MobileClipS0Family()
