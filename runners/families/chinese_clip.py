"""The CN-CLIP family: transformers ``ChineseCLIPModel`` (OFA-Sys/chinese-clip-vit-*), its engine
in :mod:`runners.families.chinese_clip_torch`."""

from __future__ import annotations

from types import ModuleType

from runners.families.transformers_entry import ProcessorFamily


class ChineseClipFamily(ProcessorFamily):
    name = "chinese_clip"

    def engine(self) -> ModuleType:
        from runners.families import chinese_clip_torch

        return chinese_clip_torch


CHINESE_CLIP = ChineseClipFamily()
