"""The log redaction filter masks secret-looking values."""

from __future__ import annotations

import logging

from trader.logging import RedactSecretsFilter, redact


def test_redact_masks_query_string_signature_and_json_secret():
    text = 'GET /fapi/v1/order?symbol=BTCUSDT&signature=abc123def {"api_secret": "s3cr3t"}'
    out = redact(text)
    assert "abc123def" not in out
    assert "s3cr3t" not in out
    assert "symbol=BTCUSDT" in out
    assert "signature=****" in out


def test_redact_masks_password_in_url():
    assert redact("redis://:hunter2@redis:6379/0") == "redis://:****@redis:6379/0"
    assert redact("postgres://app:hunter2@db/x") == "postgres://app:****@db/x"


def test_filter_rewrites_a_record_with_args():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", ("api_key=AKIA123",), None)
    assert RedactSecretsFilter().filter(record) is True
    assert record.getMessage() == "key api_key=****"


def test_filter_leaves_ordinary_records_alone():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "filled %s", ("BTCUSDT",), None)
    RedactSecretsFilter().filter(record)
    assert record.msg == "filled %s"
    assert record.args == ("BTCUSDT",)
