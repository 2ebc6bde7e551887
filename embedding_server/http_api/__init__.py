"""The HTTP vocabulary: request and response schemas, errors, vector encodings, middlewares."""
