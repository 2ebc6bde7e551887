"""Per-family model adapters, looked up by the catalogue's ``adapter`` key."""

from __future__ import annotations

import importlib
from types import ModuleType

from models.catalogue import CATALOGUE, CatalogueModel

ADAPTER_MODULES: dict[str, str] = {
    "open_clip": "runners.open_clip_family",
    "mobileclip_s0": "runners.mobileclip_s0",
    "chinese_clip": "runners.chinese_clip",
    "blip2": "runners.blip2",
    "text_embedder": "runners.text_embedder",
}


class FamilyNotImplemented(RuntimeError):
    """The catalogue lists the model but no adapter serves its family yet."""


def adapter_for(model: CatalogueModel) -> ModuleType:
    """The adapter module that imports and serves ``model``."""
    module_name = ADAPTER_MODULES.get(model.adapter)
    if module_name is None:
        raise FamilyNotImplemented(
            f"Model {model.id} (family {model.family}) is in the catalogue but its family is "
            f"not implemented yet in this version; choose one of: "
            + ", ".join(m for m in implemented_models())
        )
    return importlib.import_module(module_name)


def implemented_models() -> list[str]:
    """Ids of the catalogue models whose adapter exists."""
    return [model.id for model in CATALOGUE if model.adapter in ADAPTER_MODULES]
