"""Request and response bodies of the public API (``spec/api-reference.txt``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator


def valid_unicode(value: str) -> str:
    """``value`` when it is valid Unicode text. JSON can spell lone surrogates (``"\\ud800"``),
    which no UTF-8 encoder (tokenizers, file names, URLs, response bodies) accepts; refused here
    they are a 422, never an error deep in the pipeline."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"holds a lone surrogate (U+{ord(value[error.start]):04X}) at character "
                         f"{error.start}, which is not valid Unicode text") from None
    return value


# Examples of the API docs: a 32x32 PNG in base64, an image every model accepts.
PNG_BASE64_EXAMPLE = ("iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAK0lEQVR42u3NQQEAQAQAMC6NiCKKdSX4bQWW0xWXXhwTCAQCgU"
                  "AgEAgEWz6b/gGoTIbtSQAAAABJRU5ErkJggg==")
MODEL_EXAMPLE = "CLIP/clip-vit-b-16"
_MODEL = "Name of the served model, as GET /models' current_model gives it."
_ENCODING = "float: vectors as lists of numbers; base64: each vector as the base64 of its little-endian float32 bytes."

# Every string of a request is one of these.
SafeStr = Annotated[StrictStr, AfterValidator(valid_unicode)]
NonEmptyStr = Annotated[SafeStr, Field(min_length=1)]


class _InputObject(BaseModel):
    """Input objects reject unknown keys, so a typo ("image_ur1") is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


class TextInput(_InputObject):
    type: Literal["text"] = Field(description="Selects the text input.")
    text: Union[SafeStr, Annotated[list[SafeStr], Field(min_length=1)]] = Field(
        description="One text, or a list of texts embedded together (one vector each).",
        examples=["A photo of a cat", ["A photo of a cat", "A photo of a dog"]])
    # Extension: a task instruction for instruction-trained models, applied to every text.
    instruction: SafeStr | None = Field(
        None, description="A task instruction for instruction-trained models (QwenText), applied to every "
                          "text; other models refuse it.",
        examples=["Given a web search query, retrieve relevant passages that answer the query"])


class ImageUrlInput(_InputObject):
    type: Literal["image_url"] = Field(description="Selects the image URL input.")
    image_url: NonEmptyStr = Field(description="URL of the image, fetched by the server under its URL policy.",
                                   examples=["https://example.com/photo.jpg"])


class ImageBase64Input(_InputObject):
    type: Literal["image_base64"] = Field(description="Selects the base64 image input.")
    image_base64: NonEmptyStr = Field(description="The image file (JPEG, PNG, WebP, ...) in base64, bare or as a "
                                                  "data: URI.", examples=[PNG_BASE64_EXAMPLE])


FrameInput = Annotated[Union[ImageUrlInput, ImageBase64Input], Field(discriminator="type")]


class SegmentConfig(_InputObject):
    """Frame extraction settings; omitted keys take the server's defaults."""

    startOffsetSec: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="Start of the segment, in seconds from the beginning of the video.", examples=[0])
    clip_duration: Annotated[float, Field(allow_inf_nan=False)] | None = Field(  # -1: to the end
        None, description="Length of the segment in seconds; -1 for the rest of the video.", examples=[-1, 10])
    num_frames: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Frames sampled uniformly over the segment (lowest priority).", examples=[16])
    extraction_fps: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="Frames per second to extract; takes priority over num_frames.", examples=[1.0])
    frame_indexes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = Field(
        None, description="Exact frame numbers to extract (highest priority).", examples=[[0, 30, 60]])

    @field_validator("clip_duration")
    @classmethod
    def _positive_or_to_the_end(cls, value: float | None) -> float | None:
        if value is not None and value != -1 and value <= 0:
            raise ValueError("must be a positive number of seconds, or -1 for the rest of the video")
        return value


_SEGMENT_CONFIG = "Which frames to extract; omitted keys take the server's defaults."


