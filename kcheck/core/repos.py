"""What every git user in kcheck shares: opening a repository or saying why not, one refusal
for unsafe transports, and the line of git's stderr that explains a failure.

GitPython's unsafe-protocol and unsafe-option guards stay on: every clone, remote and fetch
goes through them, and `transport_guard` turns their refusal into kcheck's one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from kcheck.errors import KcheckError


def open_repo(path: Path, refusal: str) -> git.Repo:
    """The repository at `path`; `refusal` (bad input, one line) when there is none."""
    try:
        return git.Repo(path)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        raise KcheckError(refusal) from None


def unsafe_transport(option: str, url: str) -> KcheckError:
    return KcheckError(
        f"{option} {url}: refused an unsafe git transport; pass an https, ssh, git or file URL"
    )


def check_url(option: str, url: str) -> None:
    """Refuse `url` before any work when GitPython would refuse it later."""
    try:
        git.Git.check_unsafe_protocols(url)
    except git.UnsafeProtocolError:
        raise unsafe_transport(option, url) from None


@contextmanager
def transport_guard(option: str, url: str) -> Iterator[None]:
    """GitPython refused `url` (or an option) as unsafe: bad input naming the option."""
    try:
        yield
    except (git.UnsafeProtocolError, git.UnsafeOptionError):
        raise unsafe_transport(option, url) from None


def clone(
    option: str, url: str, dest: Path, options: list[str], progress: git.RemoteProgress | None = None
) -> git.Repo:
    """`git clone OPTIONS URL DEST` through GitPython's guards; an unsafe URL is bad input
    naming `option`. A failing clone raises git.GitCommandError for the caller to explain."""
    with transport_guard(option, url):
        return git.Repo.clone_from(url, dest, multi_options=options, progress=progress)


def git_reason(stderr: str) -> str:
    """The line of git's stderr that says what went wrong: its first fatal/error line."""
    # GitPython wraps it as "\n  stderr: '...'".
    lines = [line.strip().removeprefix("stderr:").strip(" '\"") for line in str(stderr).splitlines()]
    lines = [line for line in lines if line.startswith(("fatal:", "error:"))] or list(filter(None, lines))
    return lines[0] if lines else "git failed"
