"""API-wide pieces: the exception handler that keeps every error a JSON object with a `detail`."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("mist.api")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is not None and not isinstance(response.data, dict):
        response.data = {"detail": response.data}
    if response is not None and isinstance(response.data, dict) and "detail" not in response.data:
        # Field errors: keep them, and add a one-line summary for humans and CLIs.
        response.data = {"detail": "Invalid input.", "errors": response.data}
    return response


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested past Python's recursion limit is a 400, not a 500.

    `json.loads` raises RecursionError (not ValueError) on `[` x 100000; DRF only turns ValueError into a
    ParseError, so without this every JSON endpoint, anonymous login included, answered 500 with a traceback.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
