"""Auth API: token issue, refresh, logout and device pairing. Thin doors onto accounts.services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.addresses import client_address


class TokenRequest(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class TokenPairResponse(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    scope = serializers.ChoiceField(choices=["admin", "user"])


class RefreshRequest(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class RedeemRequest(serializers.Serializer):
    code = serializers.CharField(max_length=32, help_text="The 8-character code shown on the account page")
    name = serializers.CharField(max_length=100, help_text="A name for this device, e.g. 'Living-room PC'")


class DevicePairResponse(TokenPairResponse):
    device_id = serializers.UUIDField()


class ErrorResponse(serializers.Serializer):
    detail = serializers.CharField()


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    descriptions = {
        400: "Malformed request (bad JSON, missing or invalid fields)",
        401: "Refused credentials or token",
        429: "Too many failed attempts; see the Retry-After header",
    }
    return {code: OpenApiResponse(ErrorResponse, description=descriptions[code]) for code in codes}


def _throttled(exc: services.LoginThrottled) -> Throttled:
    return Throttled(wait=exc.retry_after, detail=f"Too many failed attempts; try again in {exc.retry_after} seconds.")


class _PublicAuthView(APIView):
    """No authentication on the way in (a stale Bearer header must not block a login), and refusals
    answer 401 with a Bearer challenge rather than DRF's 403 fallback."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class TokenView(_PublicAuthView):
    """Username + password -> access + refresh tokens."""

    @extend_schema(
        operation_id="auth_token",
        request=TokenRequest,
        responses={200: TokenPairResponse, **_errors(400, 401, 429)},
        auth=[],
        description="Password login. Failures count towards the per-username and per-address throttle.",
    )
    def post(self, request: Request) -> Response:
        data = TokenRequest(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.issue_tokens_for_login(
                request=request._request, address=client_address(request), **data.validated_data
            )
        except services.LoginThrottled as exc:
            raise _throttled(exc) from exc
        except services.InvalidCredentials as exc:
            raise AuthenticationFailed(str(exc), code="invalid_credentials") from exc
        return Response(pair)


class TokenRefreshView(_PublicAuthView):
    """Rotate a refresh token; the new pair's scope follows the account's current role."""

    @extend_schema(
        operation_id="auth_token_refresh",
        request=RefreshRequest,
        responses={200: TokenPairResponse, **_errors(400, 401)},
        auth=[],
        description="The refresh token is single-use: it is blacklisted and a new pair is returned.",
    )
    def post(self, request: Request) -> Response:
        data = RefreshRequest(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.refresh_tokens(refresh=data.validated_data["refresh"], address=client_address(request))
        except services.InvalidToken as exc:
            raise AuthenticationFailed(str(exc), code="token_not_valid") from exc
        return Response(pair)


class LogoutView(_PublicAuthView):
    """Blacklist a refresh token (a device's token also unpairs the device)."""

    @extend_schema(
        operation_id="auth_logout",
        request=RefreshRequest,
        responses={204: OpenApiResponse(description="Logged out"), **_errors(400, 401)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = RefreshRequest(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.logout(refresh=data.validated_data["refresh"], address=client_address(request))
        except services.InvalidToken as exc:
            raise AuthenticationFailed(str(exc), code="token_not_valid") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeviceRedeemView(_PublicAuthView):
    """Pairing code (from the store's account page) + device name -> a device token pair."""

    @extend_schema(
        operation_id="auth_devices_redeem",
        request=RedeemRequest,
        responses={200: DevicePairResponse, **_errors(400, 401, 429)},
        auth=[],
        description="Codes are single-use and valid 10 minutes. Wrong codes count towards the address throttle.",
    )
    def post(self, request: Request) -> Response:
        data = RedeemRequest(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pair = services.redeem_pairing_code(address=client_address(request), **data.validated_data)
        except services.MalformedPairingCode as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        except services.LoginThrottled as exc:
            raise _throttled(exc) from exc
        except services.PairingCodeRejected as exc:
            raise AuthenticationFailed(str(exc), code="pairing_code_rejected") from exc
        return Response(pair)
