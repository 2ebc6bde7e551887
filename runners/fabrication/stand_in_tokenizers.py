"""Small tokenizers of the upstream kinds, built offline for random-weight entries: the
transformers families' (WordPiece, Qwen's byte-level BPE) and SigLIP2's Gemma tokenizer, which
its open_clip config names.

A random-weight entry (tests, benchmarks) cannot download its model's tokenizer. These
stand-ins have the upstream tokenizer's class, algorithm, normalisation, special tokens and
padding side, with a vocabulary of a few hundred entries, so serving runs the same code path;
the entry's metadata records ``tokenizer: stand-in``.
"""

from __future__ import annotations

import json
import string

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizer, GemmaTokenizer, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_WORDS = (
    "a an the of to and in on at with for is are was this that it photo picture image video "
    "cat cats kitten dog dogs bird car street city night sky sea river mountain tree flower "
    "man woman child people red green blue white black small big two three quarterly "
    "earnings report market query instruct given search retrieve passages answer"
).split()
# Frequent Chinese characters (WordPiece Chinese vocabularies hold single characters).
_CJK = "一只的是不了人我在有他这中大来上国个到说们为子和你地出道也时年猫狗照片图像小可爱天空城市夜景山水花鸟车街"
_BPE_CORPUS = (
    "a photo of a cat", "a picture of a kitten", "quarterly earnings report",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
    "The quick brown fox jumps over the lazy dog. 0123456789", "一只猫的照片 城市夜景",
)
_BPE_VOCAB_SIZE = 512
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def wordpiece_tokenizer() -> BertTokenizer:
    """A BERT WordPiece tokenizer (lower-casing, Chinese characters split one by one), with
    ``[PAD]`` = 0 as in the BERT vocabularies of CN-CLIP and BLIP-2."""
    pieces = [*string.ascii_lowercase, *string.digits, *string.punctuation]
    tokens = [*_BERT_SPECIALS, *pieces, *(f"##{c}" for c in string.ascii_lowercase + string.digits),
              *_WORDS, *_CJK]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def byte_level_bpe_tokenizer(padding_side: str = "left") -> Qwen2Tokenizer:
    """A Qwen2 byte-level BPE tokenizer trained on a few sentences.

    Like the Qwen3-Embedding tokenizer: Qwen2's pre-tokenisation regex and NFC normaliser,
    ``<|endoftext|>`` as EOS, padding and unknown token, appended to every sequence by the
    post-processor (the token that last-token pooling reads).
    """
    trainer_model = Tokenizer(models.BPE())
    trainer_model.normalizer = normalizers.NFC()
    trainer_model.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=_BPE_VOCAB_SIZE, special_tokens=list(QWEN_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    trainer_model.train_from_iterator(_BPE_CORPUS, trainer)
    trained = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(merge) for merge in trained["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=trained["vocab"], merges=merges, padding_side=padding_side)
    eos = tokenizer.convert_tokens_to_ids(QWEN_SPECIALS[0])
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {QWEN_SPECIALS[0]}", pair=f"$A {QWEN_SPECIALS[0]} $B {QWEN_SPECIALS[0]}",
        special_tokens=[(QWEN_SPECIALS[0], eos)],
    )
    return tokenizer


# Gemma's special tokens, at Gemma's ids.
_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")


def _gemma_vocab() -> dict[str, int]:
    """Gemma's specials, its 256 byte-fallback tokens, then the printable ASCII characters."""
    tokens = [*_GEMMA_SPECIALS, *(f"<0x{byte:02X}>" for byte in range(256)), "\u2581"]
    tokens += [char for char in string.printable if not char.isspace()]
    return {token: index for index, token in enumerate(tokens)}


GEMMA_STAND_IN_VOCAB_SIZE = len(_gemma_vocab())


def gemma_tokenizer() -> GemmaTokenizer:
    """A small tokenizer of Gemma's kind, built offline for random-weight entries.

    Same class, BPE model with byte fallback, normaliser, specials and special-token handling
    as the SigLIP2 tokenizer (no BOS, EOS appended, right padding with ``<pad>`` = 0); its
    vocabulary is only characters and bytes (no merges), :data:`GEMMA_STAND_IN_VOCAB_SIZE` tokens.
    """
    return GemmaTokenizer(vocab=_gemma_vocab(), merges=[], add_bos_token=False,
                          add_eos_token=True, padding_side="right")
