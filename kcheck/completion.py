"""`kcheck completion bash|zsh`: shell completion generated from the real parser, so it
never drifts from the options kcheck takes."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field


@dataclass
class Node:
    """One (sub)command: its child commands, its options, and the fixed choices of options."""

    children: dict[str, Node] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)


def command_tree(parser: argparse.ArgumentParser) -> Node:
    node = Node()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                node.children[name] = command_tree(child)
            continue
        node.options += action.option_strings
        if action.option_strings and action.choices:
            for option in action.option_strings:
                node.choices[option] = [str(choice) for choice in action.choices]
    return node


def commands(node: Node, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Node]]:
    """Every (sub)command by its words after `kcheck`, the top first."""
    found = [(path, node)]
    for name, child in node.children.items():
        found += commands(child, (*path, name))
    return found


def leaves(node: Node) -> dict[tuple[str, ...], Node]:
    """Every runnable subcommand by its words, e.g. ("cr", "checkpoint")."""
    return {path: child for path, child in commands(node) if not child.children}


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion function: subcommands, options, option choices; files otherwise."""
    steps, words, choices = [], [], []
    for words_after, node in commands(command_tree(parser)):
        path = " ".join(("kcheck", *words_after))
        for name in node.children:
            steps.append(
                f"            {shlex.quote(f'{path}:{name}')}) node={shlex.quote(f'{path} {name}')} ;;"
            )
        words.append(
            f"        {shlex.quote(path)}) words={shlex.quote(' '.join([*node.children, *node.options]))} ;;"
        )
        for option, values in node.choices.items():
            choices.append(
                f"        {shlex.quote(f'{path}:{option}')}) words={shlex.quote(' '.join(values))} ;;"
            )
    return "\n".join(
        [
            "# kcheck completion for bash: source it, or put it in /etc/bash_completion.d/kcheck",
            "_kcheck() {",
            '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
            '    local node=kcheck words="" i',
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        case "$node:${COMP_WORDS[i]}" in',
            *steps,
            "        esac",
            "    done",
            '    case "$node:$prev" in',
            *choices,
            "        *)",
            '    case "$node" in',
            *words,
            "    esac",
            '    [[ "$cur" == -* || -n "${words%%-*}" ]] || words=""  # a leaf: its options after a dash',
            "        ;;",
            "    esac",
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "complete -o default -F _kcheck kcheck",
            "",
        ]
    )


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """zsh runs the bash function through bashcompinit."""
    return (
        "# kcheck completion for zsh: source it from ~/.zshrc (after compinit)\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser).split("\n", 1)[1]
    )


SCRIPTS = {"bash": bash_script, "zsh": zsh_script}


def register(jobs) -> None:
    parser = jobs.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script generated from kcheck's own options. "
        "bash: source <(kcheck completion bash); zsh: source <(kcheck completion zsh).",
    )
    parser.add_argument("shell", choices=sorted(SCRIPTS))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kcheck.cli import build_parser

    sys.stdout.write(SCRIPTS[args.shell](build_parser()))
    return 0
