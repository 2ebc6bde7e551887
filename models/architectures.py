"""Architecture facts of the catalogue's checkpoints that their families cannot look up offline.

* Hugging Face repositories (the transformers families): ``--random-weights`` builds the
  full-size architecture offline from these, so benchmarks need no download. Each dict holds
  the architecture fields of the repository's ``config.json``; fields equal to the
  transformers defaults of the config class are left out.
* timm image towers (open_clip's MobileCLIP S1/S2/B and SigLIP2): the entrypoint arguments of
  the tiny test variant (``--random-weights --tiny``).

Sources of the configs:

* CN-CLIP: the OFA-Sys hub repositories' ``config.json`` files, which follow the original
  Chinese-CLIP model configs (``cn_clip/clip/model_configs``: ViT-B-16, ViT-L-14 and ViT-H-14
  towers; RoBERTa-wwm-ext-base text towers for B/16 and L/14, RoBERTa-wwm-ext-large for H/14;
  vocabulary 21128);
* BLIP-2 ITM: ``Blip2Config`` as transformers' BLIP-2 conversion script writes it for
  ``blip2-itm-vit-g`` (EVA ViT-g vision defaults at 224 px, Q-Former with text input and the
  BERT vocabulary plus ``[DEC]``, 30523 tokens; 32 queries, 256-d projections);
* Qwen3-Embedding: the Qwen hub repositories' ``config.json`` files (Qwen3 decoders; the 0.6B
  and 4B tie their input and output embeddings, the 8B does not).
"""

from __future__ import annotations

from typing import Any

_ROBERTA_WWM_EXT_BASE = {"vocab_size": 21128, "hidden_size": 768, "intermediate_size": 3072,
                         "num_hidden_layers": 12, "num_attention_heads": 12}
_ROBERTA_WWM_EXT_LARGE = {"vocab_size": 21128, "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16}


def _cn_clip(text: dict[str, int], width: int, layers: int, heads: int, patch: int,
             projection: int) -> dict[str, Any]:
    return {
        "model_type": "chinese_clip",
        "projection_dim": projection,
        "text_config": dict(text),
        "vision_config": {"hidden_size": width, "intermediate_size": 4 * width,
                          "num_hidden_layers": layers, "num_attention_heads": heads,
                          "image_size": 224, "patch_size": patch, "projection_dim": projection},
    }


def _qwen3(vocab: int, width: int, mlp: int, layers: int, heads: int, positions: int,
           tied: bool) -> dict[str, Any]:
    return {
        "model_type": "qwen3", "vocab_size": vocab, "hidden_size": width, "intermediate_size": mlp,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 8,
        "head_dim": 128, "max_position_embeddings": positions, "max_window_layers": layers,
        "rope_theta": 1000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied,
        "use_sliding_window": False, "sliding_window": None,
        "bos_token_id": 151643, "eos_token_id": 151643,
    }


CN_CLIP_VIT_B_16 = _cn_clip(_ROBERTA_WWM_EXT_BASE, 768, 12, 12, 16, 512)
CN_CLIP_VIT_L_14 = _cn_clip(_ROBERTA_WWM_EXT_BASE, 1024, 24, 16, 14, 768)
CN_CLIP_VIT_H_14 = _cn_clip(_ROBERTA_WWM_EXT_LARGE, 1280, 32, 16, 14, 1024)
BLIP2_ITM_VIT_G = {
    "model_type": "blip-2",
    "num_query_tokens": 32,
    "image_text_hidden_size": 256,
    "vision_config": {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14,
                      "qkv_bias": True, "layer_norm_eps": 1e-6},
    "qformer_config": {"vocab_size": 30523, "hidden_size": 768, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "intermediate_size": 3072,
                       "cross_attention_frequency": 2, "max_position_embeddings": 512,
                       "use_qformer_text_input": True},
}
QWEN3_EMBEDDING_0_6B = _qwen3(151669, 1024, 3072, 28, 16, 32768, tied=True)
QWEN3_EMBEDDING_4B = _qwen3(151665, 2560, 9728, 36, 32, 40960, tied=True)
QWEN3_EMBEDDING_8B = _qwen3(151665, 4096, 12288, 36, 32, 40960, tied=False)

# Tiny variants of the timm image towers: FastViT stages keep their kinds (RepMixer x3, then
# attention) with one block each and a quarter of the width; the ViTs keep their width (it is
# the SigLIP output dimension and the width of MobileCLIP-B's conv stem) with one block and a
# narrow MLP.
TINY_FASTVIT_MCI1 = {"layers": (1, 1, 1, 1), "embed_dims": (16, 32, 64, 128)}
TINY_FASTVIT_MCI2 = {"layers": (1, 1, 1, 1), "embed_dims": (20, 40, 80, 160)}
TINY_TIMM_VIT = {"depth": 1, "mlp_ratio": 0.25}
