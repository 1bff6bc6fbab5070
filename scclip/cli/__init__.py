"""Command line: ``scclip train | embed | match | evaluate | convert-checkpoint`` (also ``python -m scclip.cli``).

Bad input exits with status 1 and one short message on stderr (usage errors: 2); ``--debug`` shows the
traceback. The modules:

- ``_parser``: the argument parser, one function per sub-command;
- ``_commands``: what each sub-command does;
- ``_results``: ``match`` and ``evaluate`` on an embedded ``.h5mu``.
"""

from __future__ import annotations

import sys

from scclip.cli._commands import cmd_convert, cmd_embed, cmd_evaluate, cmd_match, cmd_train
from scclip.cli._parser import EPILOG, build_parser, csv_list
from scclip.errors import ScclipError

__all__ = ["COMMANDS", "EPILOG", "build_parser", "csv_list", "main"]

COMMANDS = {
    "train": cmd_train,
    "embed": cmd_embed,
    "match": cmd_match,
    "evaluate": cmd_evaluate,
    "convert-checkpoint": cmd_convert,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``scclip ARGV``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except ScclipError as err:
        if args.debug:
            raise
        print(f"scclip {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if args.debug:
            raise
        print(f"scclip {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scclip {args.command}: interrupted (training can continue with --resume)", file=sys.stderr)
        return 130

