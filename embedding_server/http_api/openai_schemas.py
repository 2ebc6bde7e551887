"""Request bodies of the OpenAI-compatible routes (``/v1/embeddings``).

The fields and defaults of OpenAI's embeddings API, plus infinity's ``modality`` for images.
Unknown fields are refused, as OpenAI refuses them, so a misspelt option is an error rather
than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from embedding_server.http_api.schemas import MODEL_EXAMPLE, PNG_BASE64_EXAMPLE, Examples, SafeStr

TOKEN_ARRAYS_REFUSED = (
    "input holds token ids; this server embeds text only as strings, tokenised by the served model's "
    "own tokenizer (ids from another tokenizer, such as tiktoken's, mean nothing to it). Send the texts "
    "themselves; LangChain's OpenAIEmbeddings does with check_embedding_ctx_length=False"
)


def _is_token_array(value: Any) -> bool:
    """``value`` is a list of integers or a list of lists of integers (OpenAI's token input)."""
    if not isinstance(value, list) or not value:
        return False
    rows = value if all(isinstance(row, list) for row in value) else [value]
    return all(isinstance(token, int) and not isinstance(token, bool) for row in rows for token in row)


class OpenAIEmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: ``input`` is a text or a list of texts, or with
    ``modality: "image"`` an image URL / ``data:`` URI or a list of them."""

    model_config = ConfigDict(extra="forbid")

    model: SafeStr = Field(description="Name of the served model (GET /v1/models lists it).",
                           examples=[MODEL_EXAMPLE])
    input: Union[SafeStr, list[SafeStr]] = Field(
        description="A text or a list of texts; with modality image, an image URL or data: URI, or a list of them.",
        examples=["A photo of a cat", ["A photo of a cat", "A photo of a dog"]])
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: each vector as the base64 of its little-endian "
                             "float32 bytes.")
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="The first dimensions components of each vector, normalised again: models trained "
                          "with nested dimensions (Qwen3-Embedding) only; others accept their own dimension.",
        examples=[256])
    user: SafeStr | None = Field(None, description="Accepted, as OpenAI's, and not used.")
    modality: Literal["text", "image"] = Field("text", description="What input holds (infinity's extension).")

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: Any) -> Any:
        """One clear message for each wrong shape (a union's would list every alternative)."""
        if _is_token_array(value):
            raise ValueError(TOKEN_ARRAYS_REFUSED)
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be an empty list")
            wrong = next((index for index, item in enumerate(value) if not isinstance(item, str)), None)
            if wrong is not None:
                raise ValueError(f"item {wrong} is not a string; input is a string or a list of strings")
        elif not isinstance(value, str):
            raise ValueError("must be a string or a list of strings")
        return value

    @property
    def items(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


# --- Whole bodies as the API docs show them (OpenAPI named examples: name -> summary, value) ---

def _request_example(summary: str, **fields: Any) -> dict[str, Any]:
    return {"summary": summary, "value": {"model": MODEL_EXAMPLE, **fields}}


OPENAI_REQUEST_EXAMPLES: Examples = {
    "text": _request_example("A text", input="A photo of a cat"),
    "texts": _request_example("Several texts, base64 vectors", input=["A photo of a cat", "A photo of a dog"],
                              encoding_format="base64"),
    "image_url": _request_example("An image by URL", input="https://example.com/photo.jpg", modality="image"),
    "image_data_uri": _request_example("An image as a data: URI", input=f"data:image/png;base64,{PNG_BASE64_EXAMPLE}",
                                       modality="image"),
}
OPENAI_RESPONSE_EXAMPLES: Examples = {"list": {"summary": "One embedding object per input, in order", "value": {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.021, -0.134, 0.452]},
             {"object": "embedding", "index": 1, "embedding": [0.011, -0.201, 0.318]}],
    "model": MODEL_EXAMPLE, "usage": {"prompt_tokens": 12, "total_tokens": 12}}}}
_MODEL_OBJECT = {"id": MODEL_EXAMPLE, "object": "model", "created": 1767225600, "owned_by": "CLIP"}
OPENAI_MODELS_EXAMPLES: Examples = {"list": {"summary": "The served model, the only one",
                                             "value": {"object": "list", "data": [_MODEL_OBJECT]}}}
OPENAI_MODEL_EXAMPLES: Examples = {"model": {"summary": "The served model", "value": _MODEL_OBJECT}}
