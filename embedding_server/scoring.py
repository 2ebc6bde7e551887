"""A model's own probability for a query-candidate pair, from the cosine of their vectors.

Contrastive image-text models are trained on ``logit_scale x cosine``: CLIP-style models
(CLIP, MobileCLIP, CN-CLIP) with a softmax over the candidates, which makes the probabilities
of a query's candidates sum to one (zero-shot classification); SigLIP2 with a sigmoid of
``logit_scale x cosine + logit_bias`` per pair, each an independent match probability. The
scale and bias are the checkpoint's, recorded in its store entry at import
(:data:`runners.contract.LOGIT_SCALE`); a model without them (BLIP-2, text embedders, entries
imported before they were recorded) is scored by cosine only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np

from runners.contract import LOGIT_BIAS, LOGIT_SCALE

ScoringKind = Literal["softmax", "sigmoid", "cosine"]


@dataclass(frozen=True)
class Scoring:
    kind: ScoringKind = "cosine"
    logit_scale: float | None = None
    logit_bias: float | None = None

    @classmethod
    def of_entry(cls, metadata: Mapping[str, Any]) -> Scoring:
        """The scoring a store entry's metadata records."""
        scale, bias = metadata.get(LOGIT_SCALE), metadata.get(LOGIT_BIAS)
        if scale is None:
            return COSINE_ONLY
        if bias is None:
            return cls("softmax", float(scale))
        return cls("sigmoid", float(scale), float(bias))

    def probabilities(self, cosines: np.ndarray) -> np.ndarray | None:
        """Each candidate's probability given its cosine with the query; ``None`` when the
        model has no probabilities."""
        if self.kind == "cosine":
            return None
        logits = self.logit_scale * np.asarray(cosines, dtype=np.float64)
        if self.kind == "sigmoid":
            return np.exp(-np.logaddexp(0.0, -(logits + self.logit_bias)))  # sigmoid, never overflowing
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()


COSINE_ONLY = Scoring()