class VideoFramesInput(_InputObject):
    type: Literal["video_frames"] = Field(description="Selects the video-as-frames input.")
    video_frames: Annotated[list[FrameInput], Field(min_length=1)] = Field(
        description="The video's frames in order, each an image_url or image_base64 input.")


class VideoUrlInput(_InputObject):
    type: Literal["video_url"] = Field(description="Selects the video URL input.")
    video_url: NonEmptyStr = Field(description="URL of the video, fetched by the server under its URL policy.",
                                   examples=["https://example.com/video.mp4"])
    segment_config: SegmentConfig = Field(default_factory=SegmentConfig, description=_SEGMENT_CONFIG)


class VideoBase64Input(_InputObject):
    type: Literal["video_base64"] = Field(description="Selects the base64 video input.")
    video_base64: NonEmptyStr = Field(description="The video file (MP4, WebM, ...) in base64.",
                                      examples=["AAAAIGZ0eXBpc29tAAACAGlzb21pc28yYXZjMW1wNDE..."])
    segment_config: SegmentConfig = Field(default_factory=SegmentConfig, description=_SEGMENT_CONFIG)


class VideoFileInput(_InputObject):
    type: Literal["video_file"] = Field(description="Selects the server-side video file input.")
    video_path: NonEmptyStr = Field(description="Path of a video file under the server's video root "
                                                "(EMBEDDING_VIDEO_ROOT), relative to it or absolute.",
                                    examples=["sample.mp4"])
    segment_config: SegmentConfig = Field(default_factory=SegmentConfig, description=_SEGMENT_CONFIG)


class FramesBatchInput(_InputObject):
    type: Literal["frames_batch"] = Field(description="Selects the pre-extracted frames input.")
    frames_manifest_path: NonEmptyStr = Field(
        description="Path of a frames manifest (FramesManifest JSON: frame_number, timestamp, image_path, type per "
                    "frame); a relative path resolves under the server's video root.",
        examples=["manifests/frames.json"])


VideoInput = Union[VideoFramesInput, VideoUrlInput, VideoBase64Input, VideoFileInput, FramesBatchInput]
VIDEO_INPUTS: tuple[type, ...] = get_args(VideoInput)  # for isinstance

EmbeddingInput = Annotated[Union[TextInput, ImageUrlInput, ImageBase64Input, VideoInput], Field(discriminator="type")]


class EmbeddingRequest(BaseModel):
    model: SafeStr = Field(description=_MODEL, examples=[MODEL_EXAMPLE])
    input: EmbeddingInput = Field(description="The input to embed; its type selects the modality.")
    encoding_format: Literal["float", "base64"] = Field(description=_ENCODING, examples=["float"])


# --- POST /embeddings/frames (an extension beside the documented API) ---

class FramesRequest(BaseModel):
    """The body of ``POST /embeddings``, its input one of the video types only: any other
    type is a 422 that names the video types."""

    model: SafeStr = Field(description=_MODEL, examples=[MODEL_EXAMPLE])
    input: Annotated[VideoInput, Field(discriminator="type")] = Field(description="A video input of any of the "
                                                                                  "five video types.")
    encoding_format: Literal["float", "base64"] = Field(description=_ENCODING, examples=["float"])


# --- POST /rank (an extension beside the documented API) ---

class TextQuery(_InputObject):
    """A ranking query text, with the documented text input's optional instruction."""

    type: Literal["text"] = Field(description="Selects the text query.")
    text: SafeStr = Field(description="The query text.", examples=["a photo of a cat"])
    instruction: SafeStr | None = Field(None, description="A task instruction for instruction-trained models "
                                                          "(QwenText); other models refuse it.")


RankQuery = Annotated[Union[TextQuery, ImageUrlInput, ImageBase64Input], Field(discriminator="type")]
# A candidate is a text (a plain string) or an image input object.
RankCandidate = Union[SafeStr, FrameInput]


