"""Settings: one typed, immutable object read from TOML and the environment.

The file is ``config/mailgate.toml`` unless ``--config`` or
``MAILGATE_CONFIG`` names another; ``MAILGATE_<SECTION>_<KEY>`` environment
variables override it. A wrong setting raises SettingsError with one line
naming the setting and what it expects.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENVIRONMENT_VARIABLE = "MAILGATE_CONFIG"

_WORD = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class SettingsError(Exception):
    """A setting is missing, unknown or of the wrong form."""


class Section(BaseModel):
    """Common rules of every section: immutable, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreSettings(Section):
    """Where and how the event store keeps its data."""

    data_dir: Path = Path("var/mailgate")
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 10_000


class CrmSettings(Section):
    """The vocabulary of the CRM: natures of events."""

    natures: tuple[str, ...] = (
        "complaint",
        "announcement",
        "advertisement",
        "information",
        "inquiry",
        "spam",
    )

    @field_validator("natures")
    @classmethod
    def _words(cls, natures: tuple[str, ...]) -> tuple[str, ...]:
        """Check that every nature is a lower-case hyphenated word."""
        for nature in natures:
            if not _WORD.match(nature):
                raise ValueError(
                    f"{nature!r} is not lower-case words joined by hyphens"
                )

        return natures


class SmtpSettings(Section):
    """The inbound listener that mail servers relay our mail to."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2525
    lmtp_enabled: bool = False
    lmtp_port: Annotated[int, Field(ge=0, le=65535)] = 2424
    # The name we give in the greeting and Received fields; empty: the
    # machine's fully qualified name.
    hostname: str = ""
    max_message_bytes: Annotated[int, Field(ge=1024)] = 26_214_400
    # Longest line accepted in DATA, in octets (RFC 5321 4.5.3.1.6 asks
    # for 1000 at least; many real messages exceed it).
    max_line_bytes: Annotated[int, Field(ge=1001)] = 1_048_576
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    # How long shutdown waits for messages being stored.
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0


class LogSettings(Section):
    """How the structured log is written."""

    level: Annotated[str, Field(pattern=r"^(debug|info|warning|error)$")] = (
        "info"
    )
    format: Annotated[str, Field(pattern=r"^(console|json)$")] = "console"


class Settings(BaseSettings):
    """Every setting of mailgate, validated at start-up."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="MAILGATE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        case_sensitive=False,
    )

    store: StoreSettings = StoreSettings()
    crm: CrmSettings = CrmSettings()
    smtp: SmtpSettings = SmtpSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read init values, then the environment, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
        ]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))

        return tuple(sources)


def default_config_file() -> Path:
    """Return the path of the configuration shipped with mailgate."""
    return Path(str(resources.files("config").joinpath("mailgate.toml")))


def load_settings(config_file: Path | None = None) -> Settings:
    """Load and validate the settings; raise SettingsError on a bad one."""
    if config_file is None:
        named = os.environ.get(CONFIG_ENVIRONMENT_VARIABLE)
        config_file = Path(named) if named else default_config_file()
    if not config_file.is_file():
        raise SettingsError(
            f"configuration file {config_file}: not found or not a file"
        )

    from_file = type(
        "Settings",
        (Settings,),
        {"model_config": {**Settings.model_config, "toml_file": config_file}},
    )
    try:
        loaded: Settings = from_file()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
    except ValueError as error:  # a TOML syntax error
        raise SettingsError(
            f"configuration file {config_file}: {error}"
        ) from None

    return loaded


def _describe(error: ValidationError) -> str:
    """Turn the first validation failure into one line for an operator."""
    first = error.errors()[0]
    setting = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown setting"

    return f"setting {setting}: {message} (got {first.get('input')!r})"
