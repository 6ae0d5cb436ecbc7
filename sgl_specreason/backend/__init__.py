"""An SGLang ``RuntimeEndpoint`` with what the stock one lacks: one pooled HTTP client with a
deadline on every request, clear errors, token counts without a round trip, and a count of what
is in flight (``Endpoint``)."""

from sgl_specreason.backend.endpoint import ASK_RUNTIME, Endpoint
from sgl_specreason.backend.http import (
           KEEPALIVE_S,
           SGLANG_KEEPALIVE_S,
           RuntimeHttp,
           client_keepalive,
)
from sgl_specreason.backend.load import RuntimeLoad

__all__ = ["ASK_RUNTIME", "Endpoint", "KEEPALIVE_S", "SGLANG_KEEPALIVE_S", "RuntimeHttp", "client_keepalive",
           "RuntimeLoad"]
