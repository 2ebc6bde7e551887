"""Request and response bodies of the public API (``spec/api-reference.txt``)."""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

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


# Every string of a request is one of these.
SafeStr = Annotated[StrictStr, AfterValidator(valid_unicode)]
NonEmptyStr = Annotated[SafeStr, Field(min_length=1)]


class _InputObject(BaseModel):
    """Input objects reject unknown keys, so a typo ("image_ur1") is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


class TextInput(_InputObject):
    type: Literal["text"]
    text: Union[SafeStr, Annotated[list[SafeStr], Field(min_length=1)]]
    # Extension: a task instruction for instruction-trained models, applied to every text.
    instruction: SafeStr | None = None


class ImageUrlInput(_InputObject):
    type: Literal["image_url"]
    image_url: NonEmptyStr


class ImageBase64Input(_InputObject):
    type: Literal["image_base64"]
    image_base64: NonEmptyStr


FrameInput = Annotated[Union[ImageUrlInput, ImageBase64Input], Field(discriminator="type")]


class SegmentConfig(_InputObject):
    """Frame extraction settings; omitted keys take the server's defaults."""

    startOffsetSec: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    clip_duration: Annotated[float, Field(allow_inf_nan=False)] | None = None  # -1: to the end
    num_frames: Annotated[int, Field(ge=1)] | None = None
    extraction_fps: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    frame_indexes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None

    @field_validator("clip_duration")
    @classmethod
    def _positive_or_to_the_end(cls, value: float | None) -> float | None:
        if value is not None and value != -1 and value <= 0:
            raise ValueError("must be a positive number of seconds, or -1 for the rest of the video")
        return value


class VideoFramesInput(_InputObject):
    type: Literal["video_frames"]
    video_frames: Annotated[list[FrameInput], Field(min_length=1)]


class VideoUrlInput(_InputObject):
    type: Literal["video_url"]
    video_url: NonEmptyStr
    segment_config: SegmentConfig = Field(default_factory=SegmentConfig)


class VideoBase64Input(_InputObject):
    type: Literal["video_base64"]
    video_base64: NonEmptyStr
    segment_config: SegmentConfig = Field(default_factory=SegmentConfig)


class VideoFileInput(_InputObject):
    type: Literal["video_file"]
    video_path: NonEmptyStr
    segment_config: SegmentConfig = Field(default_factory=SegmentConfig)


class FramesBatchInput(_InputObject):
    type: Literal["frames_batch"]
    frames_manifest_path: NonEmptyStr


VideoInput = Union[VideoFramesInput, VideoUrlInput, VideoBase64Input, VideoFileInput, FramesBatchInput]
VIDEO_INPUTS: tuple[type, ...] = get_args(VideoInput)  # for isinstance

EmbeddingInput = Annotated[Union[TextInput, ImageUrlInput, ImageBase64Input, VideoInput], Field(discriminator="type")]


class EmbeddingRequest(BaseModel):
    model: SafeStr
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"]


# --- POST /embeddings/frames (an extension beside the documented API) ---

class FramesRequest(BaseModel):
    """The body of ``POST /embeddings``, its input one of the video types only: any other
    type is a 422 that names the video types."""

    model: SafeStr
    input: Annotated[VideoInput, Field(discriminator="type")]
    encoding_format: Literal["float", "base64"]


# --- POST /rank (an extension beside the documented API) ---

class TextQuery(_InputObject):
    """A ranking query text, with the documented text input's optional instruction."""

    type: Literal["text"]
    text: SafeStr
    instruction: SafeStr | None = None


RankQuery = Annotated[Union[TextQuery, ImageUrlInput, ImageBase64Input], Field(discriminator="type")]
# A candidate is a text (a plain string) or an image input object.
RankCandidate = Union[SafeStr, FrameInput]


class RankRequest(BaseModel):
    """One query against ``candidates``; ``top_k`` keeps the best ones of the answer."""

    model_config = ConfigDict(extra="forbid")

    model: SafeStr
    query: RankQuery
    candidates: Annotated[list[RankCandidate], Field(min_length=1)]
    top_k: Annotated[StrictInt, Field(ge=1)] | None = None


class ModelInfo(BaseModel):
    """What the Encoder reports about the model it serves."""

    id: str
    dimension: int
    modalities: list[str]
    image_size: int | None
    context_length: int
    device: str
    backend: str
    weights: str
    variant: str
    store_tag: str


class CurrentModel(BaseModel):
    model: str
    device: str
    use_openvino: bool
    backend: str
    weights: str
    variant: str
    store_tag: str
    dimension: int


class Capabilities(BaseModel):
    model: str
    modalities: list[str]
    supports_text: bool
    supports_image: bool
    supports_video: bool
