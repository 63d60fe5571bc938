"""moto's server with EC2 filter values matched the way AWS matches them.

Run with the `emulators` venv's python, with moto_server's arguments:

    python tests/emulators/moto_server.py -H 127.0.0.1 -p PORT

moto 5.2.5 matches EC2 filter values (`tag:KEY`, `tag-value`, `vpc-id`, ...) with Python's
`fnmatch`, where `[` and `]` make a character class: a lookup of
`tag:stacksmith:address=network.subnet.private[0]` finds nothing. AWS treats only `*` (any
sequence) and `?` (one character) as wildcards and `\\` as the escape of the next character
("a value of `\\*amazon\\?\\\\` searches for the literal string `*amazon?\\`", EC2 API reference,
Filter). This launcher replaces the two matching functions of `moto.ec2.utils` (and the copy
`moto.ec2.models.tags` imported) before the server starts; everything else is plain moto.
"""

import re
import sys
import types


def aws_filter_to_re(pattern: str) -> str:
    """An EC2 filter value as an anchored regular expression: `*`, `?` wildcards, `\\` escapes."""
    out = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            out.append(re.escape(escaped))
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "(?s:" + "".join(out) + r")\Z"


def aws_match(value: str, pattern: str) -> bool:
    """Whether `value` matches the EC2 filter value `pattern` (case-sensitive, like AWS)."""
    return re.match(aws_filter_to_re(pattern), value) is not None


def patch_moto() -> None:
    import moto.ec2.utils as utils

    # `is_filter_matching` calls `fnmatch.fnmatch(value, pattern)` through the module it imported.
    utils.fnmatch = types.SimpleNamespace(fnmatch=aws_match, translate=aws_filter_to_re)
    utils.simple_aws_filter_to_re = aws_filter_to_re
    import moto.ec2.models.tags as tags

    tags.simple_aws_filter_to_re = aws_filter_to_re


def main() -> int:
    patch_moto()
    from moto.server import main as moto_main

    sys.argv[0] = "moto_server"
    return moto_main()


if __name__ == "__main__":
    sys.exit(main())
