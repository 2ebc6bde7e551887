"""What the adapters of transformers-run families share: the entry's own serving config and its
image preparer.

A store entry is a Hugging Face directory (:mod:`runners.families.transformers_torch`); the
preparer resizes and crops as the entry's image processor (``preprocessor_config.json``) does,
leaving uint8 pixels (:func:`runners.preparers.geometry.geometry_from_hf_processor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.contract import FamilyAdapter, ImagePreparer, ModelSpec
from runners.entry_files import read_json
from runners.preparers.centre_crop_guard import guarded_preparer
from runners.preparers.geometry import geometry_from_hf_processor

if TYPE_CHECKING:
    from runners.backends.downloads import UpstreamFiles

ENTRY_CONFIG_FILE = "embedding_entry.json"  # what serving needs beyond the model's own files
PROCESSOR_CONFIG_FILE = "preprocessor_config.json"


def read_entry_config(directory: Path) -> dict[str, Any]:
    return read_json(directory / ENTRY_CONFIG_FILE)


class ProcessorFamily(FamilyAdapter):
    """A transformers family whose entries carry an image processor, which the preparer follows."""

    def load_image_preparer(self, directory: Path) -> ImagePreparer:
        return guarded_preparer(geometry_from_hf_processor(read_json(directory / PROCESSOR_CONFIG_FILE)))

    def upstream_files(self, model: ModelSpec) -> list[UpstreamFiles]:
        """The Hub files an import of ``model``'s upstream weights fetches (a snapshot)."""
        from runners.families import transformers_torch

        return transformers_torch.upstream_files(model)
