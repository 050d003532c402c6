"""Settings: one typed, immutable object read from TOML and the environment.

The file is ``config/mailgate.toml`` unless ``--config`` or
``MAILGATE_CONFIG`` names another; ``MAILGATE_<SECTION>_<KEY>`` environment
variables override it. A wrong setting raises SettingsError with one line
naming the setting and what it expects.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

from gateway.addresses import InvalidAddress, normalize_address

CONFIG_ENVIRONMENT_VARIABLE = "MAILGATE_CONFIG"

# MAILGATE_* variables that are not settings: the configuration file, the
# acting person of the CLI, and the test suite's switches.
OTHER_ENVIRONMENT_VARIABLES = frozenset(
    {
        CONFIG_ENVIRONMENT_VARIABLE,
        "MAILGATE_USER",
        "MAILGATE_CASES_DIR",
        "MAILGATE_REQUIRE_CASES",
        "MAILGATE_REQUIRE_DOVECOT",
    }
)

_WORD = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class SettingsError(Exception):
    """A setting is missing, unknown or of the wrong form."""


def _readable_file(path: Path) -> Path:
    """Check that a configured file exists and can be read now.

    A file named in the settings (a certificate, a password) is read
    later, at the first connection: a wrong path found then would name
    neither the file nor the setting.

    Limitation: the check runs wherever the settings are loaded, the CLI
    included, and in sections that are switched off: a person who may not
    read a configured secret runs the CLI as the gateway's own user, or
    with a configuration of its own. Checking only in ``serve`` would need
    the settings loaded in two ways.
    """
    if not path.exists():
        raise ValueError(f"expected a readable file; {str(path)!r} is missing")
    if not path.is_file():
        raise ValueError(
            f"expected a readable file; {str(path)!r} is not a file"
        )
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ValueError(
            f"expected a readable file; cannot read {str(path)!r}: "
            f"{error.strerror or error}"
        ) from None

    return path


# A file that must exist and be readable when the settings are loaded.
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


class Section(BaseModel):
    """Common rules of every section: immutable, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreSettings(Section):
    """Where and how the event store keeps its data."""

    data_dir: Path = Path("var/mailgate")
    busy_timeout_ms: Annotated[int, Field(ge=0, le=600_000)] = 10_000

    @field_validator("data_dir")
    @classmethod
    def _not_a_file(cls, data_dir: Path) -> Path:
        """Refuse a path that exists and is not a directory.

        A missing directory is fine: the store creates it on first use.
        """
        if data_dir.exists() and not data_dir.is_dir():
            raise ValueError(f"{str(data_dir)!r} exists and is not a folder")

        return data_dir


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


