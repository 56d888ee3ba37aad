"""The one base class of bad input: what the command line reports in one line, with exit code 2.

Every error a user's input can cause (a spec, an expression, a data file, a
command-line value, a file given to ``verify``) derives from
:class:`BadInput`, so callers catch one class and never match names.

>>> from symgrad.spec import SpecError
>>> issubclass(SpecError, BadInput)
True
"""

from __future__ import annotations


class BadInput(ValueError):
    """Bad input from the user: its message is one line naming where and what is wrong."""
