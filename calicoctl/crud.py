"""create, apply, replace, delete, get, patch and validate: calicoctl's resource commands.

The flow mirrors calicoctl's ``ExecuteConfigCommand``: read the resources
(from ``-f`` or from KIND NAME arguments), settle each one's namespace, run
the action on each in order, then report with Calico's words ("Successfully
applied 1 'IPPool' resource(s)", "Partial success: ...", "hit error: ...").

One deliberate difference: every document of a ``-f`` input is parsed and
validated (models plus defaulting) before anything is written, so an invalid
manifest changes nothing; Calico writes the valid documents ahead of an
invalid one. Input is read with the bounds of :mod:`libcalico.api.manifests`,
and IPAM's own kinds are refused in a file (:data:`IPAM_KINDS`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from calicoctl import printing, resources
from libcalico import api, backend, client
from libcalico.api import ipam as api_ipam
from libcalico.api import manifests
from libcalico.api.meta import Resource
from libcalico.backend import config as dsconfig
from libcalico.errors import AlreadyExists, CalicoError, ErroredField, NotFound, OperationNotSupported, ValidationError

PAST = {"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted",
        "validate": "validated"}


class CommandError(Exception):
    """A failure to report on stderr with exit code 1 (the message is Calico's)."""


@dataclass
class Options:
    action: str
    filename: str | None = None
    recursive: bool = False
    skip_empty: bool = False
    kind: str | None = None
    names: list[str] = field(default_factory=list)
    namespace: str = ""
    all_namespaces: bool = False
    output: str = "ps"
    export: bool = False
    skip_exists: bool = False
    skip_not_exists: bool = False
    config: str | None = None
    patch: str = ""
    patch_type: str = "strategic"


# --- reading input -------------------------------------------------------------------------


def _files(path: str, recursive: bool) -> list[str]:
    if path == "-" or not os.path.isdir(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml", ".json")):
                out.append(os.path.join(root, f))
        if not recursive:
            break
        dirs.sort()
    return out


def _read(path: str, stdin: TextIO | None) -> str:
    """The text of one ``-f`` input, bounded in size (:mod:`libcalico.api.manifests`)."""
    try:
        if path == "-":
            if stdin is None:  # started with stdin closed (0<&-)
                raise CommandError("failed to execute command: cannot read stdin: it is closed")
            stream: Any = getattr(stdin, "buffer", stdin)  # bytes when there are bytes to read
            return manifests.read_text(stream, source="stdin")
        with open(path, "rb") as f:
            return manifests.read_text(f, source=path)
    except OSError as exc:
        where = "stdin" if path == "-" else f"open {path}"
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        raise CommandError(f"failed to execute command: {where}: {reason}") from exc
    except ValidationError as exc:
        raise CommandError(f"failed to execute command: {exc}") from exc


# Calico's calicoctl has no resource manager for IPAM's own kinds: only IPAM (the CNI
# plugin, the controllers) and `calicoctl ipam` change them. A block written by hand
# can hand out an address that a handle already holds.
# By the name in lower case, as a manifest may spell it; IPAMConfiguration is the name Calico's v3
# API gives IPAMConfig, which a manifest written for Calico carries.
IPAM_KINDS = {**{cls.KIND.lower(): cls.KIND for cls in api_ipam.IPAM_KINDS}, "ipamconfiguration": "IPAMConfiguration"}


def refuse_ipam_kind(doc: Any, *, where: str) -> None:
    """Raise if ``doc`` is one of IPAM's kinds, in any API group."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if not isinstance(kind, str) or kind.lower() not in IPAM_KINDS:
        return
    how = ("'calicoctl ipam configure'" if kind.lower().startswith("ipamconfig")
           else "IPAM itself and 'calicoctl ipam'")
    raise ValidationError([ErroredField("kind", f"{IPAM_KINDS[kind.lower()]} is IPAM state, which calicoctl "
                                                f"does not read or write from files; it changes only through {how}",
                                        kind)], context=where)


def resources_from_files(opts: Options, stdin: TextIO | None) -> list[Resource]:
    """Every resource of every file, validated and defaulted; raise before any write."""
    assert opts.filename is not None
    out: list[Resource] = []
    for path in _files(opts.filename, opts.recursive):
        text = _read(path, stdin)
        source = "stdin" if path == "-" else path
        try:
            docs = api.load_documents(text, source=source)
            for i, doc in enumerate(docs):
                refuse_ipam_kind(doc, where=f"{source} document {i + 1}")
            loaded = [api.parse_resource(doc, where=f"{source} document {i + 1}") for i, doc in enumerate(docs)]
            # Defaulting can surface rules only a full object breaks (e.g. a pool
            # smaller than the default block size): check that now, too.
            for res in loaded:
                client._revalidate(client.apply_defaults(res))
        except ValidationError as exc:
            raise CommandError(f"failed to execute command: {exc}") from None
        if not loaded and not opts.skip_empty:
            raise CommandError(f"no resources specified in file {path}")
        out.extend(loaded)
    if not out and not opts.skip_empty and opts.filename != "-" and os.path.isdir(opts.filename):
        # Empty files are refused above, so this is a directory with no manifests in it.
        raise CommandError(f"no resources specified in directory {opts.filename}")
    return out


def resources_from_args(opts: Options) -> list[Resource]:
    info = resources.lookup(opts.kind or "")
    if info is None:
        raise CommandError(f"resource type '{opts.kind}' is not supported")
    if any(n == "" for n in opts.names):
        raise CommandError("resource name may not be empty")
    names = opts.names or [""]
    out = []
    for name in names:
        # A bare shell of the kind: name and namespace only, not validated as a full object.
        res = info.cls.model_construct(kind=info.kind, metadata=api.ObjectMeta(name=name))
        out.append(res)
    return out


def settle_namespace(res: Resource, opts: Options) -> Resource:
    """Calico's handleNamespace: fill in, check or clear the namespace."""
    res_ns = res.metadata.namespace
    cli_ns = opts.namespace
    if res.NAMESPACED:
        if opts.all_namespaces and cli_ns:
            raise CalicoError("cannot use both --namespace and --all-namespaces flags at the same time")
        if not res_ns and cli_ns:
            ns = cli_ns
        elif opts.all_namespaces:
            ns = ""
        elif not res_ns:
            ns = "default"
        elif cli_ns and res_ns != cli_ns:
            raise CalicoError(f"resource namespace does not match client namespace. {res_ns} != {cli_ns}")
        else:
            ns = res_ns
        meta = res.metadata.model_copy(update={"namespace": ns})
        return res.model_copy(update={"metadata": meta})
    if res_ns:
        raise CalicoError("namespace should not be specified for a non-namespaced resource. "
                          f"{res.KIND} is not a namespaced resource")
    if opts.all_namespaces or cli_ns:
        raise CalicoError(f"{res.KIND} is not namespaced")
    return res


# --- running actions ---------------------------------------------------------------------------


@dataclass
class Results:
    num_resources: int = 0
    num_handled: int = 0
    single_kind: str = ""
    resources: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _one(c: client.Client, res: Resource, opts: Options) -> Any:
    action = opts.action
    if isinstance(res, api.ClusterInformation) and action in ("create", "apply", "replace", "delete"):
        op = {"create": "create or apply", "apply": "create or apply", "replace": "apply or replace"}.get(action,
                                                                                                    action)
        raise OperationNotSupported(op, api.ClusterInformation.KIND)
    if isinstance(res, api.NetworkPolicy) and res.name.startswith("knp.default.") and action != "validate":
        raise OperationNotSupported(action, res.identifier(), "kubernetes network policies must be managed "
                                    "through the kubernetes API")
    if action == "create":
        return await c.create(res)
    if action == "apply":
        return await c.apply(res)
    if action == "replace":
        return await c.update(res)
    if action == "delete":
        return await c.delete(type(res), res.name, res.namespace, res.metadata.resource_version)
    if action == "patch":
        return await c.patch(type(res), res.name, res.namespace, opts.patch, opts.patch_type)
    if action == "get":
        if res.name:
            if res.NAMESPACED and not res.namespace:
                raise CalicoError("cannot use --all-namespace flag for getting a single resource")
            return await c.get(type(res), res.name, res.namespace)
        return await c.list(type(res), res.namespace)
    raise CommandError(f"unknown action: {action}")


async def execute(opts: Options, items: Sequence[Resource], ds: backend.DatastoreConfig) -> Results:
    results = Results(num_resources=len(items))
    kinds = {r.KIND for r in items}
    if len(kinds) == 1 or opts.filename is None:
        results.single_kind = next(iter(kinds), "")
    settled: list[Resource | None] = []
    for res in items:
        try:
            settled.append(settle_namespace(res, opts))
        except CalicoError as exc:
            settled.append(None)
            results.errors.append(str(exc))
    be = backend.connect(ds)
    c = client.Client(be)
    try:
        if opts.action in ("create", "apply", "replace"):
            try:
                await c.ensure_initialized()
            except CalicoError:
                pass  # as calicoctl: a user may lack rights to ClusterInformation
        for maybe in settled:
            if maybe is None:
                continue
            res = maybe
            try:
                out = await _one(c, res, opts)
            except (AlreadyExists, NotFound) as exc:
                skip = (isinstance(exc, AlreadyExists) and opts.skip_exists) or (
                    isinstance(exc, NotFound) and opts.skip_not_exists)
                if not skip:
                    results.errors.append(str(exc))
                    if opts.action in ("replace", "patch"):
                        break
                    continue
                out = res
            except CalicoError as exc:
                results.errors.append(str(exc))
                if opts.action in ("replace", "patch"):
                    break
                continue
            results.resources.append(out)
            results.num_handled += 1
    finally:
        await c.close()
    return results


# --- reporting ----------------------------------------------------------------------------------


def _errs(errors: list[str]) -> str:
    return "[" + " ".join(errors) + "]"


def report_write(opts: Options, r: Results, out: TextIO) -> None:
    action, past = opts.action, PAST[opts.action]
    kind = f"'{r.single_kind}' " if r.single_kind else ""
    if r.num_resources == 0:
        out.write("No resources specified\n")
        return
    if action == "delete":
        if r.num_handled:
            out.write(f"Successfully deleted {r.num_handled} {kind}resource(s)\n")
        if r.errors:
            lines = "".join(f"Failed to delete {kind}resource: {e}\n" for e in r.errors)
            raise CommandError(lines.rstrip("\n"))
        return
    if r.num_handled == 0:
        if r.num_resources == 1:
            raise CommandError(f"failed to {action} {kind}resource: {_errs(r.errors)}")
        raise CommandError(f"failed to {action} any {kind}resources: {_errs(r.errors)}")
    if not r.errors:
        out.write(f"Successfully {past} {r.num_handled} {kind}resource(s)\n")
        return
    out.write(f"Partial success: {past} the first {r.num_handled} out of {r.num_resources} "
              f"{kind}resources:\n")
    raise CommandError(f"hit error: {_errs(r.errors)}")


async def default_asn(ds: backend.DatastoreConfig) -> str:
    c = client.Client(backend.connect(ds))
    try:
        bgp = await c.get(api.BGPConfiguration, "default")
        asn = getattr(bgp, "spec").as_number
        return str(asn) if asn is not None else "64512"
    except NotFound:
        return "64512"
    except CalicoError:
        return "unknown"
    finally:
        await c.close()


def _wire_list(kind: str, lst: client.ResourceList, export: bool) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": api.API_VERSION, "metadata": {"resourceVersion": lst.revision},
            "items": [_wire(r, export) for r in lst.items]}


def _wire(res: Resource, export: bool) -> dict[str, Any]:
    wire = res.to_wire()
    if export:
        for k in ("namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
            wire["metadata"].pop(k, None)
    return wire


def print_get(opts: Options, r: Results, ds: backend.DatastoreConfig, out: TextIO) -> None:
    objs: list[tuple[str, list[Resource], dict[str, Any]]] = []
    for item in r.resources:
        if isinstance(item, client.ResourceList):
            for bad in item.corrupt:  # the rest of the listing is still shown
                sys.stderr.write(f"Warning: skipped a {item.kind} that does not parse: {bad}\n")
            objs.append((item.kind, item.items, _wire_list(item.kind, item, False)))
        else:
            objs.append((item.KIND, [item], _wire(item, opts.export and bool(opts.names))))
    fmt = opts.output
    if fmt in ("yaml", "yml", "json"):
        docs = [w for _, _, w in objs]
        doc: Any = docs[0] if len(docs) == 1 else docs
        out.write(printing.to_yaml(doc) if fmt != "json" else printing.to_json(doc))
        if fmt == "json":
            out.write("\n")
        return
    if fmt == "name":
        for kind, items, _ in objs:
            for res in items:
                out.write(f"{kind.lower()}.projectcalico.org/{res.name}\n")
        return
    headings: list[str] | None = None
    if fmt.startswith("custom-columns="):
        headings = [h for h in fmt.split("=", 1)[1].split(",") if h]
        if not headings:
            raise CommandError("need to specify at least one column")
    elif fmt not in ("ps", "wide"):
        raise CommandError(f"unrecognized output format '{fmt}'")
    print_ns = opts.all_namespaces or bool(opts.namespace)
    needs_asn = any(kind == api.Node.KIND for kind, _, _ in objs)
    ctx = resources.Context(default_asn=asyncio.run(default_asn(ds)) if needs_asn and fmt == "wide" else "64512")
    for kind, items, _ in objs:
        info = resources.BY_KIND[kind]
        cols = list(headings or (info.wide_headings if fmt == "wide" else info.headings))
        if print_ns and "NAMESPACE" in info.columns:
            cols = ["NAMESPACE"] + cols
        for col in cols:
            if col not in info.columns:
                raise CommandError(f"unknown heading {col}, valid values are: {', '.join(info.columns)}")
        rows = [cols] + [[info.columns[c](res, ctx) for c in cols] for res in items]
        out.write(printing.tabwrite(rows))
        out.write("\n")


def datastore_config(path: str | None) -> backend.DatastoreConfig:
    """Calico's clientmgr.LoadClientConfig: a config file named with -c must exist; only the
    default path (/etc/calico/calicoctl.cfg) falls back to the environment when it is missing."""
    path = path or dsconfig.DEFAULT_CONFIG_PATH
    if path != dsconfig.DEFAULT_CONFIG_PATH and not os.path.exists(path):
        raise CommandError(f"Error reading config file: {path}")
    try:
        return dsconfig.load(path)
    except OSError as exc:
        raise CommandError(f"Error reading config file: {path}: {exc.strerror or exc}") from exc


def load_config(opts: Options) -> backend.DatastoreConfig:
    try:
        return datastore_config(opts.config)
    except ValidationError as exc:
        raise CommandError(f"Failed to create Calico API client: {exc}") from None


def run(opts: Options, stdin: TextIO | None = None, out: TextIO | None = None) -> None:
    """Run one resource command; raise CommandError for a failure to report."""
    stdin = stdin if stdin is not None else sys.stdin
    out = out or sys.stdout

    if opts.filename is not None:
        items = resources_from_files(opts, stdin)
    else:
        if not opts.kind:
            raise CommandError("no resources specified")
        items = resources_from_args(opts)
    if opts.action == "validate":
        out.write(f"Successfully validated {len(items)} resource(s)\n")
        return
    ds = load_config(opts)
    results = asyncio.run(execute(opts, items, ds))
    if opts.action == "get":
        print_get(opts, results, ds, out)
        if results.errors:
            raise CommandError("\n".join(results.errors))
        return
    if opts.action == "patch":
        if results.num_handled:
            out.write(f"Successfully patched {results.num_handled} '{results.single_kind}' resource\n")
            return
        raise CommandError(f"hit error: {_errs(results.errors)}")
    report_write(opts, results, out)
