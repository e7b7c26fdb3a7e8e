"""``calicoctl ipam show|check|release|configure``: Calico's IPAM views and repairs.

``show`` prints pool and block utilisation in the boxed table of the seed's
calicoctl (GROUPING, CIDR, IPS TOTAL, IPS IN USE, IPS FREE; blocks sorted by
CIDR text, percentages rounded as Go's ``%.f``), or one address's owner with
``--ip``. ``check`` walks blocks, pools, nodes, workload endpoints and handles
and prints Calico's report line for line; ``-o FILE`` writes the machine
readable report that ``release --from-report`` consumes, as Calico's does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from calicoctl import printing
from libcalico import api, backend
from libcalico.backend.api import Backend
from libcalico.client import CALICO_VERSION
from libcalico.errors import ErroredField, NotFound, ValidationError
from libcalico.ipam import IPAM, BlockUsage
from libcalico.model import ResourceKey, ResourceListOptions


class IPAMCommandError(Exception):
    """A failure reported on stderr with exit code 1."""


def _pct(n: int, total: int) -> str:
    return f"{float(n):.5g} ({100 * n / total:.0f}%)" if total else f"{n} (0%)"


def utilization_table(pools: Sequence[tuple[str, int]], blocks: Sequence[BlockUsage], show_blocks: bool) -> str:
    """The seed's ``ipam show [--show-blocks]`` table."""
    rows: list[list[str]] = []
    claimed: set[str] = set()
    for cidr, _ in pools:
        net = ipaddress.ip_network(cidr)
        inside = [b for b in blocks if ipaddress.ip_network(b.cidr).subnet_of(net)]  # type: ignore[arg-type]
        claimed.update(b.cidr for b in inside)
        used = sum(b.used for b in inside)
        total = net.num_addresses
        rows.append(["IP Pool", cidr, f"{float(total):.5g}",
                     _pct(used, total), _pct(total - used, total)])
        if show_blocks:
            for b in sorted(inside, key=lambda b: b.cidr):
                rows.append(["Block", b.cidr, f"{b.size}", _pct(b.used, b.size), _pct(b.size - b.used, b.size)])
    if show_blocks:
        for b in sorted((b for b in blocks if b.cidr not in claimed), key=lambda b: b.cidr):
            rows.append(["Block", b.cidr, f"{b.size}", _pct(b.used, b.size), _pct(b.size - b.used, b.size)])
    return printing.box_table(["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"], rows,
                              right_aligned={2})


async def _pools(be: Backend) -> list[tuple[str, int]]:
    items = (await be.list(ResourceListOptions(api.IPPool))).items
    return [(kv.value.spec.cidr, kv.value.spec.block_size) for kv in items]


async def show(be: Backend, out: TextIO, *, show_blocks: bool = False, ip: str = "",
               show_configuration: bool = False) -> None:
    ipam = IPAM(be)
    if ip:
        try:
            addr = str(ipaddress.ip_address(ip))
        except ValueError:
            raise IPAMCommandError(f"invalid IP address specified: {ip}") from None
        found = await ipam.allocation(addr)
        if found is None:
            out.write(f"{addr} is not assigned\n")
            return
        out.write(f"IP {addr} is in use\n")
        out.write(f"Handle ID: {found.handle_id or '<none>'}\n")
        if found.attrs:
            out.write("Active Owner Attributes:\n")
            for k in sorted(found.attrs):
                out.write(f"  {k}: {found.attrs[k]}\n")
        else:
            out.write("No Active Owner attributes defined\n")
        return
    if show_configuration:
        cfg = await ipam.config()
        out.write(printing.box_table(["PROPERTY", "VALUE"], [
            ["StrictAffinity", str(cfg.strict_affinity).lower()],
            ["AutoAllocateBlocks", str(cfg.auto_allocate_blocks).lower()],
            ["MaxBlocksPerHost", str(cfg.max_blocks_per_host)]]))
        return
    out.write(utilization_table(await _pools(be), await ipam.blocks(), show_blocks))


