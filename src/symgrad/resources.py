"""Where the Jinja2 templates live, installed or in a checkout.

Contract: :func:`environment` returns a Jinja2 environment over the
templates shipped inside the wheel (``symgrad/templates``) or, in a source
checkout, the repository's ``templates/`` folder.  Rendering is
deterministic: no dates, no absolute paths.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    """The folder holding the templates."""
    installed = Path(__file__).with_name("templates")
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("symgrad's templates are missing from this installation")


@lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The shared Jinja2 environment (strict about undefined names)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
