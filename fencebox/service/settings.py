"""Service configuration: one YAML file listing routes, with environment overrides (pydantic-settings).

Precedence, highest first: explicit arguments (the CLI's ``--host``/``--port``), environment
variables (``FENCEBOX_PORT=9000``, nested with ``__``: ``FENCEBOX_RATE_LIMIT__ENABLED=true``), the
YAML file, then the defaults.  With no file the service serves the built-in MNIST model as the
route ``mnist`` behind the ``fencebox-default`` chain on 127.0.0.1:8000.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from fencebox.errors import ConfigError

Policy = Literal["label", "topk", "rounded", "scores"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    """Where a route's model runs: ``local`` (a fencebox model reference) or ``upstream`` (a V2 server)."""

    kind: Literal["local", "upstream"] = "local"
    protocol: Literal["http", "grpc"] = Field(
        default="http",
        description="upstream: the Open Inference Protocol flavour to speak (grpc needs the grpc extra)",
    )
    model: str = Field(
        default="builtin:mnist", description="local: a model reference for fencebox.models.load_model"
    )
    url: str | None = Field(
        default=None,
        description="upstream: base URL of a V2 (KServe/Triton) server (grpc: host:port or grpc://host:port)",
    )
    upstream_model: str | None = Field(
        default=None, description="upstream: the model's name there (default: route)"
    )
    input_name: str = "input"
    output_name: str | None = Field(
        default=None, description="upstream: output tensor to read (default: first)"
    )
    datatype: Literal["UINT8", "FP32"] = Field(
        default="FP32", description="upstream: tensor type sent (FP32 in [0,1])"
    )
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    outputs: Literal["logits", "probabilities"] = "logits"
    input_shape: tuple[int, int, int] | None = Field(
        default=None, description="upstream: (H, W, C) the model expects"
    )
    class_names: list[str] | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> BackendConfig:
        if self.kind == "upstream":
            if not self.url:
                raise ValueError("an upstream backend needs 'url' (e.g. http://127.0.0.1:8080)")
            if self.protocol == "grpc" and "://" in self.url.removeprefix("grpc://"):
                raise ValueError(f"a grpc upstream's url is host:port or grpc://host:port, got {self.url!r}")
            if self.input_shape is None:
                raise ValueError("an upstream backend needs 'input_shape': [H, W, C] of the upstream model")
            if self.input_shape[2] not in (1, 3) or min(self.input_shape) < 1:
                raise ValueError(
                    f"input_shape must be [H, W, C] with C in (1, 3), got {list(self.input_shape)}"
                )
        return self


class LimitsConfig(_Strict):
    """Per-route limits on untrusted input, on work and on time (see docs/service.md, "Limits")."""

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="encoded image bodies (v1)")
    max_v2_body_bytes: int | None = Field(
        default=None,
        ge=1,
        description="V2 bodies; default: max_images x the input tensor, with headroom for JSON text",
    )
    max_pixels: int = Field(default=4096 * 4096, ge=1, description="decoded pixels (a 12 Mpx photo fits)")
    max_side: int = Field(default=16384, ge=1)
    max_frames: int = Field(default=100, ge=1, description="frames of an animation (counted up to this)")
    max_images: int = Field(default=64, ge=1, description="most images in one V2 request")
    max_chain_cost: float = Field(
        default=1e9, gt=0, description="most pixel-operations (Transform.cost) a chain may cost per request"
    )
    max_output_pixels: int = Field(
        default=4096 * 4096, ge=1, description="most pixels per image a chain may produce"
    )
    max_in_flight: int = Field(
        default=64, ge=1, description="requests admitted at once; beyond it 503 before reading the body"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="deadline for one request (504 past it)")
    read_timeout_s: float = Field(default=30.0, gt=0, description="time to receive the body (408 past it)")
    animated: Literal["first", "refuse"] = "first"


class BatchingConfig(_Strict):
    """Micro-batching of model calls: group up to max_batch images, waiting at most max_delay_ms."""

    max_batch: int = Field(default=32, ge=1, description="1 disables batching")
    max_delay_ms: float = Field(default=2.0, ge=0)
    max_queue: int = Field(default=256, ge=1, description="images waiting; beyond it requests get 503")
    workers: int = Field(default=1, ge=1, description="batches in flight at once")


