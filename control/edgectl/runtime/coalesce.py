"""Request coalescing: identical requests in flight share one engine sequence.

Two requests are merged only when they must produce the same tokens: the same prompt
ids (text, chat messages and RAG prompts all end up there), every sampling field
equal (stop words, end id, ignore_eos, beams, return sequences, log probs, guided
decoding, streaming, ...), the same sequence index (it offsets the sampling seed)
and the same client request id (a ``stop`` request names it), and greedy or sampling
with the same seed; an unseeded sampled request is never merged, nor is one whose
responses carry facts of its own (``EngineRequest.shareable``: per-request timings).
Every client of a shared sequence gets the whole stream under its own batch index: a
late joiner first receives what was already sent, then the rest.  Each client gets
its own cancellation key, so one client leaving drops only that client; the sequence
stops when none is left.

An optional response cache (bounded, with a time to live) answers a repeated greedy
request from the previous identical answer without running the engine; an answer cut
short by a ``stop`` request is never cached.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from edgectl.runtime.emission import Emission
from edgectl.runtime.engine import EngineRequest, ResponseSink

log = logging.getLogger(__name__)


@dataclass
class CoalesceStats:
    coalesced_requests: int = 0  # requests served by another request's sequence
    response_cache_hits: int = 0
    response_cache_entries: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def request_key(request: EngineRequest) -> tuple | None:
    """What must be equal for two requests to share output; None if they could differ.

    The last item is the client's request id: requests in flight are merged only under
    the same id, while the response cache ignores it (``content_key``).
    """
    params = request.params
    if not request.shareable or (not params.greedy and params.seed is None):
        return None
    content = (tuple(request.prompt_ids), repr(dataclasses.asdict(params)), request.sequence_index)
    return (content, request.request_id)


def content_key(key: tuple) -> tuple:
    """The response cache's key: what decides the output, without the request id."""
    return key[0]


def _for_client(emission: Emission, request: EngineRequest, private: int) -> Emission:
    """A shared emission as one client's own: its key and its place in its request."""
    return dataclasses.replace(
        emission,
        key=private,
        batch_index=request.batch_index,
        sequence_index=request.sequence_index,
    )


class ResponseCache:
    """Finished greedy responses by request key: least recently used out, TTL expiry."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self.size, self.ttl_s, self._clock = size, ttl_s, clock
        self._entries: OrderedDict[tuple, tuple[float, list[Emission]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[Emission] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] > self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple, responses: list[Emission]) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), responses)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class _Shared:
    """The sink of one shared sequence: fans every response out to its clients."""

    def __init__(self, owner: Coalescer, key: tuple, cacheable: bool) -> None:
        self._owner, self._key, self.cacheable = owner, key, cacheable
        self._lock = threading.Lock()
        # private cancellation key -> (the client's own request, its sink)
        self._clients: dict[int, tuple[EngineRequest, ResponseSink]] = {}
        self._sent: list[Emission] = []
        self.closed = False

    def join(self, request: EngineRequest) -> bool:
        """Add a client and replay what it missed; False once the sequence is over."""
        with self._lock:
            if self.closed:
                return False
            private = secrets.randbits(63)
            for emission in self._sent:
                request.sink.send(_for_client(emission, request, private))
            self._clients[private] = (request, request.sink)
            return True

    # -- ResponseSink, called by the engine thread ---------------------------------------
    def send(self, emission: Emission) -> None:
        final = emission.final
        with self._lock:
            self._sent.append(emission)
            for private, (request, client) in list(self._clients.items()):
                try:
                    client.send(_for_client(emission, request, private))
                except Exception:  # that client's stream broke; the others go on
                    log.debug("dropping a coalesced client", exc_info=True)
                    del self._clients[private]
            gone = not self._clients
            self.closed = final or gone
        if final:
            self._owner.finished(self._key, self, self._sent if self.cacheable else None)
        elif gone:
            # the engine drops the sequence: a later identical request must start anew
            self._owner.finished(self._key, self, None)
            raise RuntimeError("every client of the shared sequence is gone")

    def fail(self, message: str, kind: str = "invalid_argument") -> None:
        with self._lock:
            self.closed = True
            clients = [client for _request, client in self._clients.values()]
        self._owner.finished(self._key, self, None)
        for client in clients:
            try:
                client.fail(message, kind)
            except Exception:  # the client may be gone already
                log.debug("could not deliver %r", message, exc_info=True)

    def cancelled(self) -> bool:
        with self._lock:
            return all(client.cancelled() for _request, client in self._clients.values())

    def cancel_keys(self) -> set[int]:
        with self._lock:
            return set(self._clients)

    def forget(self, posted: set[int]) -> None:
        """Drop the clients whose cancellation was posted (see cancel_board)."""
        with self._lock:
            for private in posted & set(self._clients):
                del self._clients[private]


class Coalescer:
    """Sits in front of ``engine.submit``; merges, caches, counts."""

    def __init__(
        self,
        submit: Callable[[EngineRequest], None],
        cache_size: int = 0,
        cache_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._submit = submit
        self._cache = ResponseCache(cache_size, cache_ttl_s, clock) if cache_size > 0 else None
        self._lock = threading.Lock()
        self._in_flight: dict[tuple, _Shared] = {}
        self.stats = CoalesceStats()

    def submit(self, request: EngineRequest) -> None:
        key = request_key(request)
        if key is None:
            self._submit(request)
            return
        cached = self._cache.get(content_key(key)) if self._cache is not None else None
        if cached is not None:
            self.stats.response_cache_hits += 1
            private = secrets.randbits(63)
            for emission in cached:
                request.sink.send(_for_client(emission, request, private))
            return
        while True:
            with self._lock:
                shared = self._in_flight.get(key)
                leader = shared is None
                if leader:
                    shared = _Shared(self, key, cacheable=request.params.greedy)
                    self._in_flight[key] = shared
            if shared.join(request):
                break
        if leader:
            self._submit(dataclasses.replace(request, sink=shared))
        else:
            self.stats.coalesced_requests += 1

    def stopping(self, request_id: str) -> None:
        """A ``stop`` request names ``request_id``: its sequences end early, so their
        answers must not be cached (call before the engine's ``stop_request``)."""
        with self._lock:
            for (_content, owner_id), shared in self._in_flight.items():
                if request_id and owner_id == request_id:
                    shared.cacheable = False

    def finished(self, key: tuple, shared: _Shared, responses: list[Emission] | None) -> None:
        with self._lock:
            if self._in_flight.get(key) is shared:
                del self._in_flight[key]
        if responses is not None and self._cache is not None:
            self._cache.put(content_key(key), responses)
            self.stats.response_cache_entries = len(self._cache)
