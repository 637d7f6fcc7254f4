"""Load profiles: what one ``edgectl loadtest`` run sends, validated from YAML.

A profile fixes the request shape (synthetic prompts of a target token count, a fixed
output length) and the load (a concurrency sweep or a request-rate sweep), and bounds
every step by duration AND a hard request cap, so no run can go on forever.  Unknown
keys and bad values are errors naming the field, like ``edgectl.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from edgectl.config import StrictModel, format_validation_error, load_yaml_mapping
from edgectl.errors import EdgectlError

# Every top-level key of edgectl.yaml's sections that a variant may override.
_VARIANT_SECTIONS = ("engine", "server", "model")


class Variant(StrictModel):
    """One server configuration of a side-by-side comparison (deployed by edgectl)."""

    name: str = Field(min_length=1, max_length=40)
    set: dict[str, Any] = Field(default_factory=dict)  # dotted config key -> value

    @model_validator(mode="after")
    def _known_sections(self) -> Variant:
        for key in self.set:
            if key.split(".", 1)[0] not in _VARIANT_SECTIONS or "." not in key:
                raise ValueError(
                    f"set key {key!r} must be a dotted edgectl config key in "
                    f"{', '.join(_VARIANT_SECTIONS)} (e.g. engine.max_num_seqs)"
                )
        return self

    def overrides(self) -> tuple[str, ...]:
        """As ``--set KEY=VALUE`` strings for :func:`edgectl.config.load_config`."""
        return tuple(f"{key}={_yaml_scalar(value)}" for key, value in self.set.items())


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class LoadProfile(StrictModel):
    """One load test: request shape, load levels, bounds."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    # Request shape.
    input_tokens: int = Field(128, ge=1, le=32768)
    output_tokens: int = Field(64, ge=1, le=32768)  # max_tokens of every request
    # "unused": an id the model never emits (its vocabulary's last id, read from the
    # tokenizer at run time), so every request generates exactly output_tokens; a number
    # names the id; null lets the model stop at its own end token.
    end_id: int | Literal["unused"] | None = "unused"
    stream: bool = True
    apply_chat_template: bool = False
    prompt_pool: int = Field(64, ge=1, le=4096)  # distinct prompts (defeats prefix caching)
    seed: int = 0
    # Load.
    mode: Literal["concurrency", "request_rate"] = "concurrency"
    concurrency: list[int] = Field(default_factory=lambda: [1])
    request_rates: list[float] = Field(default_factory=list)  # requests/s, request_rate mode
    max_users: int = Field(32, ge=1, le=512)  # request_rate mode: users that can be in flight
    spawn_rate: float | None = Field(None, gt=0)  # users/s; default: all users at once
    # Bounds of every step.
    duration_s: int = Field(10, ge=1, le=3600)  # measured phase; warm-up comes before it
    max_requests: int = Field(200, ge=1, le=100_000)  # hard cap, warm-up included
    warmup_requests: int = Field(1, ge=0, le=1000)  # per step, excluded from statistics
    request_timeout_s: float = Field(120.0, gt=0, le=3600)
    # Repeat every level on every server this often, interleaved, and pool the results:
    # on a noisy machine a comparison is fair only if both sides see the same drift.
    rounds: int = Field(1, ge=1, le=20)
    # Side-by-side server configurations; when set, edgectl deploys one local server each.
    variants: list[Variant] = Field(default_factory=list)

    @model_validator(mode="after")
    def _load_levels(self) -> LoadProfile:
        if self.mode == "concurrency":
            _check_levels("concurrency", self.concurrency, upper=512)
        else:
            _check_levels("request_rates", self.request_rates, upper=10_000)
        if self.warmup_requests >= self.max_requests:
            raise ValueError(
                f"warmup_requests ({self.warmup_requests}) must be below max_requests "
                f"({self.max_requests}), or no request would be measured"
            )
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        return self

    @property
    def levels(self) -> list[float]:
        """The swept values: concurrencies or request rates."""
        return list(self.concurrency if self.mode == "concurrency" else self.request_rates)

    @property
    def level_name(self) -> str:
        return "concurrency" if self.mode == "concurrency" else "request rate (req/s)"

    def users_at(self, level: float) -> int:
        """Locust users for one step: one per in-flight request in concurrency mode."""
        return int(level) if self.mode == "concurrency" else self.max_users


def _check_levels(field: str, levels: list[Any], upper: float) -> None:
    if not levels:
        raise ValueError(f"{field}: needs at least one value for mode")
    bad = [value for value in levels if not 0 < value <= upper]
    if bad:
        raise ValueError(f"{field}: every value must be in (0, {upper:g}], got {bad}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"{field}: values must be unique, got {levels}")


def parse_profile(data: dict[str, Any], source: str) -> LoadProfile:
    """Validate a mapping; the error lists every bad field by its dotted name."""
    try:
        return LoadProfile.model_validate(data)
    except ValidationError as err:
        raise EdgectlError(format_validation_error(err, f"load profile {source}")) from None


def load_profile(path: Path) -> LoadProfile:
    return parse_profile(load_yaml_mapping(path, "load profile"), str(path))


@dataclass
class StepSpec:
    """What one locust process runs: written by the driver, read by edgectl.loadtest.locust_user."""

    step: str
    model: str
    url: str  # http://host:port for the HTTP user, host:port for the gRPC user
    prompts: list[dict[str, Any]]  # {"text": str, "tokens": int}
    max_tokens: int
    end_id: int | None
    stream: bool
    apply_chat_template: bool
    warmup_requests: int
    max_requests: int
    request_rate: float | None  # total requests/s; None = closed loop (one per user)
    duration_s: int  # measured phase, from the end of the warm-up
    request_timeout_s: float
    records_path: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> StepSpec:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
