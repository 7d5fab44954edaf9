"""The REST API (FastAPI), everything under /v1, errors as RFC 9457 problem+json."""
