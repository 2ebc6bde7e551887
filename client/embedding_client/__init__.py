"""Python client for the multimodal embedding server: sync and async, bulk, retries, typed errors.

    from embedding_client import Client
    with Client("http://localhost:8000") as client:
        vectors = client.embed_texts(["a photo of a cat", "a dog"]).vectors   # (2, D) float32
"""

from embedding_client.client import AsyncClient, Client, ClientOptions
from embedding_client.errors import (AuthenticationError, BadRequestError, ClientRequestError,
                                     EmbeddingServerError, GatewayError, InvalidInputError, NotFoundError,
                                     PayloadTooLargeError, RateLimitError, ServerError, ServiceUnavailableError)
from embedding_client.inputs import ImageUrl, ServerPath
from embedding_client.results import Embeddings, RankedCandidate, Ranking, VideoEmbeddings
from embedding_client.retrying import RetryPolicy

__all__ = [
    "AsyncClient", "AuthenticationError", "BadRequestError", "Client", "ClientOptions", "ClientRequestError",
    "EmbeddingServerError", "Embeddings", "GatewayError", "ImageUrl", "InvalidInputError", "NotFoundError",
    "PayloadTooLargeError", "RankedCandidate", "Ranking", "RateLimitError", "RetryPolicy", "ServerError",
    "ServerPath", "ServiceUnavailableError", "VideoEmbeddings",
]
