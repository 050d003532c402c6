"""Settings: the shipped TOML file, the environment, and clear refusals."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic
import pytest

from gateway.settings import (
    Settings,
    SettingsError,
    default_config_file,
    load_settings,
)

if TYPE_CHECKING:
    from conftest import Mailgate, MailgateProcess

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def plain_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No MAILGATE_ variable at all, not even the test's data directory."""
    monkeypatch.delenv("MAILGATE_STORE_DATA_DIR")
    monkeypatch.delenv("MAILGATE_LOG_LEVEL")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailgate.toml"
    path.write_text(text, encoding="utf-8")

    return path


def test_the_default_file_is_the_one_shipped_in_config() -> None:
    """Without --config or MAILGATE_CONFIG, config/mailgate.toml is read."""
    assert default_config_file() == REPOSITORY / "config" / "mailgate.toml"


@pytest.mark.usefixtures("plain_environment")
def test_defaults_are_those_of_the_shipped_file() -> None:
    """Every store, crm and log value is the one the TOML file gives."""
    shipped = tomllib.loads(default_config_file().read_text("utf-8"))

    settings = load_settings()

    assert settings.store.data_dir == Path(shipped["store"]["data_dir"])
    assert (
        settings.store.busy_timeout_ms == shipped["store"]["busy_timeout_ms"]
    )
    assert settings.crm.natures == tuple(shipped["crm"]["natures"])
    assert settings.log.level == shipped["log"]["level"]
    assert settings.log.format == shipped["log"]["format"]


@pytest.mark.usefixtures("plain_environment")
def test_a_file_named_by_mailgate_config_is_read_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAILGATE_CONFIG names the file; sections it omits keep defaults."""
    path = _config(
        tmp_path, '[store]\ndata_dir = "/srv/mail"\nbusy_timeout_ms = 5\n'
    )
    monkeypatch.setenv("MAILGATE_CONFIG", str(path))

    settings = load_settings()

    assert settings.store.data_dir == Path("/srv/mail")
    assert settings.store.busy_timeout_ms == 5
    assert settings.log.level == "info"


@pytest.mark.usefixtures("plain_environment")
def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAILGATE_STORE_DATA_DIR and MAILGATE_LOG_LEVEL win over the file."""
    path = _config(
        tmp_path,
        '[store]\ndata_dir = "/srv/mail"\nbusy_timeout_ms = 5\n'
        '[log]\nlevel = "error"\nformat = "json"\n',
    )
    monkeypatch.setenv("MAILGATE_STORE_DATA_DIR", "/var/other")
    monkeypatch.setenv("MAILGATE_LOG_LEVEL", "debug")

    settings = load_settings(path)

    assert settings.store.data_dir == Path("/var/other")
    assert settings.log.level == "debug"
    # What the environment does not name still comes from the file.
    assert settings.store.busy_timeout_ms == 5
    assert settings.log.format == "json"


def test_natures_set_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """A list is given in the environment as JSON."""
    monkeypatch.setenv("MAILGATE_CRM_NATURES", '["rumour", "spam"]')

    assert load_settings().crm.natures == ("rumour", "spam")


def test_settings_are_immutable(settings: Settings) -> None:
    """Once loaded, no setting can be changed."""
    with pytest.raises(pydantic.ValidationError):
        settings.store.busy_timeout_ms = 1  # type: ignore[misc]


def test_the_data_directory_of_the_environment_is_used(
    mailgate: Mailgate, data_dir: Path
) -> None:
    """A command creates its store where MAILGATE_STORE_DATA_DIR says."""
    mailgate("contact", "list")

    assert (data_dir / "mailgate.sqlite3").is_file()


