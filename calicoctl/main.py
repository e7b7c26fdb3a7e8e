"""The ``calicoctl`` command line: argument parsing and exit codes.

Commands and flags follow Calico's calicoctl (cobra era): ``create``,
``apply``, ``replace``, ``delete``, ``get``, ``patch``, ``validate`` and
``version``, and ``ipam show|check|release|configure`` (:mod:`calicoctl.ipam`).
Errors go to stderr without a prefix and exit with 1, as calicoctl's main
does. The node commands join with their issue.

Names and flags may come in any order (``get ippool -o wide NAME``), as
calicoctl's parsers accept them: each subcommand parses its arguments with
argparse's intermixed mode. No traceback reaches the user: an error nobody
anticipated is reported as one line naming its type (``main``'s last guard),
and logged in full at debug level.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from calicoctl import crud
from libcalico.backend.config import DEFAULT_CONFIG_PATH
from libcalico.client import CALICO_VERSION
from libcalico.errors import CalicoError


log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """A subcommand's parser: positionals and flags in any order (argparse's intermixed mode).

    The subparsers action calls ``parse_known_args``; intermixed parsing calls it
    again internally, and does not support nested subcommands (``ipam show``), so
    only the outermost call on a parser without subcommands switches mode.
    """

    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _crud_flags(p: argparse.ArgumentParser, *, names: bool) -> None:
    if names:
        p.add_argument("kind", nargs="?", metavar="KIND")
        p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", help="Filename to use; '-' for stdin; a directory reads its *.yaml/*.json")
    p.add_argument("-R", "--recursive", action="store_true", help="Process the directory given with -f recursively.")
    p.add_argument("--skip-empty", action="store_true", help="Do not error if files contain no data.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH,
                   help="Path to the file containing connection configuration in YAML or JSON format.")
    p.add_argument("-n", "--namespace", default="", help="Namespace of the resource.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calicoctl",
        description="The command line tool for managing Calico (pycalico) resources.",
    )
    parser.add_argument("-l", "--log-level", default="panic",
                        help="Set the log level: debug, info, warn, error, fatal or panic (the default: no logging).")
    parser.add_argument("--allow-version-mismatch", action="store_true",
                        help="Accepted for compatibility; pycalico does not check versions.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    for name, helptext in (("create", "Create a resource by file, directory or stdin."),
                           ("apply", "Apply a resource by file, directory or stdin."),
                           ("replace", "Replace a resource by file, directory or stdin."),
                           ("validate", "Validate a resource by file, directory or stdin without applying it.")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        _crud_flags(p, names=False)
        if name == "create":
            p.add_argument("--skip-exists", action="store_true", help="Skip over resources that already exist.")

    p = sub.add_parser("delete", help="Delete a resource by file, directory, stdin, or type and name.")
    _crud_flags(p, names=True)
    p.add_argument("-s", "--skip-not-exists", action="store_true", help="Skip over resources that do not exist.")

    p = sub.add_parser("get", help="Get a resource by file, directory, stdin, or type and name.")
    _crud_flags(p, names=True)
    p.add_argument("-o", "--output", default="ps",
                   help="Output format: ps (default), wide, yaml, json, name, custom-columns=A,B")
    p.add_argument("-A", "-a", "--all-namespaces", action="store_true",
                   help="List the requested object(s) across all namespaces.")
    p.add_argument("--export", action="store_true", help="Strip cluster-specific information from the output.")

    p = sub.add_parser("patch", help="Patch a pre-existing resource in place.")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("names", nargs=1, metavar="NAME")
    p.add_argument("-p", "--patch", required=True, help="Spec to use to patch the resource (JSON).")
    p.add_argument("-t", "--type", default="strategic", choices=("strategic", "merge", "json"),
                   help="Format of patch type.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    p.add_argument("-n", "--namespace", default="")

    ipam = sub.add_parser("ipam", help="IP address management.")
    isub = ipam.add_subparsers(dest="ipam_command", metavar="SUBCOMMAND")
    p = isub.add_parser("show", help="Show details of Calico IP address usage.")
    p.add_argument("--ip", default="", help="Report whether this specific IP address is in use.")
    p.add_argument("--show-blocks", action="store_true", help="Show detailed information for IP blocks as well as pools.")
    p.add_argument("--show-configuration", action="store_true", help="Show current Calico IPAM configuration.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    p = isub.add_parser("check", help="Check the integrity of the IPAM datastructures.")
    p.add_argument("--show-all-ips", action="store_true", help="Print all IPs that are checked.")
    p.add_argument("--show-problem-ips", action="store_true", help="Print all IPs that are leaked or not allocated.")
    p.add_argument("-o", "--output", default="", help="Path to output report file.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    p = isub.add_parser("release", help="Release a Calico assigned IP address.")
    p.add_argument("--ip", action="append", default=[], help="IP address to release.")
    p.add_argument("--from-report", action="append", default=[], help="Release IPs from a report (ipam check -o).")
    p.add_argument("--force", action="store_true", help="Force release of leaked addresses.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)
    p = isub.add_parser("configure", help="Configure IPAM.")
    p.add_argument("--strictaffinity", default=None, help="Set StrictAffinity to true/false.")
    p.add_argument("--max-blocks-per-host", type=int, default=None, help="Maximum blocks a host may claim.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH)

    node = sub.add_parser("node", help="Calico node management.")
    nsub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    nsub.add_parser("status", help="View the current status of a Calico node.")

    sub.add_parser("version", help="Display the version of this binary.")
    return parser


def run_ipam(ns: argparse.Namespace) -> int:
    from calicoctl import ipam

    action = ns.ipam_command
    if action is None:
        sys.stderr.write("calicoctl ipam: choose one of show, check, release, configure\n")
        return 1
    if action == "release" and not ns.ip and not ns.from_report:
        sys.stderr.write("calicoctl ipam release: give --ip=<IP> or --from-report=<REPORT>\n")
        return 1
    kwargs: dict[str, object] = {
        "show": lambda: {"show_blocks": ns.show_blocks, "ip": ns.ip, "show_configuration": ns.show_configuration},
        "check": lambda: {"show_all_ips": ns.show_all_ips, "show_problem_ips": ns.show_problem_ips,
                          "output": ns.output},
        "release": lambda: {"ips": ns.ip, "from_report": ns.from_report, "force": ns.force},
        "configure": lambda: {"strict_affinity": ns.strictaffinity, "max_blocks_per_host": ns.max_blocks_per_host},
    }[action]()
    try:
        if action == "check" and ns.output:
            ipam.check_report_path(ns.output)
        return ipam.run(action, crud.datastore_config(ns.config), **kwargs)
    except (ipam.IPAMCommandError, crud.CommandError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1


def options_from(ns: argparse.Namespace) -> crud.Options:
    return crud.Options(
        action=ns.command,
        filename=getattr(ns, "filename", None),
        recursive=getattr(ns, "recursive", False),
        skip_empty=getattr(ns, "skip_empty", False),
        kind=getattr(ns, "kind", None),
        names=list(getattr(ns, "names", []) or []),
        namespace=getattr(ns, "namespace", ""),
        all_namespaces=getattr(ns, "all_namespaces", False),
        output=getattr(ns, "output", "ps"),
        export=getattr(ns, "export", False),
        skip_exists=getattr(ns, "skip_exists", False),
        skip_not_exists=getattr(ns, "skip_not_exists", False),
        config=getattr(ns, "config", None),
        patch=getattr(ns, "patch", ""),
        patch_type=getattr(ns, "type", "strategic"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last guard: one line, never a traceback
        log.debug("unexpected error", exc_info=True)
        text = " ".join(str(exc).split()) or "(no message)"
        sys.stderr.write(f"unexpected error: {type(exc).__name__}: {text}\n")
        return 1


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
               "error": logging.ERROR}


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    level = _LOG_LEVELS.get(str(ns.log_level).lower())
    if level is not None:  # "fatal" and "panic" (the default) log nothing
        logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s [%(levelname)s] %(message)s")
    if ns.command is None:
        parser.print_help()
        return 1
    if ns.command == "node":
        from calicoctl import node

        if ns.node_command != "status":
            sys.stderr.write("calicoctl node: choose status\n")
            return 1
        try:
            node.status(sys.stdout)
        except node.NodeStatusError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
        return 0
    if ns.command == "ipam":
        try:
            return run_ipam(ns)
        except CalicoError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
    if ns.command == "version":
        sys.stdout.write(f"Client Version:    {CALICO_VERSION}\nRelease:           pycalico\n")
        return 0
    opts = options_from(ns)
    if opts.filename is not None and opts.kind:
        sys.stderr.write("cannot specify both a file (-f) and a resource type\n")
        return 1
    try:
        crud.run(opts)
    except crud.CommandError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except CalicoError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
