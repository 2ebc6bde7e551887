"""From a validated request to vectors: model check, media fetch and decode, encoder calls.

The one path to vectors of every API (the documented ``POST /embeddings``, the
OpenAI-compatible ``/v1/embeddings``, ``POST /rank``, ``POST /embeddings/frames``), with one
set of limits: each names the items of its own request (``text[3]``, ``input[3]``,
``candidates[3]``) through a :data:`NameOf`.

Blocking work (base64 and image decoding, resizing) runs in worker threads so the event
loop stays free; only compact uint8 pixel arrays and strings go to the Encoder.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np

from embedding_server.encoder.failed_rows import check_embedded
from embedding_server.encoder.protocol import EncoderClient
from embedding_server.http_api.encoding import Embedding, encode_embedding
from embedding_server.http_api.errors import ApiError, InvalidInput, ModelMismatch
from embedding_server.http_api.metrics import ITEMS_EMBEDDED, PREPROCESS_SECONDS
from embedding_server.http_api.schemas import (
    VIDEO_INPUTS,
    EmbeddingRequest,
    FramesRequest,
    ImageBase64Input,
    ImageUrlInput,
    ModelInfo,
    TextInput,
    VideoInput,
)
from embedding_server.media.blocking import all_or_error
from embedding_server.media.images import decode_base64, decode_image
from embedding_server.media.remote import fetch_url
from embedding_server.media.video_inputs import FrameVectors, NameOf, VideoEmbedder
from embedding_server.scoring import COSINE_ONLY, Scoring
from embedding_server.settings import Settings
from models.catalogue import CATALOGUE, CatalogueModel
from runners.contract import ImagePreparer


ImageInput = ImageUrlInput | ImageBase64Input


def names_in(field: str, flat: bool) -> NameOf:
    """Names of the items of request field ``field``: ``field`` itself when it holds one item
    (``flat``), ``field[i]`` when it holds a list."""
    return (lambda _: field) if flat else (lambda index: f"{field}[{index}]")


def unsupported_modality(kind: str) -> ApiError:
    return ApiError(400, f"{kind} inputs are not supported by the active model")


def unsupported_instruction(model: CatalogueModel) -> ApiError:
    families = dict.fromkeys(m.family for m in CATALOGUE if m.instruction_template is not None)
    return ApiError(400, f"instruction is only supported by {', '.join(families)} models; "
                         f"the active model {model.id} embeds texts as given")


def embedded(modality: str, vectors: np.ndarray) -> np.ndarray:
    """``vectors``, counted as items of ``modality`` (text, image, video_frame) embedded."""
    ITEMS_EMBEDDED.labels(modality=modality).inc(len(vectors))
    return vectors


def _retrieve_outcome(call: asyncio.Future) -> None:
    """Marks a shared call's error as seen even when every caller went away before it ended."""
    if not call.cancelled():
        call.exception()


