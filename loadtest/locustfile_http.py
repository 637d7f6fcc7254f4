"""HTTP user: Triton's generate_stream endpoint (server-sent events), or generate.

Run through `edgectl loadtest --target http://127.0.0.1:8000 ...`, which passes the
step spec (--edgectl-spec).  One keep-alive connection pool per user.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgectl.client import iter_generate_text
from edgectl.loadtest.locust_user import HttpLlmUser


class HttpSseUser(HttpLlmUser):
    request_type = "http-sse"

    def stream(self, inputs: dict[str, Any]) -> Iterator[str]:
        endpoint = "generate_stream" if inputs["stream"] else "generate"
        path = f"/v2/models/{self.spec.model}/{endpoint}"
        with self._http.stream("POST", path, json=inputs) as response:
            yield from iter_generate_text(response, inputs["stream"])
