"""Configuration: defaults, the environment (Crawlee's and logkv's variables), validation."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from pydantic import ValidationError

from logkv import Configuration, Durability, Recovery
from logkv.configuration import ENVIRONMENT
from logkv.errors import ConfigurationError
from logkv.modes import DEFAULT_SEGMENT_SIZE, Retention

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_defaults() -> None:
    config = Configuration()
    assert config.storage_dir == "./storage"
    assert config.default_key_value_store_id == "default"
    assert config.purge_on_start is True
    assert config.persist_state_interval == timedelta(minutes=1)
    assert config.durability is Durability.PROCESS
    assert config.segment_size == DEFAULT_SEGMENT_SIZE
    assert config.recovery is Recovery.STRICT
    assert config.retention is Retention.DELETE
    assert config.auto_compact is True
    assert 0 < config.compaction_min_dead_ratio <= 1
    assert config.offload_threshold == 1024 * 1024


def test_crawlee_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", "/data/crawl")
    monkeypatch.setenv("CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID", "main")
    monkeypatch.setenv("CRAWLEE_PURGE_ON_START", "false")
    monkeypatch.setenv("CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS", "1500")
    config = Configuration()
    assert config.storage_dir == "/data/crawl"
    assert config.default_key_value_store_id == "main"
    assert config.purge_on_start is False
    assert config.persist_state_interval == timedelta(milliseconds=1500)


def test_logkv_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGKV_DURABILITY", "fsync")
    monkeypatch.setenv("LOGKV_SEGMENT_SIZE", "1048576")
    monkeypatch.setenv("LOGKV_RECOVERY", "salvage")
    monkeypatch.setenv("LOGKV_RETENTION", "archive")
    monkeypatch.setenv("LOGKV_AUTO_COMPACT", "0")
    monkeypatch.setenv("LOGKV_COMPACTION_MIN_DEAD_RATIO", "0.25")
    monkeypatch.setenv("LOGKV_COMPACTION_MIN_DEAD_BYTES", "4096")
    monkeypatch.setenv("LOGKV_OFFLOAD_THRESHOLD", "1000")
    config = Configuration()
    assert config.durability is Durability.FSYNC
    assert config.segment_size == 1048576
    assert config.recovery is Recovery.SALVAGE
    assert config.retention is Retention.ARCHIVE
    assert config.auto_compact is False
    assert config.compaction_min_dead_ratio == 0.25
    assert config.compaction_min_dead_bytes == 4096
    assert config.offload_threshold == 1000


def test_every_field_has_a_variable() -> None:
    assert set(ENVIRONMENT) == set(Configuration.model_fields)


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", "/from/env")
    monkeypatch.setenv("LOGKV_DURABILITY", "fsync")
    config = Configuration(storage_dir="/from/argument", durability="process")
    assert config.storage_dir == "/from/argument"
    assert config.durability is Durability.PROCESS


def test_only_the_documented_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_DIR", "/not/this")
    monkeypatch.setenv("DURABILITY", "fsync")
    config = Configuration()
    assert config.storage_dir == "./storage"
    assert config.durability is Durability.PROCESS


def test_empty_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", "  ")
    monkeypatch.setenv("CRAWLEE_PURGE_ON_START", "")
    config = Configuration()
    assert config.storage_dir == "./storage"
    assert config.purge_on_start is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (250, timedelta(milliseconds=250)),
        (2.5, timedelta(microseconds=2500)),
        ("750", timedelta(milliseconds=750)),
        (timedelta(seconds=3), timedelta(seconds=3)),
    ],
)
def test_persist_state_interval_numbers_are_milliseconds(
    value: object, expected: timedelta
) -> None:
    assert Configuration(persist_state_interval=value).persist_state_interval == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("durability", "sometimes"),
        ("segment_size", 100),
        ("recovery", "hope"),
        ("compaction_min_dead_ratio", 0),
        ("compaction_min_dead_ratio", 1.5),
        ("compaction_min_dead_bytes", -1),
        ("persist_state_interval", 0),
        ("persist_state_interval", -5),
        ("persist_state_interval", "soon"),
        ("storage_dir", ""),
        ("default_key_value_store_id", ""),
        ("purge_on_start", "perhaps"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Configuration(**{field: value})


def test_invalid_environment_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGKV_SEGMENT_SIZE", "tiny")
    with pytest.raises(ConfigurationError, match="LOGKV_SEGMENT_SIZE='tiny'"):
        Configuration()


def test_a_bad_variable_is_named_with_its_value_and_the_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOGKV_DURABILITY", "fsnc")
    with pytest.raises(ConfigurationError) as raised:
        Configuration()
    message = str(raised.value)
    assert "LOGKV_DURABILITY='fsnc'" in message
    assert "'process' or 'fsync'" in message
    assert isinstance(raised.value, ValueError)  # what callers catching bad input expect
    # An argument overrides the variable, so the bad variable does not matter then.
    assert Configuration(durability="fsync").durability is Durability.FSYNC


def test_a_bad_argument_is_named_as_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGKV_SEGMENT_SIZE", "8192")
    with pytest.raises(ValidationError, match="durability"):
        Configuration(durability="fsnc")


def test_variable_names_are_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("logkv_durability", "fsync")
    assert Configuration().durability is Durability.PROCESS


def test_unknown_arguments_and_bad_assignments_are_refused() -> None:
    with pytest.raises(ValidationError, match="storag_dir"):
        Configuration(storag_dir="/typo")
    config = Configuration()
    config.segment_size = 8192
    assert config.segment_size == 8192
    with pytest.raises(ValidationError):
        config.segment_size = 10


def test_the_old_modes_module_name_still_imports_with_a_warning() -> None:
    old_module = importlib.import_module("logkv.options")
    with pytest.warns(DeprecationWarning, match="logkv.modes"):
        old = old_module.Retention
    assert old is Retention
    with pytest.raises(AttributeError):
        _ = old_module.no_such_name