class RankRequest(BaseModel):
    """One query against ``candidates``; ``top_k`` keeps the best ones of the answer."""

    model_config = ConfigDict(extra="forbid")

    model: SafeStr = Field(description=_MODEL, examples=[MODEL_EXAMPLE])
    query: RankQuery = Field(description="A text or an image input, scored against every candidate.")
    candidates: Annotated[list[RankCandidate], Field(min_length=1)] = Field(
        description="Texts (plain strings) and image inputs to score.",
        examples=[["a photo of a cat", "a photo of a dog", "a diagram"]])
    top_k: Annotated[StrictInt, Field(ge=1)] | None = Field(None, description="Keep only the best top_k results "
                                                                              "(default: all).", examples=[2])


class ModelInfo(BaseModel):
    """What the Encoder reports about the model it serves."""

    id: str
    dimension: int
    modalities: list[str]
    image_size: int | None
    context_length: int
    device: str
    backend: str
    precision: str
    weights: str
    variant: str
    store_tag: str


class CurrentModel(BaseModel):
    model: str = Field(description="The served model.", examples=[MODEL_EXAMPLE])
    device: str = Field(description="Where the model computes.", examples=["CPU"])
    use_openvino: bool = Field(description="Whether the OpenVINO backend runs it.", examples=[False])
    backend: str = Field(description="The inference backend.", examples=["torch"])
    precision: str = Field(description="What the model's matmuls compute in (EMBEDDING_PRECISION): "
                           "f32, bf16, tf32, f16 or int8.", examples=["bf16"])
    weights: str = Field(description="Where the entry's weights came from.", examples=["pretrained"])
    variant: str = Field(description="The entry's variant of the weights.", examples=["full"])
    store_tag: str = Field(description="The entry's tag in the BentoML model store.",
                           examples=["clip-vit-b-16:uvxu3xrzbsq2aaaa"])
    dimension: int = Field(description="Length of each embedding vector.", examples=[512])


class Capabilities(BaseModel):
    model: str = Field(description="The served model.", examples=[MODEL_EXAMPLE])
    modalities: list[str] = Field(description="The input modalities it embeds.", examples=[["text", "image"]])
    supports_text: bool = Field(description="Whether it embeds texts.", examples=[True])
    supports_image: bool = Field(description="Whether it embeds images.", examples=[True])
    supports_video: bool = Field(description="Whether it embeds videos (as frames).", examples=[False])


# --- Whole bodies as the API docs show them (OpenAPI named examples: name -> summary, value) ---

Examples = dict[str, dict[str, Any]]
_SEGMENT_EXAMPLE = {"startOffsetSec": 0, "clip_duration": -1, "num_frames": 16}


