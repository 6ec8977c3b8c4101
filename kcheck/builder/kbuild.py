"""The kernel side of a build: the config commands, the make commands, and running them.

Commands are argv lists run in the tree with their output in the build log. The same lists
are what --dry-run prints and what reproducer.sh replays.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kcheck.builder import distcc
from kcheck.builder.options import BuildOptions, ConfigSetting
from kcheck.builder.progress import BuildLog, shell_line
from kcheck.core import kconfig
from kcheck.core.kconfig import parse_kconfig, read_config_file, running_config_candidates
from kcheck.errors import KcheckError, StageFailed

BUILD_USER = "kcheck"
BUILD_HOST = "kcheck"
# Debian and Ubuntu configs name certificate files that only their own build tree has.
KEY_FILE_OPTIONS = ("SYSTEM_TRUSTED_KEYS", "SYSTEM_REVOCATION_KEYS")
BASE_CONFIG = "base.config"


@dataclass(frozen=True)
class Command:
    """One command run in the tree; `answer_defaults` pipes `yes ''` into it (localmodconfig)."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    answer_defaults: bool = False

    def shell(self) -> str:
        line = shell_line(self.argv, self.env)
        return f"yes '' | {line}" if self.answer_defaults else line


def running_config(release: str) -> Path:
    """`--config running`: /proc/config.gz, else /boot/config-RELEASE (and the modules dir copies)."""
    for path in map(Path, running_config_candidates(release)):
        if path.is_file():
            return path
    raise KcheckError(
        f"--config running: no config for the running kernel {release} "
        "(no /proc/config.gz or /boot/config-RELEASE); pass --config FILE"
    )


def config_source(spec: str, release: str) -> Path:
    return running_config(release) if spec == "running" else Path(spec)


def base_config_text(path: Path) -> str:
    """The options of a config file (gzip or plain) as a .config; KcheckError naming the file."""
    return kconfig.config_text(read_config_file(path))


def stale_key_settings(config_text: str, tree: Path) -> list[ConfigSetting]:
    """Clear SYSTEM_TRUSTED_KEYS / SYSTEM_REVOCATION_KEYS when they name files the tree lacks."""
    options = parse_kconfig(config_text)
    clear = []
    for name in KEY_FILE_OPTIONS:
        value = options.get(f"CONFIG_{name}", "").strip('"')
        if value and not (tree / value).is_file():
            clear.append(ConfigSetting(name, '""'))
    return clear


def make_variables(options: BuildOptions, timestamp: str) -> tuple[str, ...]:
    """Fixed build identity, so rebuilds of one commit are reproducible; CC= for --cc-wrapper."""
    variables = [
        f"KBUILD_BUILD_TIMESTAMP={timestamp}",
        f"KBUILD_BUILD_USER={BUILD_USER}",
        f"KBUILD_BUILD_HOST={BUILD_HOST}",
    ]
    if options.cc:
        variables.append(f"CC={options.cc}")
    return tuple(variables)


def uses_ccache(options: BuildOptions) -> bool:
    return "ccache" in (options.cc_wrapper or "").split()


def distcc_env(options: BuildOptions, hosts: str | None = None, log: bool = False) -> dict[str, str]:
    """--distcc: DISTCC_HOSTS (`hosts`, those the preflight found answering; else as given, in a
    dry run), and distcc's state in the work dir. Every make gets it: each runs `$(CC) --version`,
    and kconfig reconfigures when that text changes. `log`: distcc's log too (the build's make)."""
    if options.distcc is None:
        return {}
    given = options.distcc if hosts is None else hosts
    return distcc.build_env(given, uses_ccache(options), options.workdir, log)


def make_env(options: BuildOptions, hosts: str | None = None) -> dict[str, str]:
    """ccache keys on the source directory too unless told not to: clones of a tree share hits."""
    ccache = {"CCACHE_NOHASHDIR": "true"} if uses_ccache(options) else {}
    return ccache | distcc_env(options, hosts, log=True)


def variables_for(options: BuildOptions, variables: tuple[str, ...]) -> tuple[str, ...]:
    """The same build identity with the CC= of `options` (the reproducer's build without distcc)."""
    kept = tuple(variable for variable in variables if not variable.startswith("CC="))
    return (*kept, f"CC={options.cc}") if options.cc else kept


