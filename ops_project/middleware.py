"""Request middleware of the project itself."""
from django.conf import settings
from django.middleware.locale import LocaleMiddleware
from django.utils import translation


class ConsoleLocaleMiddleware(LocaleMiddleware):
    """Django's LocaleMiddleware, unless the installation chose one language for everybody.

    With LANGUAGE_FROM_BROWSER on, each browser's Accept-Language picks among LANGUAGES and
    LANGUAGE_CODE is the fallback. Off (the default once LANGUAGE_CODE is set explicitly), every
    page is in LANGUAGE_CODE: an operator who sets `LANGUAGE_CODE=pt-br` gets Portuguese even
    though every browser sends an Accept-Language header.
    """

    def process_request(self, request) -> None:
        if settings.LANGUAGE_FROM_BROWSER:
            super().process_request(request)
            return
        translation.activate(settings.LANGUAGE_CODE)
        request.LANGUAGE_CODE = translation.get_language()
