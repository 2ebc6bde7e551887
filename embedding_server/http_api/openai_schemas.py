"""Request bodies of the OpenAI-compatible routes (``/v1/embeddings``).

The fields and defaults of OpenAI's embeddings API, plus infinity's ``modality`` for images.
Unknown fields are refused, as OpenAI refuses them, so a misspelt option is an error rather
than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from embedding_server.http_api.schemas import SafeStr

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

    model: SafeStr
    input: Union[SafeStr, list[SafeStr]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: SafeStr | None = None  # accepted, as OpenAI's, and not used
    modality: Literal["text", "image"] = "text"

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
