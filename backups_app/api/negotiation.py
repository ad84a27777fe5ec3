"""Content negotiation that answers JSON instead of 406 when the client asks for something else."""
from __future__ import annotations

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class JsonFallbackContentNegotiation(DefaultContentNegotiation):
    """Pick a renderer the usual way, falling back to the view's first (JSON) renderer.

    Downloads are sent as a plain streaming response whatever `Accept` says, and scripts that send
    `Accept: application/octet-stream` still need their JSON error bodies to be rendered.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type
