"""A host project's URLconf: its own DRF view beside opsdesk's API (tests/api/test_api_host_policy.py)."""
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class HostInvoiceView(APIView):
    """The host's own endpoint: none of opsdesk's business."""

    def get(self, request):
        return Response({"invoices": []})


urlpatterns = [
    path("host/invoices", HostInvoiceView.as_view()),
    path("", include("ops_project.urls")),
]
