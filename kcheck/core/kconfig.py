"""Kernel config files: where a kernel's config is kept, reading one (plain or gzip, bounded),
its options as a dict, and the dict back as .config text.

The probe (live and offline), the VM pre-check and the builder all read configs here.
"""

from __future__ import annotations

import re

from kcheck.errors import KcheckError

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from kcheck.core.files import FilePath

RUNNING_CONFIG = "/proc/config.gz"  # the running kernel's, when CONFIG_IKCONFIG_PROC=y

_CONFIG_LINE = re.compile(
    r"^(?:(CONFIG_[A-Za-z0-9_]+)=(.*?)|# (CONFIG_[A-Za-z0-9_]+) is not set)[ \t\r]*$", re.M
)


def config_locations(release: str) -> list[str]:
    """Where distros keep a kernel's config, relative to the root, in CRIU/lxc-checkconfig order
    (after /proc/config.gz for the running kernel)."""
    return [f"boot/config-{release}", f"lib/modules/{release}/config", f"usr/lib/modules/{release}/config"]


def running_config_candidates(release: str) -> list[str]:
    """Where this host keeps its running kernel's config, in the order to try them."""
    return [RUNNING_CONFIG, *(f"/{location}" for location in config_locations(release))]


def parse_kconfig(text: str) -> dict[str, str]:
    """A kernel .config as {'CONFIG_X': 'y'|'m'|'n'|value}; an empty dict if none of it is config.

    Pure and total: malformed lines are skipped, never an exception."""
    return {
        set_name or unset_name: value if set_name else "n"
        for set_name, value, unset_name in _CONFIG_LINE.findall(text)
    }


def config_text(options: dict[str, str]) -> str:
    """Options as .config text: `# CONFIG_X is not set` for n."""
    lines = [
        f"# CONFIG_{name[7:]} is not set" if value == "n" else f"{name}={value}"
        for name, value in options.items()
    ]
    return "\n".join(lines) + "\n"


def read_config_file(path: FilePath) -> dict[str, str]:
    """A config file's options, gunzipped when needed; KcheckError naming the file otherwise."""
    from kcheck.core.files import CONFIG_LIMIT, CorruptGzip, InputRefused, read_maybe_gzipped

    try:
        data = read_maybe_gzipped(path, CONFIG_LIMIT)
    except InputRefused as exc:
        raise KcheckError(f"config file {path} {exc}; pass a kernel config file") from None
    except FileNotFoundError:
        raise KcheckError(f"config file {path} not found; pass an existing file to --config") from None
    except OSError as exc:
        raise KcheckError(
            f"config file {path} is unreadable ({exc.strerror}); check its permissions"
        ) from None
    except CorruptGzip as exc:
        raise KcheckError(f"config file {path} is a corrupt gzip ({exc}); pass an intact config") from None
    options = parse_kconfig(data.decode("utf-8", errors="replace"))
    if not options:
        raise KcheckError(f"config file {path} is not a kernel config (no CONFIG_ lines); pass a .config")
    return options