class ImapMailboxSettings(Section):
    """One mailbox on an IMAP server that the poller takes mail from.

    Exactly one of ``password``, ``password_file`` and ``password_env``
    gives the password; it is read again at each login.

    Limitation: folder names must be ASCII. Others travel in modified
    UTF-7 (RFC 3501 5.1.3), which neither aioimaplib nor the standard
    library encodes; they are refused here rather than garbled.
    """

    name: Annotated[str, Field(pattern=_WORD.pattern)]
    host: Annotated[str, Field(min_length=1)]
    # 0: the protocol's port, 993 for implicit TLS and 143 otherwise.
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    # A PEM file of the authorities to trust instead of the system's.
    tls_ca_file: ReadableFile | None = None
    user: Annotated[str, Field(min_length=1)]
    password: SecretStr | None = None
    password_file: ReadableFile | None = None
    password_env: str | None = None
    folder: Annotated[str, Field(min_length=1)] = "INBOX"
    # Our address the messages were delivered to.
    address: str
    department: str = ""
    after_store: Literal["leave", "seen", "move", "delete"] = "leave"
    move_to: str | None = None
    poll_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # RFC 2177 asks clients to renew IDLE at least every 29 minutes.
    idle_renew_seconds: Annotated[float, Field(gt=0, le=1740)] = 1500.0
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 50
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    reconnect_max_seconds: Annotated[float, Field(gt=0)] = 300.0

    @field_validator("folder", "move_to")
    @classmethod
    def _ascii_folder(cls, folder: str | None) -> str | None:
        """Check that a folder name can be sent as it is."""
        if folder is not None and not (
            folder.isascii() and folder.isprintable()
        ):
            raise ValueError(
                f"{folder!r}: only printable ASCII folder names are supported"
            )

        return folder

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        """Check the address and give it its canonical spelling."""
        try:
            return normalize_address(address)
        except InvalidAddress as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _consistent(self) -> ImapMailboxSettings:
        """Check the settings that depend on each other."""
        sources = [
            self.password is not None,
            self.password_file is not None,
            self.password_env is not None,
        ]
        if sum(sources) != 1:
            raise ValueError(
                "give exactly one of password, password_file, password_env"
            )
        if self.tls == "none" and not _loopback(self.host):
            raise ValueError(
                f'tls = "none" is only allowed for a loopback host, '
                f"not {self.host!r}: use implicit or starttls"
            )
        if self.after_store == "move" and not self.move_to:
            raise ValueError('after_store = "move" needs move_to')
        if self.move_to is not None and self.move_to == self.folder:
            raise ValueError("move_to must differ from folder")

        return self

    @property
    def server_port(self) -> int:
        """Return the port to connect to."""
        if self.port:
            return self.port

        return 993 if self.tls == "implicit" else 143

    def read_password(self) -> str:
        """Return the password from where the settings say it is.

        Raises SettingsError when its file or variable cannot be read.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as error:
                raise SettingsError(
                    f"imap mailbox {self.name}: cannot read password_file "
                    f"{self.password_file}: {error.strerror}"
                ) from None
            return text.rstrip("\r\n")

        value = os.environ.get(self.password_env or "")
        if value is None:
            raise SettingsError(
                f"imap mailbox {self.name}: environment variable "
                f"{self.password_env} is not set"
            )

        return value


class ImapSettings(Section):
    """The IMAP mailboxes that ``mailgate serve`` polls."""

    mailboxes: tuple[ImapMailboxSettings, ...] = ()

    @field_validator("mailboxes")
    @classmethod
    def _unique(
        cls, mailboxes: tuple[ImapMailboxSettings, ...]
    ) -> tuple[ImapMailboxSettings, ...]:
        """Check that no two mailboxes share a name."""
        names = [mailbox.name for mailbox in mailboxes]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two mailboxes are named {name!r}")

        return mailboxes

    def mailbox(self, name: str) -> ImapMailboxSettings:
        """Return the mailbox of that name; KeyError if there is none."""
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox

        raise KeyError(name)


def _loopback(host: str) -> bool:
    """Return whether host names this machine (no DNS lookup is made)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SubmissionSettings(Section):
    """The SMTP submission listener where our staff send mail (RFC 6409).

    Staff log in with SMTP AUTH, only over TLS (STARTTLS, or implicit TLS
    on this port) unless ``allow_plain_loopback`` lets a peer on this
    machine log in without it.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2587
    # True: TLS from the first octet (RFC 8314 3.3); false: STARTTLS.
    implicit_tls: bool = False
    tls_cert_file: ReadableFile | None = None
    tls_key_file: ReadableFile | None = None
    allow_plain_loopback: bool = False
    # The name in the greeting; empty: this machine's.
    hostname: str = ""
    max_message_bytes: Annotated[int, Field(ge=1024)] = 26_214_400
    max_line_bytes: Annotated[int, Field(ge=1001)] = 1_048_576
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0
    # Addresses of persons, or names of departments, whose mail starts
    # confirmed instead of waiting for a manager.
    confirm_without_review: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _tls(self) -> SubmissionSettings:
        """Check that the TLS settings make a whole."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file")
        if self.implicit_tls and self.tls_cert_file is None:
            raise ValueError("implicit_tls needs tls_cert_file and key")

        return self