def config_commands(
    options: BuildOptions,
    base: Path,
    stale_keys: list[ConfigSetting],
    variables: tuple[str, ...],
    hosts: str | None = None,
) -> list[Command]:
    """Copy the base config, trim it, set LOCALVERSION and --set options, then olddefconfig."""
    edit = ("scripts/config", "--file", ".config")
    env = distcc_env(options, hosts)
    commands = [Command(("cp", str(base), ".config"))]
    if options.localmodconfig:
        commands.append(Command(("make", *variables, "localmodconfig"), env, answer_defaults=True))
    settings = [ConfigSetting("LOCALVERSION", f'"{options.localversion}"'), *stale_keys, *options.settings]
    commands += [Command((*edit, *setting.scripts_config_args())) for setting in settings]
    commands.append(Command(("make", *variables, "olddefconfig"), env))
    return commands


def release_command(variables: tuple[str, ...], env: dict[str, str] | None = None) -> Command:
    return Command(("make", "-s", *variables, "kernelrelease"), env or {})


def build_command(options: BuildOptions, variables: tuple[str, ...], hosts: str | None = None) -> Command:
    return Command(("make", f"-j{options.jobs}", *variables, *options.targets), make_env(options, hosts))


def config_and_build_commands(
    options: BuildOptions,
    base: Path,
    stale_keys: list[ConfigSetting],
    variables: tuple[str, ...],
    hosts: str | None = None,
) -> list[Command]:
    """From the base config to the built targets, as --dry-run prints and reproducer.sh replays
    them; the config and build stages run the same commands."""
    commands = config_commands(options, base, stale_keys, variables, hosts)
    release = release_command(variables, distcc_env(options, hosts))
    return [*commands, release, build_command(options, variables, hosts)]


def installs_modules(options: BuildOptions, config_text: str) -> bool:
    """modules_install only for modules that were built: CONFIG_MODULES=y and a target that
    builds them (`--targets bzImage` alone builds none, and modules_install would fail)."""
    built = any(target in ("modules", "all") for target in options.targets)
    return built and parse_kconfig(config_text).get("CONFIG_MODULES") == "y"


def install_commands(
    variables: tuple[str, ...], modules: bool, env: dict[str, str] | None = None
) -> list[Command]:
    """Modules first, as the kernel docs say: `make install` may build an initramfs from them."""
    install = [Command(("make", *variables, "install"), env or {})]
    return [Command(("make", *variables, "modules_install"), env or {}), *install] if modules else install


def install_root_commands(
    variables: tuple[str, ...],
    modules: bool,
    root: Path,
    image: str,
    release: str,
    env: dict[str, str] | None = None,
) -> list[Command]:
    """Install into a node image. `make install` runs the host's installkernel hooks (initramfs,
    boot loader) even with INSTALL_PATH, so the kernel, System.map and config are copied into
    ROOT/boot as the distros name them; modules go in with INSTALL_MOD_PATH."""
    boot = root / "boot"
    install_modules = ("make", *variables, f"INSTALL_MOD_PATH={root}", "modules_install")
    commands = [Command(install_modules, env or {})] if modules else []
    commands.append(Command(("mkdir", "-p", str(boot))))
    for source, name in ((image, "vmlinuz"), ("System.map", "System.map"), (".config", "config")):
        commands.append(Command(("cp", source, f"{boot}/{name}-{release}")))
    return commands


def lost_settings(settings: tuple[ConfigSetting, ...], config_text: str) -> list[ConfigSetting]:
    """--set options olddefconfig did not keep (their dependencies are not met)."""
    options = parse_kconfig(config_text)
    lost = []
    for setting in settings:
        kept = options.get(f"CONFIG_{setting.name}", "n")
        if kept != setting.value:
            lost.append(setting)
    return lost


def run_command(command: Command, tree: Path, log: BuildLog, capture: bool = False) -> str:
    """Run in the tree; output to the log (or returned when `capture`); StageFailed on failure."""
    log.command(command.shell(), tree)
    env = {**os.environ, **command.env}
    feeder = subprocess.Popen(["yes", ""], stdout=subprocess.PIPE) if command.answer_defaults else None
    try:
        done = subprocess.run(
            command.argv,
            cwd=tree,
            env=env,
            stdin=feeder.stdout if feeder else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else log.file,
            stderr=log.file,
            text=True,
        )
    except OSError as exc:
        raise StageFailed(f"{command.argv[0]}: cannot run it ({exc.strerror})") from None
    finally:
        if feeder is not None:
            feeder.stdout.close()
            feeder.kill()
            feeder.wait()
    if capture:
        log.write(done.stdout)
    if done.returncode != 0:
        raise StageFailed(f"`{command.shell()}` exited {done.returncode}")
    return done.stdout if capture else ""
