"""``edgectl openai serve``: the gateway under uvicorn, in this process."""

from __future__ import annotations

import os

from edgectl.errors import EdgectlError
from edgectl.openai.app import GatewaySettings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str, api_key_env: str | None) -> str | None:
    """What to tell the operator when the gateway listens beyond this machine."""
    if host in LOOPBACK:
        return None
    auth = (
        f"requests need the API key from ${api_key_env}"
        if api_key_env
        else "unauthenticated (set --api-key-env)"
    )
    return (
        f"binding to {host} exposes the OpenAI-compatible API beyond this machine; {auth}; "
        "put TLS in front of it"
    )


def api_key_from(env_name: str | None) -> str | None:
    """The key held by the environment variable ``env_name``; refuses an empty one."""
    if env_name is None:
        return None
    key = os.environ.get(env_name, "")
    if not key:
        raise EdgectlError(f"--api-key-env {env_name}: that environment variable is not set")
    return key


def serve(
    host: str, port: int, triton_grpc: str, api_key_env: str | None, max_body_bytes: int
) -> None:
    import uvicorn

    from edgectl.openai.app import create_app

    settings = GatewaySettings(
        triton_grpc=triton_grpc, api_key=api_key_from(api_key_env), max_body_bytes=max_body_bytes
    )
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="warning",
        access_log=False, timeout_graceful_shutdown=5,
    )  # fmt: skip
