"""``ducto-redis completion SHELL``: the shell completion script to source."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from .app import cli

SHELLS = ("bash", "zsh", "fish")


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash: eval "$(ducto-redis completion bash)"   (in ~/.bashrc)
    zsh:  eval "$(ducto-redis completion zsh)"    (in ~/.zshrc)
    fish: ducto-redis completion fish > ~/.config/fish/completions/ducto-redis.fish
    """
    completer = get_completion_class(shell)
    assert completer is not None  # every choice has one
    click.echo(completer(cli, {}, "ducto-redis", "_DUCTO_REDIS_COMPLETE").source())
