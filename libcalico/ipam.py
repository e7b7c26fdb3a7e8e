"""IP address management with block affinity, as Calico's IPAM does it.

Pools are carved into blocks of ``blockSize`` (a /26 is 64 addresses). A node
claims a block (a BlockAffinity, then the IPAMBlock with ``affinity:
host:<node>``) and allocates from its own blocks first; it claims another only
when its blocks are full; when its pools have no free block left it borrows
free addresses from other nodes' blocks, unless ``strictAffinity`` is set.
A node owns at most ``maxBlocksPerHost`` blocks (Calico's safeguard of 20
when unset); at that limit an allocation fails as Calico's does, it does not
borrow. Which pools: the requested ones, else every enabled pool whose nodeSelector
matches the node and that allows the use (Workload, Tunnel).

Every allocation belongs to a *handle* (``k8s-pod-network.<containerID>`` for
pods, ``ipip-tunnel-addr-<node>`` for tunnels) and carries attributes
(namespace, pod, node). The handle counts its addresses per block, so release
by handle touches only those blocks.

Every write is a compare-and-swap on the revision that was read, retried on
:class:`~libcalico.errors.Conflict` only and a bounded number of times; an
object in memory is replaced only by what a successful write returned. As in
Calico, a handle is incremented before the block is written and decremented
if the block write fails, so a crash can only leave a handle that counts too
much: ``calicoctl ipam check`` finds that, ``ipam release`` repairs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from libcalico import api, ipam_block, syncers
from libcalico.api.ipam import (BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec,
                                IPAMConfig, IPAMConfigSpec, IPAMHandle, IPAMHandleSpec, affinity_name, cidr_to_name)
from libcalico.api.registry import ModelT
from libcalico.backend.api import Backend, CreateAndUpdate, ListKeys, ListMany
from libcalico.errors import AlreadyExists, CalicoError, Conflict, NotFound
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.selector import Selector, parse
from libcalico.watching import SyncStatus, Update

log = logging.getLogger(__name__)

RETRIES = 100  # Calico's ipamEtcdRetries
# Calico's safeguard against runaway block claims when IPAMConfig.maxBlocksPerHost is 0 (unset).
DEFAULT_MAX_BLOCKS_PER_HOST = 20
ATTR_NAMESPACE = "namespace"
ATTR_POD = "pod"
ATTR_NODE = "node"
ATTR_TYPE = "type"
IPIP_TUNNEL_TYPE = "ipipTunnelAddress"
VXLAN_TUNNEL_TYPE = "vxlanTunnelAddress"


class IPAMError(CalicoError):
    """An allocation that cannot be made (no pools, pools full, strict affinity...)."""


def pod_handle(container_id: str) -> str:
    return f"k8s-pod-network.{container_id}".lower()


def tunnel_handle(node: str, kind: str) -> str:
    return f"{kind}-tunnel-addr-{node}".lower()


@dataclass(frozen=True)
class Allocation:
    ip: str
    handle_id: str | None
    attrs: dict[str, str]
    block: str


@dataclass
class BlockUsage:
    cidr: str
    affinity: str | None
    size: int
    used: int
    allocations: list[Allocation] = field(default_factory=list)


_net = functools.lru_cache(maxsize=16384)(ipaddress.ip_network)


@functools.lru_cache(maxsize=16384)
def _within(cidr: str, pool: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return _net(cidr).subnet_of(pool)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _selector(text: str) -> Selector:
    return parse(text)


def _key(kind: type[ModelT], name: str) -> ResourceKey[ModelT]:
    return ResourceKey(kind, name)


def block_key(cidr: str) -> ResourceKey[IPAMBlock]:
    return _key(api.IPAMBlock, cidr_to_name(cidr))


def new_block(cidr: str, node: str | None, strict: bool = False) -> IPAMBlock:
    return IPAMBlock(metadata=api.ObjectMeta(name=cidr_to_name(cidr)),
                     spec=ipam_block.new_spec(cidr, affinity=f"host:{node}" if node else None, strict=strict))


def _blocks_of(pool: ipaddress.IPv4Network | ipaddress.IPv6Network, block_size: int,
               start: int) -> Iterator[str]:
    """Every block of a pool, starting at ``start`` and wrapping round."""
    count = 2 ** (block_size - pool.prefixlen)
    step = 2 ** (pool.max_prefixlen - block_size)
    base = int(pool.network_address)
    for i in range(count):
        idx = (start + i) % count
        yield str(ipaddress.ip_network((base + idx * step, block_size)))


class WatchedInputs:
    """Pools, the IPAM configuration and nodes' labels, kept current by a watch (the syncer).

    A long-running allocator (a controller, a daemon) runs this so that each
    assignment reads its inputs from memory instead of three datastore reads.
    Until the syncer is in sync, and whenever it falls out of sync, IPAM reads
    the datastore as a one-shot caller (the CNI plugin) always does.
    """

    def __init__(self, backend: Backend) -> None:
        self._syncer = syncers.ipam_inputs().syncer(backend, self)
        self.pools: dict[str, api.IPPool] = {}
        self.config: IPAMConfigSpec = IPAMConfigSpec()
        self.labels: dict[str, dict[str, str]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def in_sync(self) -> bool:
        return self._syncer.status is SyncStatus.IN_SYNC

    def on_status(self, status: SyncStatus) -> None:
        log.debug("IPAM inputs: %s", status.value)

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            value = u.kv.value
            if u.key.kind == api.IPPool.KIND:
                if value is None:
                    self.pools.pop(u.key.name, None)
                else:
                    self.pools[u.key.name] = value
            elif u.key.kind == api.IPAMConfig.KIND:
                self.config = value.spec if value is not None else IPAMConfigSpec()
            elif u.key.kind == api.Node.KIND:
                if value is None:
                    self.labels.pop(u.key.name, None)
                else:
                    self.labels[u.key.name] = dict(value.metadata.labels)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._syncer.run(), name="ipam-inputs")

    async def wait_in_sync(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.in_sync:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class IPAM:
    """Allocation and release on any :class:`~libcalico.backend.api.Backend`."""

    def __init__(self, backend: Backend, retries: int = RETRIES, inputs: WatchedInputs | None = None) -> None:
        self._be = backend
        self._retries = retries
        self._inputs = inputs
        self._atomic = backend if isinstance(backend, CreateAndUpdate) else None  # handle + block in one write
        self._keys = backend if isinstance(backend, ListKeys) else None  # which blocks exist, without reading them
        self._many = backend if isinstance(backend, ListMany) else None  # an allocation's inputs in one read
        # One assignment at a time per node within this process, as Calico's host-wide IPAM lock
        # serialises its CNI invocations: callers on one node would only fight over the same block.
        self._node_locks: dict[str, asyncio.Lock] = {}
        # What this instance last wrote or read, to try a compare-and-swap without reading first.
        # A stale entry costs one Conflict (then a fresh read), never a wrong write.
        self._blocks: dict[str, KVPair] = {}
        self._affine: dict[str, list[str]] = {}

    # --- configuration and pools ------------------------------------------------------------

    async def config(self) -> IPAMConfigSpec:
        if self._inputs is not None and self._inputs.in_sync:
            return self._inputs.config
        try:
            value = (await self._be.get(_key(api.IPAMConfig, "default"))).value
            assert isinstance(value, IPAMConfig)
            return value.spec
        except NotFound:
            return IPAMConfigSpec()

    async def set_config(self, spec: IPAMConfigSpec) -> None:
        await self._be.apply(KVPair(_key(api.IPAMConfig, "default"),
                                    IPAMConfig(metadata=api.ObjectMeta(name="default"), spec=spec)))

    async def _node_labels(self, node: str) -> dict[str, str]:
        if self._inputs is not None and self._inputs.in_sync:
            return self._inputs.labels.get(node, {})
        try:
            value = (await self._be.get(ResourceKey(api.Node, node))).value
            return dict(value.metadata.labels)
        except NotFound:
            return {}

    async def _read_inputs(self, node: str) -> tuple[list[api.IPPool], dict[str, str], IPAMConfigSpec, list[str] | None]:
        """The pools, the node's labels, the IPAM configuration and (if not known yet) the node's blocks.

        From the watch when there is one and it is in sync; else in one read where the backend
        can (a CNI plugin's only read before it writes), else in three reads at once.
        """
        if self._inputs is not None and self._inputs.in_sync:
            inputs = self._inputs
            return list(inputs.pools.values()), inputs.labels.get(node, {}), inputs.config, None
        if self._many is None:
            listing, labels, cfg = await asyncio.gather(self._be.list(ResourceListOptions(api.IPPool)),
                                                        self._node_labels(node), self.config())
            return [kv.value for kv in listing.items], labels, cfg, None
        want_affine = node not in self._affine
        wanted: list[ResourceListOptions] = [ResourceListOptions(api.IPPool),
                                             ResourceListOptions(api.IPAMConfig, name="default"),
                                             ResourceListOptions(api.Node, name=node)]
        if want_affine:
            wanted.append(ResourceListOptions(api.BlockAffinity, node=node))
        pools, configs, nodes, *affinities = await self._many.list_many(wanted)
        return ([kv.value for kv in pools.items],
                dict(nodes.items[0].value.metadata.labels) if nodes.items else {},
                configs.items[0].value.spec if configs.items else IPAMConfigSpec(),
                self._confirmed(node, affinities[0].items) if affinities else None)

    async def pools_for(self, node: str, version: int = 4, requested: Sequence[str] = (),
                        use: str = "Workload") -> list[api.IPPool]:
        """The pools an allocation for ``node`` may use, in Calico's order (requested order, else by CIDR)."""
        pools, labels, _, _ = await self._read_inputs(node)
        return self._select_pools(pools, labels, version, requested, use)

    @staticmethod
    def _select_pools(pools: list[api.IPPool], labels: dict[str, str], version: int, requested: Sequence[str],
                      use: str) -> list[api.IPPool]:
        pools = [p for p in pools if _net(p.spec.cidr).version == version]
        if requested:
            chosen = []
            for want in requested:
                match = [p for p in pools if want in (p.metadata.name, p.spec.cidr)]
                if not match:
                    raise IPAMError(f"the given pool ({want}) does not exist")
                if match[0].spec.disabled:
                    raise IPAMError(f"the given pool ({want}) is disabled")
                chosen.append(match[0])
            return chosen
        out = []
        for p in sorted(pools, key=lambda p: _net(p.spec.cidr)):
            uses = [u.value if hasattr(u, "value") else u for u in p.spec.allowed_uses] or ["Workload", "Tunnel"]
            if p.spec.disabled or use not in uses:
                continue
            if _selector(p.spec.node_selector or "all()").evaluate(labels):
                out.append(p)
        return out

    # --- assignment ------------------------------------------------------------------------

    async def auto_assign(self, node: str, handle_id: str | None, attrs: dict[str, str], num: int = 1,
                          pools: Sequence[str] = (), version: int = 4, use: str = "Workload") -> list[str]:
        """Assign ``num`` addresses to ``node``; return them (as plain addresses)."""
        if num < 1:
            return []
        async with self._node_locks.setdefault(node, asyncio.Lock()):
            return await self._auto_assign(node, handle_id, attrs, num, pools, version, use)

    async def _auto_assign(self, node: str, handle_id: str | None, attrs: dict[str, str], num: int,
                           pools: Sequence[str], version: int, use: str) -> list[str]:
        all_pools, labels, cfg, listed = await self._read_inputs(node)
        if listed is not None:
            self._affine[node] = listed
        chosen = self._select_pools(all_pools, labels, version, pools, use)
        if not chosen:
            raise IPAMError(f"no configured Calico pools for node {node}")
        got: list[str] = []
        # 1. The node's own blocks (as last seen by this instance, else as listed now).
        nets = [_net(p.spec.cidr) for p in chosen]
        affine = self._affine.get(node)
        if affine is None:
            affine = self._affine[node] = await self.affine_blocks(node)
        owned = 0
        for cidr in affine:
            if not any(_within(cidr, n) for n in nets):
                continue
            owned += 1
            got += await self._assign_from_block(cidr, num - len(got), handle_id, attrs, node, affine_only=True)
            if len(got) == num:
                return got
        # Full (as far as this instance knows) or gone: read them again once the node has claimed
        # another block, in case addresses were released meanwhile.
        for cidr in self._affine.pop(node, []):
            self._blocks.pop(cidr, None)
        # 2. New blocks for the node.
        limit = cfg.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST
        while len(got) < num and cfg.auto_allocate_blocks:
            if owned >= limit:  # as Calico: an error, not a reason to borrow
                if got:
                    await self.release_ips(got)
                raise IPAMError(f"cannot allocate new block due to per host block limit: node {node} already has "
                                f"{owned} blocks and the limit is {limit} (IPAMConfig maxBlocksPerHost"
                                f"{'' if cfg.max_blocks_per_host else ', 0 means ' + str(limit)})")
            claimed = await self.claim_block(node, chosen, cfg.strict_affinity)
            if claimed is None:
                break
            owned += 1
            got += await self._assign_from_block(claimed, num - len(got), handle_id, attrs, node, affine_only=True)
        # 3. Borrow from other blocks in the pools.
        if len(got) < num and not cfg.strict_affinity:
            nets = [ipaddress.ip_network(p.spec.cidr) for p in chosen]
            for kv in (await self._be.list(ResourceListOptions(api.IPAMBlock))).items:
                net = ipaddress.ip_network(kv.value.spec.cidr)
                if kv.value.spec.strict_affinity or not any(net.subnet_of(n) for n in nets):  # type: ignore[arg-type]
                    continue
                got += await self._assign_from_block(kv.value.spec.cidr, num - len(got), handle_id, attrs, node,
                                                     affine_only=False)
                if len(got) == num:
                    break
        if len(got) < num:
            if got:
                await self.release_ips(got)
            why = "strict affinity is on and the node's blocks are full" if cfg.strict_affinity else \
                "no free addresses left in the pools"
            raise IPAMError(f"cannot assign {num} address(es) to node {node}: {why} "
                            f"(pools: {', '.join(p.spec.cidr for p in chosen)})")
        return got

    async def affine_blocks(self, node: str, pools: Sequence[api.IPPool] | None = None) -> list[str]:
        """CIDRs of the node's confirmed blocks (within ``pools`` if given), sorted."""
        return self._confirmed(node, (await self._be.list(ResourceListOptions(api.BlockAffinity, node=node))).items,
                               pools)

    @staticmethod
    def _confirmed(node: str, affinities: list[KVPair], pools: Sequence[api.IPPool] | None = None) -> list[str]:
        nets = [_net(p.spec.cidr) for p in pools] if pools is not None else None
        out = []
        for kv in affinities:
            spec = kv.value.spec
            # state "" is Calico's implicitly confirmed
            if spec.node != node or spec.state not in ("confirmed", "") or spec.deleted == "true":
                continue
            if nets is None or any(_within(spec.cidr, n) for n in nets):
                out.append(spec.cidr)
        return sorted(out, key=_net)

    async def claim_block(self, node: str, pools: Sequence[api.IPPool], strict: bool = False) -> str | None:
        """Claim a free block for ``node`` (affinity pending -> block -> affinity confirmed)."""
        blocks = ResourceListOptions(api.IPAMBlock)
        if self._keys is not None:
            taken = {key.name for key in await self._keys.list_keys(blocks)}
        else:
            taken = {kv.key.name for kv in (await self._be.list(blocks)).items}
        start = zlib.crc32(node.encode())
        for pool in pools:
            net = ipaddress.ip_network(pool.spec.cidr)
            for cidr in _blocks_of(net, pool.spec.block_size, start):
                if cidr_to_name(cidr) in taken:
                    continue
                if await self._claim(node, cidr, strict):
                    return cidr
        return None

    async def _claim(self, node: str, cidr: str, strict: bool) -> bool:
        aff_key = _key(api.BlockAffinity, affinity_name(node, cidr))
        affinity = BlockAffinity(metadata=api.ObjectMeta(name=aff_key.name),
                                 spec=BlockAffinitySpec(node=node, cidr=cidr, state="pending"))
        try:
            pending = await self._be.create(KVPair(aff_key, affinity))
        except AlreadyExists:
            pending = await self._be.get(aff_key)
        try:
            await self._be.create(KVPair(block_key(cidr), new_block(cidr, node, strict)))
        except AlreadyExists:
            # Someone else's block (or ours from an earlier, interrupted claim).
            existing = await self._be.get(block_key(cidr))
            if existing.value.spec.affinity != f"host:{node}":
                await self._delete_quietly(aff_key, pending.revision)
                return False
        confirmed = affinity.model_copy(update={"spec": affinity.spec.model_copy(update={"state": "confirmed"})})
        for _ in range(self._retries):
            try:
                await self._be.update(KVPair(aff_key, confirmed, pending.revision))
                break
            except Conflict:  # a concurrent claim of the same block by this node
                pending = await self._be.get(aff_key)
                if pending.value.spec.state in ("confirmed", ""):
                    break
        else:
            raise Conflict(aff_key)
        log.info("node %s claimed block %s", node, cidr)
        self._affine.pop(node, None)
        return True

    async def _delete_quietly(self, key: ResourceKey, revision: str = "") -> None:
        try:
            await self._be.delete(key, revision)
        except (NotFound, Conflict):
            pass

    async def _assign_from_block(self, cidr: str, num: int, handle_id: str | None, attrs: dict[str, str],
                                 node: str, affine_only: bool) -> list[str]:
        if num < 1:
            return []
        key = block_key(cidr)
        for _ in range(self._retries):
            kv_or_none = self._blocks.get(cidr)
            if kv_or_none is None:
                try:
                    kv_or_none = self._blocks[cidr] = await self._be.get(key)
                except NotFound:
                    return []
            kv = kv_or_none
            spec: IPAMBlockSpec = kv.value.spec
            if affine_only and spec.affinity != f"host:{node}":
                return []
            new_spec, ordinals = ipam_block.assign(spec, num, handle_id, attrs)
            if not ordinals:
                return []
            block = KVPair(key, kv.value.model_copy(update={"spec": ipam_block.written(new_spec)}), kv.revision)
            if handle_id and self._atomic is not None:
                # A new handle and the block in one transaction; an existing handle (a second
                # address for it) takes the two-step path below.
                try:
                    _, stored = await self._atomic.create_and_update(
                        self._new_handle(handle_id, cidr, len(ordinals)), block)
                    self._blocks[cidr] = stored
                    return ipam_block.addresses(spec, ordinals)
                except AlreadyExists:
                    pass   # the handle exists: add to it in two steps
                except (Conflict, NotFound):
                    self._blocks.pop(cidr, None)
                    continue
            if handle_id:
                await self._change_handle(handle_id, cidr, len(ordinals))
            try:
                stored = await self._be.update(block)
            except (Conflict, NotFound):
                self._blocks.pop(cidr, None)
                if handle_id:
                    await self._change_handle(handle_id, cidr, -len(ordinals))
                continue
            self._blocks[cidr] = stored
            return ipam_block.addresses(spec, ordinals)
        raise Conflict(key)

    async def assign_ip(self, ip: str, handle_id: str | None, attrs: dict[str, str], node: str) -> None:
        """Assign one given address (its block is claimed for ``node`` if it does not exist)."""
        addr = ipaddress.ip_address(ip)
        pools = [kv.value for kv in (await self._be.list(ResourceListOptions(api.IPPool))).items
                 if addr in ipaddress.ip_network(kv.value.spec.cidr)]
        if not pools:
            raise IPAMError(f"the address {ip} is not in any configured pool")
        cidr = str(ipaddress.ip_network((int(addr), pools[0].spec.block_size), strict=False))
        try:
            await self._be.get(block_key(cidr))
        except NotFound:
            await self._claim(node, cidr, False)
        key = block_key(cidr)
        for _ in range(self._retries):
            kv = await self._be.get(key)
            spec: IPAMBlockSpec = kv.value.spec
            ordinal = int(addr) - int(ipaddress.ip_network(cidr).network_address)
            try:
                new_spec = ipam_block.written(ipam_block.assign_ordinal(spec, ordinal, handle_id, attrs))
            except ipam_block.OrdinalTaken:
                raise AlreadyExists(f"IP {ip}", "the address is already in use") from None
            if handle_id:
                await self._change_handle(handle_id, cidr, 1)
            try:
                await self._be.update(KVPair(key, kv.value.model_copy(update={"spec": new_spec}), kv.revision))
                return
            except Conflict:
                if handle_id:
                    await self._change_handle(handle_id, cidr, -1)
        raise Conflict(key)

    # --- handles ---------------------------------------------------------------------------

    @staticmethod
    def _new_handle(handle_id: str, cidr: str, count: int) -> KVPair:
        key = _key(api.IPAMHandle, handle_id.lower())
        return KVPair(key, IPAMHandle(metadata=api.ObjectMeta(name=key.name),
                                      spec=IPAMHandleSpec(handle_id=handle_id, block={cidr: count})))

    async def _change_handle(self, handle_id: str, cidr: str, delta: int) -> None:
        key = _key(api.IPAMHandle, handle_id.lower())
        if delta > 0:  # most handles are new: try to create first, one round trip
            handle = self._new_handle(handle_id, cidr, delta).value
            try:
                await self._be.create(KVPair(key, handle))
                return
            except AlreadyExists:
                pass
        for _ in range(self._retries):
            try:
                kv = await self._be.get(key)
            except NotFound:
                if delta <= 0:
                    return
                try:
                    await self._be.create(KVPair(key, handle))
                    return
                except AlreadyExists:
                    continue
            spec: IPAMHandleSpec = kv.value.spec
            blocks = dict(spec.block)
            blocks[cidr] = blocks.get(cidr, 0) + delta
            if blocks[cidr] <= 0:
                del blocks[cidr]
            try:
                if not blocks:
                    await self._be.delete(key, kv.revision)
                else:
                    new = kv.value.model_copy(update={"spec": spec.model_copy(update={"block": blocks})})
                    await self._be.update(KVPair(key, new, kv.revision))
                return
            except (Conflict, NotFound):
                continue
        raise Conflict(key)

    # --- release ---------------------------------------------------------------------------

    async def release_ips(self, ips: Sequence[str]) -> list[str]:
        """Release addresses; return those that were not allocated."""
        blocks = [kv.value.spec.cidr for kv in (await self._be.list(ResourceListOptions(api.IPAMBlock))).items]
        by_block: dict[str, list[int]] = {}
        unallocated: list[str] = []
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            for cidr in blocks:
                net = ipaddress.ip_network(cidr)
                if addr in net:
                    by_block.setdefault(cidr, []).append(int(addr) - int(net.network_address))
                    break
            else:
                unallocated.append(ip)
        for cidr, ordinals in by_block.items():
            wanted = set(ordinals)
            freed = await self._release_in_block(cidr, lambda o, _a: o in wanted)
            base = ipaddress.ip_network(cidr).network_address
            unallocated += [str(base + o) for o in ordinals if o not in freed]
        return unallocated

    async def release_by_handle(self, handle_id: str) -> int:
        """Release every address of a handle (idempotent); return how many were released."""
        key = _key(api.IPAMHandle, handle_id.lower())
        try:
            kv = await self._be.get(key)
        except NotFound:
            return 0
        released = 0
        for cidr in list(kv.value.spec.block):
            freed = await self._release_in_block(cidr, lambda _o, a: a.handle_id == handle_id,
                                                 adjust_handles=False)
            released += len(freed)
        await self._delete_quietly(key)
        return released

    async def _release_in_block(self, cidr: str, select: ipam_block.Select, adjust_handles: bool = True) -> set[int]:
        """Free the ordinals of a block for which ``select(ordinal, attribute)`` is true."""
        key = block_key(cidr)
        self._blocks.pop(cidr, None)
        for _ in range(self._retries):
            try:
                kv = await self._be.get(key)
            except NotFound:
                return set()
            spec: IPAMBlockSpec = kv.value.spec
            new_spec, freed = ipam_block.release(spec, select)
            if not freed:
                return set()
            try:
                if ipam_block.empty(new_spec) and spec.affinity is None:
                    await self._be.delete(key, kv.revision)
                else:
                    await self._be.update(KVPair(key, kv.value.model_copy(
                        update={"spec": ipam_block.written(new_spec)}), kv.revision))
            except (Conflict, NotFound):
                continue
            if adjust_handles:
                counts: dict[str, int] = {}
                for h in freed.values():
                    if h:
                        counts[h] = counts.get(h, 0) + 1
                for h, n in counts.items():
                    await self._change_handle(h, cidr, -n)
            return set(freed)
        raise Conflict(key)

    async def release_host_affinities(self, node: str) -> None:
        """Drop a node's affinities; its empty blocks go, blocks still in use lose their affinity."""
        self._affine.pop(node, None)
        self._blocks.clear()
        for kv in (await self._be.list(ResourceListOptions(api.BlockAffinity))).items:
            if kv.value.spec.node != node:
                continue
            cidr = kv.value.spec.cidr
            for _ in range(self._retries):
                try:
                    bkv = await self._be.get(block_key(cidr))
                except NotFound:
                    break
                spec: IPAMBlockSpec = bkv.value.spec
                try:
                    if all(a is None for a in spec.allocations):
                        await self._be.delete(bkv.key, bkv.revision)
                    else:
                        new = spec.model_copy(update={"affinity": None})
                        await self._be.update(KVPair(bkv.key, bkv.value.model_copy(update={"spec": new}),
                                                     bkv.revision))
                    break
                except (Conflict, NotFound):
                    continue
            await self._delete_quietly(kv.key)

    # --- reads -----------------------------------------------------------------------------

    async def blocks(self) -> list[BlockUsage]:
        out = []
        for kv in (await self._be.list(ResourceListOptions(api.IPAMBlock))).items:
            spec: IPAMBlockSpec = kv.value.spec
            base = ipaddress.ip_network(spec.cidr).network_address
            allocs = [Allocation(str(base + o), spec.attributes[i].handle_id, dict(spec.attributes[i].secondary),
                                 spec.cidr) for o, i in enumerate(spec.allocations) if i is not None]
            out.append(BlockUsage(spec.cidr, spec.affinity, len(spec.allocations), len(allocs), allocs))
        return sorted(out, key=lambda b: ipaddress.ip_network(b.cidr))

    async def allocation(self, ip: str) -> Allocation | None:
        addr = ipaddress.ip_address(ip)
        for b in await self.blocks():
            if addr in ipaddress.ip_network(b.cidr):
                return next((a for a in b.allocations if a.ip == str(addr)), None)
        return None

    async def ips_by_handle(self, handle_id: str) -> list[str]:
        """The addresses a handle holds, in block order (empty if the handle does not exist)."""
        try:
            kv = await self._be.get(_key(api.IPAMHandle, handle_id.lower()))
        except NotFound:
            return []
        out: list[str] = []
        for cidr in sorted(kv.value.spec.block, key=ipaddress.ip_network):
            try:
                spec: IPAMBlockSpec = (await self._be.get(block_key(cidr))).value.spec
            except NotFound:
                continue
            base = ipaddress.ip_network(cidr).network_address
            out += [str(base + o) for o, i in enumerate(spec.allocations)
                    if i is not None and spec.attributes[i].handle_id == handle_id]
        return out

    async def handles(self) -> dict[str, dict[str, int]]:
        return {kv.value.spec.handle_id: dict(kv.value.spec.block)
                for kv in (await self._be.list(ResourceListOptions(api.IPAMHandle))).items}

    # --- tunnel addresses --------------------------------------------------------------------

    async def ensure_tunnel_address(self, node: str, kind: str) -> str:
        """The node's IPIP (``ipip``) or VXLAN (``vxlan``) tunnel address, allocated from its block
        and recorded on the Node (``ipv4IPIPTunnelAddr`` / ``ipv4VXLANTunnelAddr``)."""
        if kind not in ("ipip", "vxlan"):
            raise ValueError(f"tunnel kind must be ipip or vxlan, not {kind!r}")
        handle = tunnel_handle(node, kind)
        for _ in range(self._retries):
            kv = await self._be.get(ResourceKey(api.Node, node))
            nspec = kv.value.spec
            current = (nspec.bgp.ipv4_ipip_tunnel_addr if kind == "ipip" and nspec.bgp
                       else nspec.ipv4_vxlan_tunnel_addr if kind == "vxlan" else "")
            if current:
                found = await self.allocation(current)
                if found is not None and found.handle_id == handle:
                    return current
            ttype = IPIP_TUNNEL_TYPE if kind == "ipip" else VXLAN_TUNNEL_TYPE
            [ip] = await self.auto_assign(node, handle, {ATTR_NODE: node, ATTR_TYPE: ttype}, use="Tunnel")
            if kind == "ipip":
                bgp = nspec.bgp or api.NodeBGPSpec(ipv4_ipip_tunnel_addr=ip)
                new_spec = nspec.model_copy(update={"bgp": bgp.model_copy(update={"ipv4_ipip_tunnel_addr": ip})})
            else:
                new_spec = nspec.model_copy(update={"ipv4_vxlan_tunnel_addr": ip})
            try:
                await self._be.update(KVPair(kv.key, kv.value.model_copy(update={"spec": new_spec}), kv.revision))
                return ip
            except Conflict:
                await self.release_ips([ip])
        raise Conflict(ResourceKey(api.Node, node))