# --- check -----------------------------------------------------------------------------------


@dataclass
class _Alloc:
    ip: str
    handle: str | None
    attrs: dict[str, str]
    block: str
    affinity: str | None
    in_use: bool = False
    owners: list[str] = field(default_factory=list)

    def attr_string(self) -> str:
        extra = ",".join(f"{k}={self.attrs[k]}" for k in sorted(self.attrs))
        return f"Main:{self.handle or '<none>'} Extra:{extra}"

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ip": self.ip}
        if self.handle:
            out["handle"] = self.handle
        for k in ("pod", "namespace", "node", "type"):
            if self.attrs.get(k):
                out[k] = self.attrs[k]
        out["inUse"] = self.in_use
        node = self.attrs.get("node")
        if node and self.affinity and self.affinity != f"host:{node}":
            out["borrowed"] = True
        out["owners"] = self.owners or None
        return out


async def check(be: Backend, out: TextIO, *, show_all_ips: bool = False, show_problem_ips: bool = False,
                output: str = "") -> int:
    """Calico's ``ipam check``; returns the number of problems."""
    w = out.write
    w("Checking IPAM for inconsistencies...\n\n")
    try:
        info = (await be.get(ResourceKey(api.ClusterInformation, "default")))
        guid, ctype = info.value.spec.cluster_guid, info.value.spec.cluster_type
        locked = info.value.spec.datastore_ready is False
        info_rev = info.revision
    except NotFound:
        guid, ctype, locked, info_rev = "", "", False, ""
    w("Loading all IPAM blocks...\n")
    blocks = (await be.list(ResourceListOptions(api.IPAMBlock))).items
    w(f"Found {len(blocks)} IPAM blocks.\n")
    allocs: dict[str, list[_Alloc]] = {}
    by_node: dict[str, list[_Alloc]] = {}
    handles_in_blocks: set[str] = set()
    for kv in blocks:
        spec = kv.value.spec
        w(f" IPAM block {spec.cidr} affinity={spec.affinity or '<none>'}:\n")
        base = ipaddress.ip_network(spec.cidr).network_address
        for o, idx in enumerate(spec.allocations):
            if idx is None or not 0 <= idx < len(spec.attributes):
                continue  # validate_block reports it
            attr = spec.attributes[idx]
            a = _Alloc(str(base + o), attr.handle_id, dict(attr.secondary), spec.cidr, spec.affinity)
            allocs.setdefault(a.ip, []).append(a)
            by_node.setdefault(a.attrs.get("node", ""), []).append(a)
            if attr.handle_id:
                handles_in_blocks.add(attr.handle_id)
            if show_all_ips:
                w(f"  {a.ip} allocated; attrs {a.attr_string()}\n")
    w(f"IPAM blocks record {sum(len(v) for v in allocs.values())} allocations.\n\n")

    w("Loading all IPAM pools...\n")
    pools = [kv.value for kv in (await be.list(ResourceListOptions(api.IPPool))).items if not kv.value.spec.disabled]
    for p in pools:
        w(f"  {p.spec.cidr}\n")
    w(f"Found {len(pools)} active IP pools.\n\n")
    active = [ipaddress.ip_network(p.spec.cidr) for p in pools]

    in_use: dict[str, list[str]] = {}
    w("Loading all nodes.\n")
    n_node_ips = 0
    for node_kv in (await be.list(ResourceListOptions(api.Node))).items:
        node_spec = node_kv.value.spec
        for ip in (node_spec.bgp.ipv4_ipip_tunnel_addr if node_spec.bgp else "", node_spec.ipv4_vxlan_tunnel_addr,
                   node_spec.ipv6_vxlan_tunnel_addr,
                   node_spec.wireguard.interface_ipv4_address if node_spec.wireguard else ""):
            if ip:
                in_use.setdefault(ip, []).append(f"Node({node_kv.key.name})")
                n_node_ips += 1
    w(f"Found {n_node_ips} node tunnel IPs.\n\n")
    w("Loading all workload endpoints.\n")
    n_wep_ips = 0
    for wep_kv in (await be.list(ResourceListOptions(api.WorkloadEndpoint))).items:
        for net in wep_kv.value.spec.ip_networks:
            ip = str(ipaddress.ip_interface(net).ip)
            in_use.setdefault(ip, []).append(f"Workload({wep_kv.key.namespace}/{wep_kv.key.name})")
            n_wep_ips += 1
    w(f"Found {n_wep_ips} workload IPs.\n")
    w(f"Workloads and nodes are using {len(in_use)} IPs.\n\n")

    w("Loading all handles\n")
    handle_kvs = {kv.value.spec.handle_id: kv for kv in (await be.list(ResourceListOptions(api.IPAMHandle))).items}
    w("Looking for top (up to 20) nodes by allocations...\n")
    nodes = sorted(by_node, key=lambda n: -len(by_node[n]))
    for n in nodes[:20]:
        w(f"  {n} has {len(by_node[n])} allocations\n")
    if nodes:
        w(f"Node with most allocations has {len(by_node[nodes[0]])}; median is "
          f"{len(by_node[nodes[len(nodes) // 2]])}\n")
    w("\n")

    problems = 0
    w("Scanning for IPs that are allocated but not actually in use...\n")
    leaked_ips = 0
    for ip in sorted(allocs, key=ipaddress.ip_address):
        owners = in_use.get(ip)
        for a in allocs[ip]:
            a.in_use = owners is not None
            a.owners = list(owners or [])
        if owners is None:
            leaked_ips += 1
            if show_problem_ips:
                for a in allocs[ip]:
                    w(f"  {ip} leaked; attrs {a.attr_string()}\n")
    problems += leaked_ips
    w(f"Found {leaked_ips} IPs that are allocated in IPAM but not actually in use.\n")

    w("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...\n")
    non_calico = unallocated = 0
    for ip in sorted(in_use, key=ipaddress.ip_address):
        owners = in_use[ip]
        if show_problem_ips and len(owners) > 1:
            w(f"  {ip} has multiple owners.\n")
        if ip in allocs:
            continue
        if not any(ipaddress.ip_address(ip) in net for net in active):
            non_calico += 1
            if show_problem_ips:
                for owner in owners:
                    w(f"  {ip} in use by {owner} is not in any active IP pool.\n")
            continue
        unallocated += 1
        if show_problem_ips:
            for owner in owners:
                w(f"  {ip} in use by {owner} and in active IPAM pool but has no IPAM allocation.\n")
    problems += non_calico + unallocated
    w(f"Found {non_calico} in-use IPs that are not in active IP pools.\n")
    w(f"Found {unallocated} in-use IPs that are in active IP pools but have no corresponding IPAM allocation.\n\n")

    w("Scanning for IPAM handles with no matching IPs...\n")
    leaked_handles = [h for h in sorted(handle_kvs) if h not in handles_in_blocks]
    for h in leaked_handles:
        if show_all_ips:
            w(f"  {h} doesn't have any active IPs.\n")
    problems += len(leaked_handles)
    w(f"Found {len(leaked_handles)} handles with no matching IPs (and "
      f"{len(handle_kvs) - len(leaked_handles)} handles with matches).\n")
    w("Scanning for IPs with missing handle...\n")
    missing = sorted(h for h in handles_in_blocks if h not in handle_kvs)
    for h in missing:
        if show_problem_ips:
            w(f"  {h} is in use in a block but doesn't exist.\n")
    w(f"Found {len(missing)} handles mentioned in blocks with no matching handle resource.\n")
    w("Validating IPAMBlock structures...\n")
    invalid = 0
    for kv in blocks:
        why = validate_block(kv.value.spec)
        if why:
            w(f"  IPAMBlock BlockKey(cidr={kv.value.spec.cidr}) is invalid: {why}\n")
            invalid += 1
    problems += invalid
    w(f"Found {invalid} invalid IPAMBlocks.\n")
    w(f"Check complete; found {problems} problems.\n")
    if output:
        report = {"version": CALICO_VERSION, "clusterGUID": guid, "datastoreLocked": locked,
                  "clusterInformationRevision": info_rev, "clusterType": ctype,
                  "allocations": {ip: [a.report() for a in v] for ip, v in allocs.items()},
                  "leakedHandles": [{"ID": h, "UID": None, "Revision": handle_kvs[h].revision}
                                    for h in leaked_handles] or None}
        try:
            with open(output, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
        except OSError as exc:
            raise IPAMCommandError(f"failed to write the report {output}: {exc.strerror or exc}") from exc
    return problems


def check_report_path(output: str) -> None:
    """Refuse, before checking anything, a report path that cannot be written (Calico ignores the failure)."""
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise IPAMCommandError(f"cannot write the report {output}: directory {parent} does not exist")
    if os.path.isdir(output):
        raise IPAMCommandError(f"cannot write the report {output}: it is a directory")
    target = output if os.path.exists(output) else parent
    if not os.access(target, os.W_OK):
        raise IPAMCommandError(f"cannot write the report {output}: permission denied")


def validate_block(spec: Any) -> str:
    """Calico's validateBlock: the reason a block is inconsistent, or "".

    A block has one slot in ``allocations`` per address of its CIDR (Calico's
    ``NumAddresses``); a block with more or fewer slots is invalid too (Calico
    would index past the end of it).
    """
    size = ipaddress.ip_network(spec.cidr, strict=False).num_addresses
    if len(spec.allocations) != size:
        return f"block has {len(spec.allocations)} allocation slots, expected {size} for {spec.cidr}"
    seen_attrs: set[int] = set()
    seen: set[int] = set()
    for o, idx in enumerate(spec.allocations):
        if idx is None:
            continue
        if idx < 0 or idx >= len(spec.attributes):
            return f"allocation {o} indexes a nonexistent attribute {idx}"
        seen_attrs.add(idx)
        seen.add(o)
    for i in range(len(spec.attributes)):
        if i not in seen_attrs:
            return f"attribute index {i} exists but is not indexed by an allocation"
    free: set[int] = set()
    for o in spec.unallocated:
        if o < 0 or o >= size:
            return f"ordinal {o} appears in the Unallocated array but is out of the block"
        if o in free:
            return f"ordinal {o} appears more than once in Unallocated array"
        if o in seen:
            return f"ordinal {o} is allocated but appears in Unallocated"
        free.add(o)
    if len(spec.unallocated) + len(seen) != size:
        return (f"expected {size} addresses in this block, but Unallocated "
                f"({len(spec.unallocated)}) + Allocated ({len(seen)}) = {len(spec.unallocated) + len(seen)}")
    return ""


# --- release ---------------------------------------------------------------------------------


async def release(be: Backend, out: TextIO, *, ips: Sequence[str] = (), from_report: Sequence[str] = (),
                  force: bool = False) -> None:
    ipam = IPAM(be)
    if ips:
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise IPAMCommandError(f"invalid IP address specified: {ip}") from None
        not_allocated = await ipam.release_ips([str(ipaddress.ip_address(ip)) for ip in ips])
        if not_allocated:
            raise IPAMCommandError(f"IP address {not_allocated[0]} is not assigned")
        out.write("Successfully released IP address " + ", ".join(ips) + "\n")
        return
    reports = []
    for path in from_report:
        try:
            with open(path, encoding="utf-8") as f:
                reports.append(json.load(f))
        except (OSError, ValueError, RecursionError) as exc:
            raise IPAMCommandError(f"cannot read the report {path}: {exc}") from None
    try:
        info = await be.get(ResourceKey(api.ClusterInformation, "default"))
        guid, locked, rev = info.value.spec.cluster_guid, info.value.spec.datastore_ready is False, info.revision
    except NotFound:
        guid, locked, rev = "", False, ""
    for path, r in zip(from_report, reports, strict=True):
        if r.get("clusterGUID") != guid:
            raise IPAMCommandError(f"cluster does not match the provided report ({path}): mismatched cluster GUID. "
                                   f"Refusing to release")
    if not any(r.get("clusterInformationRevision") == rev for r in reports) and locked:
        raise IPAMCommandError("the provided reports are all stale - at least one should be up-to-date. Please "
                               "generate a new report while the data store is locked and try again")
    if not locked:
        if not force:
            raise IPAMCommandError("data store is not locked. Either lock the data store, or re-run with --force")
        out.write("WARNING: Data store is not locked. Ignoring due to --force option\n")
    leaked = sorted({ip for r in reports for ip, allocs in (r.get("allocations") or {}).items()
                     if allocs and not any(a.get("inUse") for a in allocs)}, key=ipaddress.ip_address)
    handles = sorted({h["ID"] for r in reports for h in (r.get("leakedHandles") or [])})
    if not leaked:
        out.write("Report didn't contain any leaked IPs to clean up.\n")
    else:
        out.write(f"Releasing {len(leaked)} old IPs...\n")
        gone = await ipam.release_ips(leaked)
        out.write(f"Released {len(leaked) - len(gone)} IPs successfully\n")
        if gone:
            out.write(f"{len(gone)} addresses marked as leaked in the report had already been cleaned up.\n")
    if not handles:
        out.write("Report didn't contain any handles to clean up.\n")
        return
    out.write(f"Deleting {len(handles)} handles...\n")
    out.write("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.\n")
    ok = skipped = 0
    for h in handles:
        try:
            kv = await be.get(ResourceKey(api.IPAMHandle, h.lower()))
            blocks = [b for b in (await ipam.blocks()) if any(a.handle_id == h for a in b.allocations)]
            if blocks:
                raise NotFound(h)  # in use again since the report: skip it
            await be.delete(kv.key, kv.revision)
            out.write(".")
            ok += 1
        except Exception:
            out.write("x")
            skipped += 1
    out.write("\n")
    out.write(f"Released {ok} handles; {skipped} skipped; 0 errors.\n")


async def configure(be: Backend, out: TextIO, *, strict_affinity: str | None,
                    max_blocks_per_host: int | None) -> None:
    ipam = IPAM(be)
    cfg = await ipam.config()
    update: dict[str, Any] = {}
    if strict_affinity is not None:
        if strict_affinity not in ("true", "false"):
            raise ValidationError([ErroredField("--strictaffinity", "must be true or false", strict_affinity)])
        update["strict_affinity"] = strict_affinity == "true"
    if max_blocks_per_host is not None:
        if max_blocks_per_host < 0:
            raise ValidationError([ErroredField("--max-blocks-per-host", "must be 0 or more", max_blocks_per_host)])
        update["max_blocks_per_host"] = max_blocks_per_host
    await ipam.set_config(cfg.model_copy(update=update))
    out.write("Successfully set StrictAffinity to: "
              f"{str(update.get('strict_affinity', cfg.strict_affinity)).lower()}\n")


def run(action: str, ds: backend.DatastoreConfig, **kwargs: Any) -> int:
    async def go() -> int:
        be = backend.connect(ds)
        try:
            if action == "show":
                await show(be, sys.stdout, **kwargs)
            elif action == "check":
                await check(be, sys.stdout, **kwargs)
            elif action == "release":
                await release(be, sys.stdout, **kwargs)
            else:
                await configure(be, sys.stdout, **kwargs)
            return 0
        finally:
            await be.close()
    return asyncio.run(go())
