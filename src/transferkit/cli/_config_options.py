"""Command-line options derived from :class:`~transferkit.train.config.TrainConfig`.

Each field becomes one option: its flag from the name (``batch_size`` -> ``--batch-size``), its
type, default and help from the field. ``train``, ``compare`` and ``demo`` declare none of them
by hand, so a new setting reaches every command, with one default and one help text.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from typing import Annotated

import typer

from ..train.config import TASK_FIELDS, TrainConfig, describe

__all__ = ["TASK_FIELDS", "config_options"]

_METAVARS = {int: "N", float: "X", str: "TEXT"}


def config_options(
    *,
    skip: Iterable[str] = (),
    defaults: dict | None = None,
    required: Iterable[str] = (),
    help: dict[str, str] | None = None,
    only: Iterable[str] | None = None,
) -> Callable:
    """Give a command one option per :class:`TrainConfig` field; it receives them as ``settings``.

    Args:
        skip: fields the command sets itself (or that make no sense for it).
        defaults: defaults of this command that differ from the configuration's.
        required: fields shown and enforced as required options.
        help: help texts of this command that differ from the field's.
        only: the fields to give options to, when a command takes a few (default: every field not skipped).

    Examples:
        >>> @config_options(skip=["strategy"])
        ... def compare_command(strategies: str = "full,freeze", *, settings: dict) -> None:
        ...     base = TrainConfig(**settings)
    """
    skip, required = set(skip), set(required)
    if only is not None:
        skip |= {f.name for f in fields(TrainConfig)} - set(only)
    defaults, help = defaults or {}, help or {}
    hints = typing.get_type_hints(TrainConfig)

    def decorate(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
        generated = []
        for f in fields(TrainConfig):
            if f.name in skip:
                continue
            default = defaults.get(f.name, f.default if f.default_factory is MISSING else None)
            if f.name in required or default is MISSING:
                default = ...
            annotation, metavar = hints[f.name], None
            if str in typing.get_args(annotation):  # typer takes no unions: read text, convert in the wrapper
                annotation, metavar = str | None, "X|auto" if _is_number_or_word(annotation) else None
            option = _option(f.name, annotation, default, help.get(f.name, describe(f.name)), metavar)
            generated.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[annotation, option], default=default
                )
            )
        names = [p.name for p in generated]
        words = {f.name for f in fields(TrainConfig) if _is_number_or_word(hints[f.name])}

        @functools.wraps(command)
        def wrapper(**kwargs):
            settings = {
                name: _number_or_word(kwargs.pop(name)) if name in words else kwargs.pop(name) for name in names
            }
            if "freeze" in settings:
                settings["freeze"] = list(settings["freeze"] or [])
            return command(settings=settings, **kwargs)

        wrapper.__signature__ = inspect.Signature(own + generated)
        return wrapper

    return decorate


def _is_number_or_word(annotation) -> bool:
    """Whether a field takes a number or a word (``lr: float | str``), as against text alone (``weights``)."""
    kinds = typing.get_args(annotation)
    return str in kinds and (float in kinds or int in kinds)


def _number_or_word(value):
    """``--lr 0.01`` is a number, ``--lr auto`` a word: fields typed ``float | str`` take both."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _option(name: str, annotation, default, text: str, metavar: str | None = None):
    flag = "--" + name.replace("_", "-")
    base = {a for a in typing.get_args(annotation) if a is not type(None)} or {annotation}
    if bool in base:
        # Flags, never "--train-bn true"; an --no-NAME switch where the default is on or undecided.
        return typer.Option(flag if default is False else f"{flag}/--no-{flag[2:]}", help=text)
    if typing.get_origin(annotation) is list:
        return typer.Option(flag, metavar="PATTERN", help=text)
    return typer.Option(flag, metavar=metavar or _METAVARS.get(next(iter(base)), "TEXT"), help=text)