def _embedding_example(summary: str, input_object: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": {"model": MODEL_EXAMPLE, "input": input_object, "encoding_format": "float"}}


VIDEO_REQUEST_EXAMPLES: Examples = {
    "video_frames": _embedding_example("A video as its frames", {"type": "video_frames", "video_frames": [
        {"type": "image_url", "image_url": "https://example.com/frame1.jpg"},
        {"type": "image_base64", "image_base64": PNG_BASE64_EXAMPLE}]}),
    "video_url": _embedding_example("A video by URL, 16 frames", {
        "type": "video_url", "video_url": "https://example.com/video.mp4", "segment_config": _SEGMENT_EXAMPLE}),
    "video_base64": _embedding_example("A video in base64 (shortened here)", {
        "type": "video_base64", "video_base64": "AAAAIGZ0eXBpc29tAAACAGlzb21pc28yYXZjMW1wNDE...",
        "segment_config": {"extraction_fps": 1.0}}),
    "video_file": _embedding_example("A video file on the server, 2 frames a second", {
        "type": "video_file", "video_path": "sample.mp4", "segment_config": {"extraction_fps": 2.0}}),
    "frames_batch": _embedding_example("Pre-extracted frames by manifest", {
        "type": "frames_batch", "frames_manifest_path": "manifests/frames.json"}),
}
EMBEDDING_REQUEST_EXAMPLES: Examples = {
    "text": _embedding_example("A text", {"type": "text", "text": "A photo of a cat"}),
    "texts": _embedding_example("Several texts", {"type": "text", "text": ["A photo of a cat", "A photo of a dog"]}),
    "image_url": _embedding_example("An image by URL", {"type": "image_url",
                                                        "image_url": "https://example.com/photo.jpg"}),
    "image_base64": _embedding_example("An image in base64", {"type": "image_base64",
                                                              "image_base64": PNG_BASE64_EXAMPLE}),
    **VIDEO_REQUEST_EXAMPLES,
}
EMBEDDING_RESPONSE_EXAMPLES: Examples = {
    "vector": {"summary": "A text or an image: one vector (512 numbers for CLIP ViT-B/16; shortened here)",
               "value": {"embedding": [0.021, -0.134, 0.452]}},
    "vectors": {"summary": "A list of texts or a video: one vector per text or frame",
                "value": {"embedding": [[0.021, -0.134, 0.452], [0.011, -0.201, 0.318]]}},
    "base64": {"summary": "With encoding_format base64: little-endian float32 bytes",
               "value": {"embedding": "MQisPEw3Cb6LbOc+"}},
}
FRAMES_RESPONSE_EXAMPLES: Examples = {
    "frames": {"summary": "One vector per frame, with its frame number and time in seconds",
               "value": {"model": MODEL_EXAMPLE, "embedding": [[0.021, -0.134, 0.452], [0.011, -0.201, 0.318]],
                         "frames": [0, 15], "timestamps": [0.0, 0.5], "fps": 30.0}},
}
RANK_REQUEST_EXAMPLES: Examples = {
    "classification": {"summary": "Zero-shot classification: an image against labels", "value": {
        "model": MODEL_EXAMPLE, "query": {"type": "image_url", "image_url": "https://example.com/cat.jpg"},
        "candidates": ["a photo of a cat", "a photo of a dog", "a diagram"], "top_k": 2}},
    "retrieval": {"summary": "Retrieval: a text against images", "value": {
        "model": MODEL_EXAMPLE, "query": {"type": "text", "text": "a photo of a cat"},
        "candidates": [{"type": "image_url", "image_url": "https://example.com/cat.jpg"},
                       {"type": "image_base64", "image_base64": PNG_BASE64_EXAMPLE}]}},
}
RANK_RESPONSE_EXAMPLES: Examples = {
    "softmax": {"summary": "Best first; probabilities over all candidates", "value": {
        "model": MODEL_EXAMPLE, "scoring": "softmax", "logit_scale": 100.0, "logit_bias": None,
        "results": [{"index": 0, "cosine": 0.301, "probability": 0.973},
                    {"index": 1, "cosine": 0.265, "probability": 0.026}]}},
}
HEALTH_RESPONSE_EXAMPLES: Examples = {"healthy": {"summary": "The model answers", "value": {"status": "healthy"}}}
MODELS_RESPONSE_EXAMPLES: Examples = {"models": {"summary": "The served model and the catalogue's families", "value": {
    "current_model": MODEL_EXAMPLE,
    "available_models": {"MobileCLIP": ["mobileclip_s0", "mobileclip_s1", "mobileclip_s2", "mobileclip_b",
                                        "mobileclip_blt"],
                         "CLIP": ["clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14", "clip-vit-h-14"],
                         "CN-CLIP": ["cn-clip-vit-b-16", "cn-clip-vit-l-14", "cn-clip-vit-h-14"],
                         "SigLIP": ["siglip2-vit-b-16", "siglip2-vit-l-16", "siglip2-so400m-patch16-384"],
                         "Blip2": ["blip2_transformers"],
                         "QwenText": ["qwen3-embedding-0.6b", "qwen3-embedding-4b", "qwen3-embedding-8b"]},
    "total_models": 19}}}
