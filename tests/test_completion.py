"""`kcheck completion`: the scripts are generated from the real parser and work in real shells."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import run_kcheck

BASH_COMPLETE = """
source "$1"
read -ra COMP_WORDS <<< "$2"
[[ "$2" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_kcheck
echo "${COMPREPLY[*]}"
"""


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory):
    done = run_kcheck("completion", "bash")
    assert done.returncode == 0, done.stderr
    path = tmp_path_factory.mktemp("completion") / "kcheck.bash"
    path.write_text(done.stdout)
    return path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("kcheck pro", "probe"),
        ("kcheck cr ch", "checkpoint"),
        ("kcheck probe --form", "--format"),
        ("kcheck probe --format ", "text json junit prometheus npd github"),
        ("kcheck cr checkpoint --engine ", "auto docker podman external"),
        ("kcheck build-criu --pre", "--prefix"),
        ("kcheck probe somefile", ""),  # not an option: bash completes file names (-o default)
    ],
)
def test_bash_completes_commands_options_and_choices(bash_script, line, expected):
    done = subprocess.run(
        ["bash", "-c", BASH_COMPLETE, "_", str(bash_script), line], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_every_subcommand_and_option_is_in_the_script(bash_script):
    from kcheck.cli import build_parser
    from kcheck.completion import command_tree, leaves

    text = bash_script.read_text()
    for path, node in leaves(command_tree(build_parser())).items():
        assert f"'kcheck {' '.join(path)}')" in text or f"kcheck {' '.join(path)})" in text, path
        for option in node.options:
            assert option in text, (path, option)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (scripts/test installs it)")
def test_zsh_loads_the_script_and_gets_the_function(tmp_path):
    done = run_kcheck("completion", "zsh")
    script = tmp_path / "kcheck.zsh"
    script.write_text(done.stdout)
    check = subprocess.run(
        ["zsh", "-c", f"autoload -U compinit && compinit -u -D; source {script}; (( $+functions[_kcheck] ))"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""


def test_an_unknown_shell_is_bad_input():
    done = run_kcheck("completion", "fish")
    assert done.returncode == 3
    assert done.stderr.startswith("kcheck: error: completion: argument shell: invalid choice: 'fish'")