class RouteConfig(_Strict):
    """One model route: name, backend, chain, output policy, limits and batching."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    backend: BackendConfig = Field(default_factory=lambda: BackendConfig())
    chain: str | dict[str, Any] | list[Any] = "fencebox-default"
    allow_chain_override: bool = False
    policy: Policy = "label"
    topk: int = Field(default=5, ge=1)
    resize: bool = Field(
        default=True, description="resize images to the model's input size; false: refuse them"
    )
    background: tuple[int, int, int] = Field(
        default=(255, 255, 255), description="colour transparency composites onto"
    )
    limits: LimitsConfig = Field(default_factory=lambda: LimitsConfig())
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig())

    @model_validator(mode="after")
    def _check_queue(self) -> RouteConfig:
        if self.limits.max_images > self.batching.max_queue:
            raise ValueError(
                f"limits.max_images ({self.limits.max_images}) exceeds batching.max_queue "
                f"({self.batching.max_queue}): such a request could never be queued"
            )
        return self


class RateLimitConfig(_Strict):
    """Per-key query budget: a token bucket of ``burst`` tokens refilled at ``rate_per_s``."""

    enabled: bool = False
    rate_per_s: float = Field(default=10.0, gt=0)
    burst: float = Field(default=100.0, ge=1)
    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory: per replica; redis: one budget shared by every replica"
    )
    redis_url: str | None = Field(
        default=None, description="redis backend: e.g. redis://redis:6379/0 (rediss:// for TLS)"
    )
    fail: Literal["closed", "open"] = Field(
        default="closed",
        description="Redis unreachable: closed = refuse with 503; open = this replica's own bucket",
    )
    key_prefix: str = Field(default="fencebox:budget:", description="prefix of the buckets' Redis keys")
    redis_timeout_s: float = Field(
        default=0.25, gt=0, description="connect and read timeout of one charge (it blocks the request)"
    )
    retry_s: float = Field(
        default=1.0, ge=0, description="after a Redis failure, answer per 'fail' this long before retrying"
    )

    @model_validator(mode="after")
    def _check_backend(self) -> RateLimitConfig:
        if self.backend == "redis":
            if not self.redis_url:
                raise ValueError("rate_limit.backend 'redis' needs 'redis_url' (e.g. redis://redis:6379/0)")
            scheme = self.redis_url.split("://", 1)[0]
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(
                    f"rate_limit.redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
                )
        return self


def default_routes() -> list[RouteConfig]:
    """The built-in route: ``mnist`` = builtin:mnist behind fencebox-default."""
    return [RouteConfig(name="mnist", backend=BackendConfig(kind="local", model="builtin:mnist"))]


class Settings(BaseSettings):
    """Everything ``fencebox serve`` needs; see docs/service.md for the full reference."""

    model_config = SettingsConfigDict(env_prefix="FENCEBOX_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="also serve the Open Inference Protocol over gRPC on this port (null: off; needs the grpc extra)",
    )
    routes: list[RouteConfig] = Field(default_factory=default_routes)
    default_route: str | None = None
    api_keys: list[SecretStr] = Field(default_factory=list)
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig())
    threads: int = Field(default=4, ge=1, description="worker threads for decoding and chains")
    model_threads: int = Field(default=2, ge=1, description="worker threads for local models (own pool)")
    parse_processes: int = Field(
        default=2, ge=0, description="processes parsing large V2 bodies off the GIL (0: threads only)"
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="proxies whose X-Forwarded-For/-Proto are trusted (default: none, not even loopback)",
    )
    torch_threads: int | None = Field(
        default=1, ge=1, description="torch intra-op threads while serving (null: torch's default)"
    )
    gil_switch_ms: float | None = Field(
        default=1.0,
        gt=0,
        le=100,
        description=(
            "Python's GIL switch interval while serving, in ms (null: Python's 5 ms). The event loop "
            "shares the GIL with the decode/chain/model threads; a shorter interval bounds how long it "
            "waits for them, which keeps refusals and health checks fast under overload"
        ),
    )
    log_level: str = "info"
    reports_dir: Path | None = Field(
        default=None, description="folder of evaluation reports the /ui/reports page may open by name"
    )

    @model_validator(mode="after")
    def _check_routes(self) -> Settings:
        if not self.routes:
            raise ValueError("at least one route is needed")
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique; repeated: {', '.join(dupes)}")
        if self.default_route is not None and self.default_route not in names:
            raise ValueError(f"default_route {self.default_route!r} is not one of the routes {names}")
        return self

    @property
    def default(self) -> RouteConfig:
        """The route used when a request names none."""
        name = self.default_route or self.routes[0].name
        return next(r for r in self.routes if r.name == name)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then environment, then the YAML file (when one is configured)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from an optional YAML file, the environment and explicit overrides.

    Raises ConfigError naming the file and the offending field when the configuration is invalid.
    """
    import yaml
    from pydantic import ValidationError

    cls: type[Settings] = Settings
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": path}}
        )
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(config)!r} is not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(config)!r} is not UTF-8 text (a YAML file expected)") from None
    except ValidationError as exc:
        where = f" in {config}" if config is not None else ""
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(f"invalid service configuration{where}:\n" + "\n".join(lines)) from None
