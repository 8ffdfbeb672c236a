"""A logging filter that masks secret-looking values, as a last line of defence.

Code must not log secrets in the first place; this catches what slips through (a query string
with ``signature=``, a payload dict with ``api_secret``, a broker URL with a password).
"""

from __future__ import annotations

import logging
import re

_SECRET_FIELD = re.compile(
    r"""(?ix)
    (?P<name>["']?[\w-]*(?:secret|signature|password|passwd|api[_-]?key|apikey|token)[\w-]*["']?)
    (?P<sep>\s*[:=]\s*["']?)
    (?P<value>[^\s"'&,;}\]]+)
    """
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I)


def redact(text: str) -> str:
    """Mask values of secret-named fields and passwords in URLs."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:****@", text)
    return _SECRET_FIELD.sub(r"\g<name>\g<sep>****", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