def test_the_config_option_names_the_file(
    mailgate: Mailgate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
) -> None:
    """mailgate --config FILE reads that file."""
    monkeypatch.delenv("MAILGATE_STORE_DATA_DIR")
    elsewhere = tmp_path / "elsewhere"
    path = _config(tmp_path, f'[store]\ndata_dir = "{elsewhere}"\n')

    mailgate("--config", str(path), "contact", "list")

    assert (elsewhere / "mailgate.sqlite3").is_file()
    assert not data_dir.exists()


def test_configured_natures_are_the_ones_events_accept(
    mailgate: Mailgate, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """--nature takes the configured words and refuses the others."""
    monkeypatch.setenv("MAILGATE_CRM_NATURES", '["rumour"]')
    mailgate("org", "add", "Ours", "--domain", "ours.example", "--internal")
    mailgate("contact", "add", "me@ours.example", "--name", "Me")
    new = (
        "event",
        "new",
        "note",
        "--from",
        "me@ours.example",
        "--to",
        "you@theirs.example",
        "--title",
        "Heard",
    )

    made = mailgate(
        *new, "--nature", "rumour", "--json", actor="me@ours.example"
    )
    refused = mailgate(
        *new, "--nature", "spam", actor="me@ours.example", ok=False
    )

    assert made.json()["nature"] == "rumour"
    assert refused.exit_code != 0
    assert "unknown nature 'spam'; expected one of: rumour" in refused.error


WRONG = [
    pytest.param(
        {"MAILGATE_STORE_BUSY_TIMEOUT_MS": "soon"},
        None,
        "setting store.busy_timeout_ms: Input should be a valid integer",
        id="environment-bad-type",
    ),
    pytest.param(
        {},
        '[store]\nbusy_timeout_ms = "soon"\n',
        "setting store.busy_timeout_ms: Input should be a valid integer",
        id="file-bad-type",
    ),
    pytest.param(
        {},
        "[store]\nbusy_timeout_ms = -1\n",
        "setting store.busy_timeout_ms: Input should be greater than or "
        "equal to 0",
        id="file-out-of-range",
    ),
    pytest.param(
        {},
        '[store]\ncolour = "blue"\n',
        "setting store.colour: unknown setting",
        id="file-unknown-key",
    ),
    pytest.param(
        {},
        '[stroe]\ndata_dir = "/srv"\n',
        "setting stroe: unknown setting",
        id="file-unknown-section",
    ),
    pytest.param(
        {},
        '[crm]\nnatures = ["Bad Nature"]\n',
        "setting crm.natures: Value error, 'Bad Nature' is not lower-case "
        "words joined by hyphens",
        id="file-bad-nature",
    ),
    pytest.param(
        {"MAILGATE_CRM_NATURES": '["spam", "ham_and_eggs"]'},
        None,
        "setting crm.natures: Value error, 'ham_and_eggs' is not",
        id="environment-bad-nature",
    ),
    pytest.param(
        {"MAILGATE_CRM_NATURES": "complaint"},
        None,
        "setting crm: MAILGATE_CRM_NATURES is not valid JSON",
        id="environment-list-not-json",
    ),
    pytest.param(
        {"MAILGATE_LOG_LEVEL": "loud"},
        None,
        "setting log.level: String should match pattern",
        id="environment-bad-level",
    ),
    pytest.param(
        {"MAILGATE_STORE_DATA_DIR": "/etc/passwd"},
        None,
        "setting store.data_dir: Value error, '/etc/passwd' exists and "
        "is not a folder",
        id="environment-data-dir-is-a-file",
    ),
    pytest.param(
        {},
        "[store\n",
        "mailgate.toml: Expected ']'",
        id="file-syntax",
    ),
    pytest.param(
        {
            "MAILGATE_SUBMISSION_ENABLED": "true",
            "MAILGATE_SUBMISSION_TLS_CERT_FILE": "/nonexistent/cert.pem",
            "MAILGATE_SUBMISSION_TLS_KEY_FILE": "/nonexistent/key.pem",
        },
        None,
        "setting submission.tls_cert_file: Value error, expected a readable "
        "file; '/nonexistent/cert.pem' is missing",
        id="environment-missing-certificate",
    ),
    pytest.param(
        {"MAILGATE_SUBMISSION_TLS_KEY_FILE": "/"},
        '[submission]\ntls_cert_file = "/etc/passwd"\n',
        "setting submission.tls_key_file: Value error, expected a readable "
        "file; '/' is not a file",
        id="file-key-is-a-folder",
    ),
    pytest.param(
        {"MAILGATE_OUTBOX_TLS_CA_FILE": "/nonexistent/ca.pem"},
        None,
        "setting outbox.tls_ca_file: Value error, expected a readable file",
        id="environment-missing-authorities",
    ),
    pytest.param(
        {},
        "[[imap.mailboxes]]\n"
        'name = "support"\n'
        'host = "imap.example.com"\n'
        'user = "support@example.com"\n'
        'password_file = "/nonexistent/support.password"\n'
        'address = "support@example.com"\n',
        "setting imap.mailboxes.0.password_file: Value error, expected a "
        "readable file; '/nonexistent/support.password' is missing",
        id="file-missing-password-file",
    ),
]


@pytest.mark.parametrize(("environment", "text", "expected"), WRONG)
def test_a_wrong_setting_stops_mailgate_with_one_line(
    mailgate: Mailgate,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    environment: dict[str, str],
    text: str | None,
    expected: str,
) -> None:
    """Exit non-zero, nothing on stdout, one line naming the setting."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if text is not None:
        monkeypatch.setenv("MAILGATE_CONFIG", str(_config(tmp_path, text)))

    stopped = mailgate("contact", "list", ok=False)

    assert stopped.exit_code != 0
    assert stopped.stdout == ""
    assert len(stopped.error.splitlines()) == 1
    assert stopped.error.startswith("Error: ")
    assert expected in stopped.error


def test_serve_names_a_missing_certificate_file(
    mailgate_process: MailgateProcess,
) -> None:
    """The tester's command: one line naming the setting, not an OSError."""
    stopped = mailgate_process(
        "serve",
        env={
            "MAILGATE_SUBMISSION_ENABLED": "true",
            "MAILGATE_SUBMISSION_TLS_CERT_FILE": "/nonexistent",
            "MAILGATE_SUBMISSION_TLS_KEY_FILE": "/nonexistent",
        },
    )

    assert stopped.returncode == 1
    assert stopped.stderr.strip().splitlines() == [
        "Error: setting submission.tls_cert_file: Value error, expected a "
        "readable file; '/nonexistent' is missing (got '/nonexistent')"
    ]


def test_a_missing_configuration_file_is_named(
    mailgate: Mailgate, tmp_path: Path
) -> None:
    """--config naming no file says so, on one line."""
    stopped = mailgate(
        "--config", str(tmp_path / "nowhere.toml"), "contact", "list", ok=False
    )

    assert stopped.exit_code != 0
    assert stopped.error == (
        f"Error: configuration file {tmp_path / 'nowhere.toml'}: not found "
        "or not a file"
    )


def test_load_settings_raises_settings_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library call raises SettingsError, never a pydantic error."""
    monkeypatch.setenv("MAILGATE_LOG_FORMAT", "xml")

    with pytest.raises(SettingsError, match=r"^setting log\.format: "):
        load_settings()


def test_the_console_script_stops_on_a_wrong_setting(
    mailgate_process: MailgateProcess,
) -> None:
    """python -m gateway: exit 1 and one line on stderr, no traceback."""
    stopped = mailgate_process(
        "contact", "list", env={"MAILGATE_STORE_BUSY_TIMEOUT_MS": "soon"}
    )

    assert stopped.returncode == 1
    assert stopped.stdout == ""
    assert stopped.stderr.strip().splitlines() == [
        "Error: setting store.busy_timeout_ms: Input should be a valid "
        "integer, unable to parse string as an integer (got 'soon')"
    ]
