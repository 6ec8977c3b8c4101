"""`kcheck patchsets` and `kcheck audit`: their arguments, and the handlers that render results.

`kcheck probe` imports this module to register its subcommands, so the work (and GitPython)
is imported inside the handlers, never here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kcheck.core.args import path_arg

FORMAT_NAMES = ("text", "json")
CATALOG_SCHEMA = "kcheck.patchsets/1"


def register(jobs) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog",
        type=path_arg,
        metavar="DIR",
        help="patchset catalog directory (default: the shipped catalog)",
    )
    common.add_argument("--format", choices=FORMAT_NAMES, default="text", help="output format")

    patchsets = jobs.add_parser(
        "patchsets",
        help="list, show and validate the catalog of upstream fixes",
        description="The upstream fixes kcheck knows, one TOML file per patchset. Exit 3 on a bad catalog.",
    )
    actions = patchsets.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="one line per patchset")
    listing.set_defaults(handler=run_list)
    show = actions.add_parser(
        "show", parents=[common], help="a patchset's commits and the git commands that apply it"
    )
    show.add_argument("name", metavar="NAME", help="patchset name, as in `kcheck patchsets list`")
    show.set_defaults(handler=run_show)
    validate = actions.add_parser("validate", parents=[common], help="validate a catalog directory")
    validate.add_argument(
        "directory",
        nargs="?",
        type=path_arg,
        metavar="DIR",
        help="catalog to validate (default: --catalog, else the shipped catalog)",
    )
    validate.set_defaults(handler=run_validate)

    audit = jobs.add_parser(
        "audit",
        parents=[common],
        help="report which catalog fixes a kernel git tree already has",
        description="For each needed commit of each patchset: ancestor, backported, equivalent, "
        "missing or unknown, with evidence. Exit 0 all present, 1 some missing, 2 some unknown, "
        "3 bad input. The tree is only read.",
    )
    audit.add_argument("tree", type=path_arg, metavar="TREE", help="a kernel git tree (working tree or bare)")
    audit.add_argument("--rev", default="HEAD", help="the revision to audit (default HEAD)")
    audit.add_argument(
        "--patchset",
        action="append",
        default=[],
        metavar="NAME",
        help="audit only this patchset (repeatable; default all)",
    )
    audit.add_argument(
        "--upstream",
        metavar="REPO_OR_URL",
        help="a clone or URL of upstream, to compare patch-ids when the tree lacks "
        "the upstream commits (a URL is fetched to a temporary repo)",
    )
    audit.set_defaults(handler=run_audit)


def _load(directory: Path | None, use_cache: bool = True):
    from kcheck.patchsets.catalog import load_catalog

    return load_catalog(directory, use_cache)


def _patchset_json(patchset) -> dict:
    from kcheck.builder.plan import manual_recipe

    return {
        "name": patchset.name,
        "summary": patchset.summary,
        "fixes": list(patchset.fixes),
        "needed_from": str(patchset.needed_from) if patchset.needed_from else None,
        "needed_below": str(patchset.needed_below),
        "range": patchset.range_text,
        "upstream": patchset.upstream,
        "file": str(patchset.path),
        "commits": [
            {"sha": c.sha, "subject": c.subject, "author": c.author, "tag": c.tag, "note": c.note}
            for c in patchset.commits
        ],
        "recipe": manual_recipe(patchset),
    }


def _json(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def run_list(args: argparse.Namespace) -> int:
    from kcheck.core.render import align_columns

    catalog = _load(args.catalog)
    if args.format == "json":
        sys.stdout.write(
            _json({"schema": CATALOG_SCHEMA, "patchsets": [_patchset_json(p) for p in catalog.values()]})
        )
        return 0
    rows = [("NAME", "NEEDED", "COMMITS", "FIXES", "SUMMARY")]
    rows += [
        (p.name, p.range_text, str(len(p.commits)), ", ".join(p.fixes), p.summary) for p in catalog.values()
    ]
    sys.stdout.write("".join(f"{line}\n" for line in align_columns(rows)[0]))
    return 0


def run_show(args: argparse.Namespace) -> int:
    import shlex

    from kcheck.builder.plan import manual_recipe
    from kcheck.errors import KcheckError

    catalog = _load(args.catalog)
    patchset = catalog.get(args.name)
    if patchset is None:
        raise KcheckError(
            f"unknown patchset {args.name!r}; known: {', '.join(catalog)} (see kcheck patchsets list)"
        )
    if args.format == "json":
        sys.stdout.write(_json({"schema": CATALOG_SCHEMA, "patchset": _patchset_json(patchset)}))
        return 0
    lines = [
        f"{patchset.name}: {patchset.summary}",
        f"  file      {patchset.path}",
        f"  fixes     {', '.join(patchset.fixes)}",
        f"  needed    {patchset.range_text}",
        f"  upstream  {patchset.upstream}",
        "",
        "commits, in apply order:",
    ]
    for number, commit in enumerate(patchset.commits, 1):
        lines.append(f"  {number}. {commit.sha}  {commit.tag}  {commit.author}")
        lines.append(f"     {commit.subject}")
        if commit.note:
            lines.append(f"     note: {commit.note}")
    lines += ["", "manual recipe, git commands to run in a clone of the distro kernel:"]
    lines += [f"  {shlex.join(argv)}" for argv in manual_recipe(patchset)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from kcheck.errors import KcheckError
    from kcheck.patchsets.catalog import default_catalog_dir

    if args.directory and args.catalog and args.directory != args.catalog:
        raise KcheckError(f"validate got both {args.directory} and --catalog {args.catalog}; pass one")
    directory = args.directory or args.catalog or default_catalog_dir()
    catalog = _load(directory, use_cache=False)  # validate means: parse and check it all now
    commits = sum(len(p.commits) for p in catalog.values())
    if args.format == "json":
        sys.stdout.write(
            _json(
                {
                    "schema": CATALOG_SCHEMA,
                    "catalog": str(directory),
                    "valid": True,
                    "patchsets": list(catalog),
                    "commits": commits,
                }
            )
        )
    else:
        sys.stdout.write(f"{directory}: {len(catalog)} patchsets, {commits} commits: valid\n")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    import git

    from kcheck.core.repos import git_reason, open_tree, open_upstream
    from kcheck.errors import KcheckError
    from kcheck.patchsets.audit import audit

    catalog = _load(args.catalog)
    unknown = [name for name in args.patchset if name not in catalog]
    if unknown:
        raise KcheckError(f"--patchset {unknown[0]}: unknown patchset; known: {', '.join(catalog)}")
    selected = [catalog[name] for name in dict.fromkeys(args.patchset)] or list(catalog.values())
    tree = open_tree(args.tree, args.rev)
    # Only the tags of needed patchsets are fetched; with none needed there is nothing to compare.
    tags = {c.tag for p in selected if p.needed_for(tree.release.version) for c in p.commits}
    upstream = open_upstream(args.upstream, tags) if args.upstream and tags else nullcontext()
    with tree.repo, upstream as upstream_repo:
        try:
            report = audit(tree, selected, upstream_repo, args.upstream)
        except git.GitCommandError as exc:  # e.g. a partial clone that cannot fetch objects offline
            raise KcheckError(f"{args.tree}: git failed during the audit: {git_reason(exc.stderr)}") from None
    sys.stdout.write(report.to_json() if args.format == "json" else report.to_text())
    return int(report.exit_code)