class EmbeddingPipeline:
    """Serves the embedding and ranking routes and the model-status routes for one loaded model."""

    def __init__(self, model: CatalogueModel, encoder: EncoderClient, preparer: ImagePreparer | None,
                 settings: Settings, scoring: Scoring = COSINE_ONLY, created: int = 0) -> None:
        """``scoring`` and ``created`` (Unix time) are the store entry's: how ``POST /rank``
        turns cosines into probabilities, and when the model was imported."""
        self.model = model
        self.scoring = scoring
        self.created = created
        self._encoder = encoder
        self._preparer = preparer
        self._settings = settings
        self._info: ModelInfo | None = None
        self._info_call: asyncio.Task[ModelInfo] | None = None
        self._video = VideoEmbedder(self._encode_named, self._image_pixels, settings)
        # Only the first min(context, cap) tokens are embedded; characters beyond what holds
        # them are cut here, before they cost tokenising or sending (see text_chars_per_token).
        self._text_chars = min(model.context_length, settings.text_token_cap) * settings.text_chars_per_token

    async def model_info(self) -> ModelInfo:
        """The Encoder's report; 503 ``Model is not initialized`` until it answers.

        Until the first answer, concurrent requests share one call: a burst at start-up would
        otherwise open a connection to the Encoder per request. The call is shielded, so a
        client that goes away does not cancel it for the others."""
        if self._info is None:
            if self._info_call is None or self._info_call.done():
                self._info_call = asyncio.ensure_future(self._encoder.info())
                self._info_call.add_done_callback(_retrieve_outcome)
            self._info = await asyncio.shield(self._info_call)
        return self._info

    async def check_health(self) -> None:
        """Ask the Encoder now (not the cache): it may have died since it first answered."""
        self._info = await self._encoder.info()

    async def embed(self, request: EmbeddingRequest) -> Embedding:
        """``POST /embeddings``."""
        await self._ready(request.model)
        item = request.input
        if isinstance(item, TextInput):
            flat = isinstance(item.text, str)
            texts = [item.text] if flat else item.text
            vectors = await self.text_vectors(texts, names_in("text", flat), item.instruction)
        elif isinstance(item, (ImageUrlInput, ImageBase64Input)):
            flat = True
            vectors = embedded("image", await self._encode_named(await self._image_pixels(item),
                                                                 names_in("image", flat)))
        elif isinstance(item, VIDEO_INPUTS):
            flat = False
            vectors = (await self._video_frames(item)).vectors
        else:  # the request schema admits no other type
            raise InvalidInput(f"unsupported input type {item.type!r}")
        return encode_embedding(vectors, flat=flat, encoding_format=request.encoding_format)

    async def embed_frames(self, request: FramesRequest) -> FrameVectors:
        """``POST /embeddings/frames``: the vectors ``POST /embeddings`` gives for the same
        video input, and the frame number and time of each."""
        await self._ready(request.model)
        return await self._video_frames(request.input)

    async def _video_frames(self, item: VideoInput) -> FrameVectors:
        """A video input's frames, counted as embedded; the one way both routes take."""
        found = await self._video.embed_frames(item, self._require_images("Video"))
        embedded("video_frame", found.vectors)
        return found

    async def _ready(self, requested: str) -> None:
        """400 unless ``requested`` is the loaded model; 503 until the Encoder has answered."""
        self.check_model(requested)
        await self.model_info()

    def check_model(self, requested: str) -> None:
        """400 unless ``requested`` is the loaded model's id or bare name."""
        if requested.strip() not in (self.model.id, self.model.name):
            raise ModelMismatch(requested, self.model.id)

    async def text_vectors(self, texts: list[str], name_of: NameOf, instruction: str | None = None) -> np.ndarray:
        """``(len(texts), D)`` vectors, within the text limits."""
        return await self._embedded_texts(self._prepared_texts(texts, name_of, instruction), name_of)

    async def text_vectors_and_tokens(self, texts: list[str], name_of: NameOf,
                                      instruction: str | None = None) -> tuple[np.ndarray, int]:
        """Vectors as :meth:`text_vectors`, and the tokens the model saw of them in all."""
        prepared = self._prepared_texts(texts, name_of, instruction)
        vectors, counts = await all_or_error(self._embedded_texts(prepared, name_of),
                                             self._encoder.count_tokens(prepared))
        return vectors, int(np.sum(counts))

    async def image_vectors(self, items: Sequence[ImageInput], name_of: NameOf) -> np.ndarray:
        """``(len(items), D)`` vectors of a list of images, fetched and decoded a chunk ahead of
        the Encoder as video frames are."""
        self._require_images("Image")
        if len(items) > self._settings.max_image_items:
            raise InvalidInput(f"too many images: {len(items)} > {self._settings.max_image_items} per request")
        return embedded("image", await self._video.embed_images(items, name_of))

    def _prepared_texts(self, texts: list[str], name_of: NameOf, instruction: str | None = None) -> list[str]:
        """``texts`` as the Encoder gets them: within the limits, formatted with the model's
        instruction template, cut to the characters that can hold the model's tokens."""
        limits = self._settings
        if len(texts) > limits.max_text_items:
            raise InvalidInput(f"too many texts: {len(texts)} > {limits.max_text_items} per request")
        for index, text in enumerate(texts):
            if len(text) > limits.max_text_chars:
                raise InvalidInput(
                    f"{name_of(index)} has {len(text)} characters, over the limit of {limits.max_text_chars}"
                )
        if instruction is not None:
            texts = self._with_instruction(instruction, texts)
        return self._cut(texts)

    async def _embedded_texts(self, texts: list[str], name_of: NameOf) -> np.ndarray:
        return embedded("text", check_embedded(await self._encoder.encode_text(texts), name_of))

    def _cut(self, texts: list[str]) -> list[str]:
        """Each text cut to the characters that can hold the model's tokens; 422 when the
        request still sends more than ``max_request_text_chars`` in all."""
        cut = [text[:self._text_chars] for text in texts]
        total = sum(len(text) for text in cut)
        if total > self._settings.max_request_text_chars:
            raise InvalidInput(f"the texts hold {total} characters (each cut at {self._text_chars}), over "
                               f"the limit of {self._settings.max_request_text_chars} per request")
        return cut

    def _with_instruction(self, instruction: str, texts: list[str]) -> list[str]:
        """Each text formatted with ``instruction`` by the model's template; a model trained
        without instructions refuses one (400) rather than embed something else than asked."""
        template = self.model.instruction_template
        if template is None:
            raise unsupported_instruction(self.model)
        if len(instruction) > self._settings.max_text_chars:
            raise InvalidInput(f"instruction has {len(instruction)} characters, over the limit of "
                               f"{self._settings.max_text_chars}")
        return [template.format(instruction=instruction, text=text) for text in texts]

    async def _encode_named(self, pixels: np.ndarray, name_of: NameOf) -> np.ndarray:
        return check_embedded(await self._encoder.encode_images(pixels), name_of)

    def _require_images(self, kind: str) -> ImagePreparer:
        if self._preparer is None or not self.model.supports_images:
            raise unsupported_modality(kind)
        return self._preparer

    async def _image_pixels(self, item: ImageInput) -> np.ndarray:
        """One image as a ``(1, H, W, 3)`` uint8 batch."""
        preparer = self._require_images("Image")
        limits = self._settings
        # Fetched bytes, or base64 text that is decoded in the worker thread that decodes the
        # image: one hand-off to a thread and back per image, not two.
        source: bytes | str = (await fetch_url(item.image_url, max_bytes=limits.max_image_bytes, settings=limits)
                               if isinstance(item, ImageUrlInput) else item.image_base64)
        # A JPEG far larger than the model's input decodes at a reduced scale (settings).
        min_side = round(limits.jpeg_draft_factor * (self.model.image_size or 0)) or None

        def prepare() -> np.ndarray:
            data = source if isinstance(source, bytes) else decode_base64(source, max_bytes=limits.max_image_bytes)
            image = decode_image(data, max_pixels=limits.max_image_pixels, min_side=min_side)
            with PREPROCESS_SECONDS.time():
                return preparer(image)

        return (await asyncio.to_thread(prepare))[np.newaxis]