class OutboxSettings(Section):
    """The outbox worker: confirmed mail goes to the smart host.

    With no ``smart_host`` the outbox stays idle and nothing is sent.
    """

    enabled: bool = True
    smart_host: str = ""
    # 0: the protocol's port, 465 for implicit TLS, 587 for STARTTLS and
    # 25 without TLS.
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    # A PEM file of the authorities to trust instead of the system's.
    tls_ca_file: ReadableFile | None = None
    username: str = ""
    password: SecretStr | None = None
    # The name we give in EHLO; empty: this machine's.
    hostname: str = ""
    # The domain of the VERP envelope sender (bounces+evt-42@domain);
    # empty: the sender's own domain. It must be a domain of ours.
    bounce_domain: str = ""
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 50
    poll_interval_seconds: Annotated[float, Field(gt=0)] = 5.0
    # How long a worker holds an event it sends; must exceed one send.
    lease_seconds: Annotated[float, Field(gt=0)] = 600.0
    max_attempts: Annotated[int, Field(ge=1)] = 10
    retry_initial_seconds: Annotated[float, Field(ge=0)] = 60.0
    retry_max_seconds: Annotated[float, Field(ge=0)] = 14_400.0
    retry_jitter_seconds: Annotated[float, Field(ge=0)] = 30.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("bounce_domain")
    @classmethod
    def _domain(cls, domain: str) -> str:
        """Check the bounce domain and give it its canonical spelling."""
        if not domain:
            return domain
        try:
            return normalize_address(f"bounces@{domain}").rpartition("@")[2]
        except InvalidAddress:
            raise ValueError(f"{domain!r} is not a mail domain") from None

    @model_validator(mode="after")
    def _consistent(self) -> OutboxSettings:
        """Check the settings that depend on each other."""
        remote = self.smart_host and not _loopback(self.smart_host)
        if self.tls == "none" and remote:
            raise ValueError(
                f'tls = "none" is only allowed for a loopback smart host, '
                f"not {self.smart_host!r}"
            )
        if bool(self.username) != (self.password is not None):
            raise ValueError("give both username and password, or neither")

        return self

    @property
    def server_port(self) -> int:
        """Return the smart host's port."""
        if self.port:
            return self.port

        return {"implicit": 465, "starttls": 587, "none": 25}[self.tls]


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
    imap: ImapSettings = ImapSettings()
    submission: SubmissionSettings = SubmissionSettings()
    outbox: OutboxSettings = OutboxSettings()
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
    _check_environment_names()

    from_file = type(
        "Settings",
        (Settings,),
        {"model_config": {**Settings.model_config, "toml_file": config_file}},
    )
    try:
        loaded: Settings = from_file()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
    except SourceError as error:
        raise SettingsError(_describe_environment(error)) from None
    except ValueError as error:  # a TOML syntax error
        raise SettingsError(
            f"configuration file {config_file}: {error}"
        ) from None

    return loaded


def _check_environment_names() -> None:
    """Refuse a MAILGATE_* variable that names no section (a typo).

    pydantic-settings reports unknown keys inside a known section, but
    silently ignores a variable whose section does not exist.
    """
    sections = set(Settings.model_fields)
    for name in sorted(os.environ):
        if not name.upper().startswith("MAILGATE_"):
            continue
        if name.upper() in OTHER_ENVIRONMENT_VARIABLES:
            continue
        section = name[len("MAILGATE_") :].split("_", 1)[0].lower()
        if section not in sections:
            raise SettingsError(
                f"environment variable {name}: names no setting (sections: "
                f"{', '.join(sorted(sections))})"
            )


def _describe_environment(error: SourceError) -> str:
    """Name the environment variable whose list or table is not JSON.

    pydantic-settings reads such values as JSON and, when one does not
    parse, names only the section it belongs to.
    """
    found = re.search(r'field "([^"]+)"', str(error))
    section = found.group(1) if found else ""
    prefix = f"MAILGATE_{section}".upper()
    names = [
        name
        for name, value in sorted(os.environ.items())
        if f"{name.upper()}_".startswith(f"{prefix}_") and not _is_json(value)
    ]
    shown = ", ".join(names) or "the environment"

    return (
        f"setting {section or '?'}: {shown} is not valid JSON, which a "
        'list or table set from the environment must be (e.g. ["a", "b"])'
    )


def _is_json(text: str) -> bool:
    """Return whether text parses as JSON."""
    try:
        json.loads(text)
    except ValueError:
        return False

    return True


def _describe(error: ValidationError) -> str:
    """Turn the first validation failure into one line for an operator."""
    first = error.errors()[0]
    setting = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown setting"

    return f"setting {setting}: {message} (got {_shown(first)!r})"


def _shown(failure: Any) -> Any:
    """Return the value that failed, with any password masked."""
    value = failure.get("input")
    if "password" in failure["loc"]:
        return "********"
    if isinstance(value, dict):
        return {
            key: "********" if key == "password" else item
            for key, item in value.items()
        }

    return value
