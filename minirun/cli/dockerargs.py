"""Docker-style option parsing for `run` and `exec`: options first, then positionals, the first of which
ends option parsing (`minirun run sh -c 'x'`: `-c` belongs to sh). Combined short flags (`-it`, `-dit`),
`--opt=value`, `-eK=V` and `--` work as in Docker. Kept free of typer so these hot paths start fast."""

from __future__ import annotations

from typing import NamedTuple

from minirun.errors import ConfigError


class Option(NamedTuple):
    flags: tuple[str, ...]
    dest: str
    metavar: str | None  # None: a boolean flag
    help: str
    repeat: bool = False


class HelpRequested(Exception):
    pass


def help_lines(options: tuple[Option, ...]) -> list[str]:
    lines = []
    for option in options:
        flags = ", ".join(option.flags) + (f" {option.metavar}" if option.metavar else "")
        lines.append(f"  {flags:<24} {option.help}")
    return lines


def parse_options(args: list[str], options: tuple[Option, ...], command: str) -> tuple[dict, list[str]]:
    """Return ({dest: value}, the remaining positionals). Raises ConfigError or HelpRequested."""
    by_flag = {flag: option for option in options for flag in option.flags}
    values: dict[str, object] = {o.dest: [] for o in options if o.repeat}
    see_help = f"see 'minirun {command} --help'"

    def take(option: Option, flag: str, inline: str | None, i: int) -> int:
        if option.metavar is None:
            if inline is not None:
                raise ConfigError(f"flag {flag} takes no value", hint=see_help)
            values[option.dest] = True
            return i + 1
        if inline is not None:
            value, i = inline, i + 1
        elif i + 1 < len(args):
            value, i = args[i + 1], i + 2
        else:
            raise ConfigError(f"flag {flag} needs a value ({option.metavar})", hint=see_help)
        if option.repeat:
            values[option.dest].append(value)
        else:
            values[option.dest] = value
        return i

    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            flag, eq, inline = arg.partition("=")
            option = by_flag.get(flag)
            if option is None:
                raise ConfigError(f"unknown flag: {flag}", hint=see_help)
            i = take(option, flag, inline if eq else None, i)
            continue
        # Short flags: booleans may be bundled (-it); a value-taking one consumes the rest (-eK=V) or the next.
        letters = arg[1:]
        for pos, letter in enumerate(letters):
            flag = f"-{letter}"
            option = by_flag.get(flag)
            if option is None:
                raise ConfigError(f"unknown shorthand flag: '{letter}' in {arg}", hint=see_help)
            rest = letters[pos + 1 :]
            if option.metavar is not None:
                i = take(option, flag, rest or None, i)
                break
            values[option.dest] = True
        else:
            i += 1
    if values.get("help"):
        raise HelpRequested()
    return values, args[i:]
