"""The host's models file (``dagr up/host --models FILE``): aliases mapped to providers.

```toml
[models.fast]
provider = "openai"                 # any Chat Completions server: OpenAI, vLLM, Ollama, llama.cpp...
model = "gpt-4o-mini"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"      # the variable holding the key, in the host's environment
input_usd_per_mtok = 0.15           # prices, for budgets and `dagr status`
output_usd_per_mtok = 0.60
concurrency = 8                     # calls in flight per host to this provider (base URL)
timeout_s = 60
max_retries = 4                     # rate limits and outages, with backoff
max_output_tokens = 1024            # when the agent asks none

[models.smart]
provider = "anthropic"
model = "claude-sonnet-4-5"
api_key_env = "ANTHROPIC_API_KEY"
```

Agents name aliases (``grants.models = ["fast"]``), never providers or keys.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UsageError
from ._local import DEFAULT_LOCAL_MODEL

__all__ = ["DEFAULT_ALIASES", "ModelAlias", "ModelsConfig", "default_models", "load_models"]

Provider = Literal["openai", "anthropic", "local"]

_DEFAULT_URLS: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "local": "",
}


class ModelAlias(BaseModel):
    """One alias: which provider and model answer it, with what key, at what price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Provider
    model: str = Field(default="", description="the provider's name for the model")
    base_url: str = ""
    api_key_env: str | None = Field(default=None, description="environment variable holding the key")
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0, le=600)
    max_retries: int = Field(default=4, ge=0, le=10)
    max_output_tokens: int = Field(default=1024, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @property
    def url(self) -> str:
        return self.base_url or _DEFAULT_URLS[self.provider]

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok) / 1e6


class ModelsConfig(BaseModel):
    """Every alias this host serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelAlias] = Field(default_factory=dict)


#: The aliases a host serves when it is given no models file: the local model under each, so the
#: embedded default thinks with no internet and no account (``dagr-wasm[local-model]``).
DEFAULT_ALIASES = ("fast", "smart", "local")


def default_models() -> ModelsConfig:
    """What ``dagr up``, ``dagr host`` and ``dagr run`` serve without ``--models``."""
    local = ModelAlias(
        provider="local",
        model=DEFAULT_LOCAL_MODEL,
        # One call at a time on a small machine; a 135M model answers in about a second.
        concurrency=1,
        timeout_s=120,
        max_retries=1,
        max_output_tokens=256,
    )
    return ModelsConfig(models=dict.fromkeys(DEFAULT_ALIASES, local))


def load_models(path: Path) -> ModelsConfig:
    """The models file at ``path``; a ``UsageError`` saying what is wrong otherwise."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--models {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--models {path} is not TOML: {exc}") from None
    try:
        return ModelsConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise UsageError(
            f"--models {path}: {problems}",
        ) from None
