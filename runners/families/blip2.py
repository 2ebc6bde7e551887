"""The BLIP-2 family: transformers ``Blip2ForImageTextRetrieval`` (Salesforce/blip2-itm-vit-g), its
engine in :mod:`runners.families.blip2_torch`."""

from __future__ import annotations

from types import ModuleType

from runners.families.transformers_entry import ProcessorFamily


class Blip2Family(ProcessorFamily):
    name = "blip2"

    def engine(self) -> ModuleType:
        from runners.families import blip2_torch

        return blip2_torch


BLIP2 = Blip2Family()
