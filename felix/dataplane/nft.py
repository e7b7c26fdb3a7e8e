"""Felix's nftables table: desired state in memory, one atomic JSON transaction per apply.

Felix owns one table per family, ``ip calico`` and ``ip6 calico`` (Calico's
nftables mode, ``felix/nftables/table.go``): nothing else writes into them, so a
freshly started Felix recognises everything in them as its own by the table's
name alone, and nothing outside them is ever touched. Both tables' changes go in
one transaction per apply (:func:`apply_tables`).

:class:`Table` holds what the managers want: base chains, chains (lists of
rules), sets and verdict maps (with their elements). Managers only change that
desired state; :meth:`Table.apply` turns the difference since the last apply
into one ``nft -j`` batch, in Calico's order: create what is new (sets and maps
first, so rules can name them; chains empty, so jumps can point at them), add
set and map elements, replace the chains whose rules changed (a flush and the
new rules: "one chain replaced"), delete elements, then delete chains (now
unreferenced), then sets. nft runs a batch as one transaction: all of it or
nothing, so the kernel never sees half an update.

Each rule carries a comment ``cali:<hash>`` (Calico's rule hash: SHA-224 chained
over the chain name and each rule's rendering, base64url, 16 characters). After
a failed batch, at start and on the periodic resync, the table reads the kernel
back (``list table``) and repairs only what drifted: a chain whose hashes differ
is replaced, missing or extra set elements are added or removed, and chains,
sets and maps the table does not want are deleted. Counters survive a resync
that finds nothing wrong.

The handle that talks to the kernel is injected (:class:`NftHandle`). Felix's default
(:func:`default_handle`) is :class:`felix.dataplane.nfnl.NetlinkNft`, which writes the
nf_tables netlink messages of these batches itself (docs/decisions.md, "libnftables'
cache") and hands the read-back and anything it does not encode to :class:`LibNft`.
:class:`LibNft` calls libnftables in process through ctypes (the library the ``nft``
tool is built on, with its JSON API; it is what Debian's python3-nftables wraps, which
pip cannot install), :class:`NftCommand` runs ``nft -j -f -``, and tests use
:class:`FakeNft`, an in-memory model of the commands this module sends.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import json
import logging
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("felix.nft")

TABLE = "calico"
HASH_PREFIX = "cali:"
HASH_LENGTH = 16

Expr = list[dict[str, Any]]
JSON = dict[str, Any]


class NftError(RuntimeError):
    """nft refused a batch (nothing of it was applied)."""


class NftHandle(Protocol):
    """Runs one JSON batch (``{"nftables": [...]}``) atomically; returns nft's JSON output.

    A rule's ``expr`` in a batch may be an :class:`EncodedExpr` (its JSON, already encoded);
    :func:`encode_batch` is how a handle turns a batch into the text libnftables parses."""

    def run(self, batch: JSON) -> JSON: ...


class EncodedExpr(str):
    """A rule's expression list, already JSON (its :meth:`Rule.rendering`, which the rule's hash is
    over): a batch of 24,000 rules then encodes each rule once, not once to hash it and again to send."""


def _encode_cmd(cmd: JSON) -> str:
    add = cmd.get("add")
    rule = add.get("rule") if isinstance(add, dict) else None
    if isinstance(rule, dict) and isinstance(rule.get("expr"), EncodedExpr):
        rest = {k: v for k, v in rule.items() if k != "expr"}
        head = json.dumps(rest, separators=(",", ":"))
        expr: str = rule["expr"]
        return '{"add":{"rule":' + head[:-1] + ',"expr":' + expr + "}}}"
    return json.dumps(cmd, separators=(",", ":"))


def encode_batch(batch: JSON) -> str:
    """The batch as JSON text (with :class:`EncodedExpr` expressions spliced in as they are)."""
    return '{"nftables":[' + ",".join(_encode_cmd(c) for c in batch["nftables"]) + "]}"


# --- handles ------------------------------------------------------------------------------------

_NFT_CTX_OUTPUT_JSON = 1 << 4
_NFT_CTX_OUTPUT_NUMERIC_PROTO = 1 << 7


class LibNft:
    """libnftables in this process (and this network namespace), through its JSON API."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(name)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        # JSON output makes libnftables parse its input as JSON too (nft_run_cmd_from_buffer).
        lib.nft_ctx_output_set_flags(self._ctx, _NFT_CTX_OUTPUT_JSON | _NFT_CTX_OUTPUT_NUMERIC_PROTO)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, batch: JSON) -> JSON:
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, encode_batch(batch).encode())
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(err.decode(errors="replace").strip() or f"nft failed ({rc})")
        return json.loads(out) if out.strip() else {"nftables": []}

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


class NftCommand:
    """``nft -j -f -``: the same batches through the nft tool (where libnftables cannot be loaded)."""

    def run(self, batch: JSON) -> JSON:
        r = subprocess.run(["nft", "-j", "-f", "-"], input=encode_batch(batch), capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise NftError(r.stderr.strip())
        return json.loads(r.stdout) if r.stdout.strip() else {"nftables": []}


def default_handle() -> NftHandle:
    """Felix's handle: nf_tables netlink messages written by Felix (:class:`felix.dataplane.nfnl.NetlinkNft`,
    no libnftables cache dump per batch) when the netlink socket opens, with libnftables (or the nft
    command) for the read-back and for anything it does not encode; libnftables alone otherwise."""
    lib: NftHandle
    try:
        lib = LibNft()
    except OSError:
        log.warning("libnftables not loadable; using the nft command")
        lib = NftCommand()
    from felix.dataplane import nfnl   # it builds on this module

    try:
        return nfnl.NetlinkNft(fallback=lib)
    except OSError as exc:
        log.warning("nf_tables netlink socket not available (%s); using libnftables for every batch", exc)
        return lib


# --- desired state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule: match and action expressions (nft JSON statements) and an optional comment."""

    expr: tuple[Any, ...]
    comment: str = ""

    @staticmethod
    def of(*stmts: dict[str, Any], comment: str = "") -> Rule:
        return Rule(tuple(stmts), comment)

    def rendering(self) -> EncodedExpr:
        """The rule's canonical JSON (what its hash is over, and what a batch carries); computed once
        per rule: a table of 24,000 rules hashes each one once, not once per pass over the table."""
        cached: EncodedExpr | None = self.__dict__.get("_rendering")
        if cached is None:
            cached = EncodedExpr(json.dumps(self.expr, separators=(",", ":"), sort_keys=True))
            self.__dict__["_rendering"] = cached   # a frozen dataclass: not a field, not compared
        return cached


@dataclass(frozen=True)
class BaseChain:
    type: str        # filter | nat
    hook: str        # input | forward | output | postrouting
    prio: int


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    base: BaseChain | None = None

    def hashes(self) -> list[str]:
        """:func:`rule_hashes` of this chain, computed once (the list is shared: do not change it)."""
        cached: list[str] | None = self.__dict__.get("_hashes")
        if cached is None:
            cached = rule_hashes(self.name, self.rules)
            self.__dict__["_hashes"] = cached
        return cached

    def targets(self) -> frozenset[str]:
        """The chains this chain's rules jump or go to, computed once."""
        cached: frozenset[str] | None = self.__dict__.get("_targets")
        if cached is None:
            cached = frozenset(stmt[verb]["target"] for r in self.rules for stmt in r.expr
                               if isinstance(stmt, dict) for verb in ("jump", "goto") if verb in stmt)
            self.__dict__["_targets"] = cached
        return cached


@dataclass
class NftSet:
    """A set (``type`` an nft type or a concatenation) or, with ``map_to``, a verdict map."""

    name: str
    type: str | list[str]
    flags: tuple[str, ...] = ()
    map_to: str = ""
    elements: dict[Any, Any] = field(default_factory=dict)   # key -> None (set) or verdict (map)


def rule_hashes(chain: str, rules: Iterable[Rule]) -> list[str]:
    """Calico's ``generictables.RuleHashes``: each hash chains the previous one, seeded by the chain name."""
    digest = hashlib.sha224(chain.encode()).digest()
    out = []
    for rule in rules:
        digest = hashlib.sha224(digest + rule.rendering().encode()).digest()
        out.append(base64.urlsafe_b64encode(digest).decode().rstrip("=")[:HASH_LENGTH])
    return out


def element_key(elem: Any) -> Any:
    """A set element as nft JSON writes it, to a hashable key (and back with :func:`element_json`)."""
    if isinstance(elem, dict):
        if "prefix" in elem:
            p = elem["prefix"]
            return ("prefix", p["addr"], int(p["len"]))
        if "range" in elem:
            lo, hi = elem["range"]
            return ("range", element_key(lo), element_key(hi))
        if "concat" in elem:
            return ("concat",) + tuple(element_key(e) for e in elem["concat"])
        if "elem" in elem:
            return element_key(elem["elem"]["val"])
    if isinstance(elem, list):
        return ("concat",) + tuple(element_key(e) for e in elem)
    return elem


def element_json(key: Any) -> Any:
    if isinstance(key, tuple):
        if key[0] == "prefix":
            return {"prefix": {"addr": key[1], "len": key[2]}}
        if key[0] == "range":
            return {"range": [element_json(key[1]), element_json(key[2])]}
        if key[0] == "concat":
            return {"concat": [element_json(k) for k in key[1:]]}
    return key


def _verdict_json(verdict: str) -> JSON:
    kind, _, target = verdict.partition(" ")
    return {kind: {"target": target}} if target else {kind: None}


class Table:
    """The desired contents of ``<family> calico`` and the batch that makes the kernel match it."""

    def __init__(self, handle: NftHandle, *, family: str = "ip") -> None:
        self.handle = handle
        self.family = family
        self.chains: dict[str, Chain] = {}
        self.sets: dict[str, NftSet] = {}
        self._dirty_chains: set[str] = set()
        self._deleted_chains: set[str] = set()
        self._new_sets: set[str] = set()
        self._deleted_sets: set[str] = set()
        self._elem_added: dict[str, dict[Any, Any]] = {}
        self._elem_removed: dict[str, set[Any]] = {}
        self._programmed_chains: dict[str, list[str]] = {}   # name -> rule hashes in the kernel
        self._programmed_sets: set[str] = set()
        self._programmed_elems: dict[str, dict[Any, Any]] = {}   # set -> elements in the kernel
        self._programmed_maps: set[str] = set()
        self.need_resync = True
        self.transactions = 0
        self._staged_resync = False

    # --- what managers call ------------------------------------------------------------------

    def set_chain(self, chain: Chain) -> None:
        if self.chains.get(chain.name) == chain:
            return
        self.chains[chain.name] = chain
        self._dirty_chains.add(chain.name)
        self._deleted_chains.discard(chain.name)

    def remove_chain(self, name: str) -> None:
        if self.chains.pop(name, None) is not None:
            self._dirty_chains.discard(name)
            self._deleted_chains.add(name)

    def ensure_set(self, name: str, type_: str | list[str], *, flags: tuple[str, ...] = (), map_to: str = "") -> None:
        if name in self.sets:
            return
        self.sets[name] = NftSet(name, type_, flags, map_to)
        self._deleted_sets.discard(name)
        if name in self._programmed_sets:
            # Deleted and wanted again before an apply: its kernel elements must all go.
            self._elem_removed[name] = set(self._programmed_elems.get(name, {}))
        else:
            self._new_sets.add(name)

    def remove_set(self, name: str) -> None:
        if self.sets.pop(name, None) is not None:
            self._new_sets.discard(name)
            self._deleted_sets.add(name)
            self._elem_added.pop(name, None)
            self._elem_removed.pop(name, None)

    def add_elements(self, name: str, elems: Mapping[Any, Any]) -> None:
        """Set elements (value None) or map elements (value: a verdict such as ``goto chain``)."""
        s = self.sets[name]
        programmed = self._programmed_elems.setdefault(name, {})
        adds = self._elem_added.setdefault(name, {})
        dels = self._elem_removed.setdefault(name, set())
        for key, value in elems.items():
            s.elements[key] = value
            if key in programmed and programmed[key] == value:
                adds.pop(key, None)
                dels.discard(key)
                continue
            adds[key] = value
            if key in programmed:
                dels.add(key)  # a map element whose verdict changes: delete, then add
            else:
                dels.discard(key)

    def remove_elements(self, name: str, keys: Iterable[Any]) -> None:
        s = self.sets.get(name)
        if s is None:
            return
        programmed = self._programmed_elems.setdefault(name, {})
        adds = self._elem_added.setdefault(name, {})
        dels = self._elem_removed.setdefault(name, set())
        for key in keys:
            s.elements.pop(key, None)
            adds.pop(key, None)
            if key in programmed:
                dels.add(key)

    def missing_targets(self) -> set[str]:
        """Chains that changed chains or added map elements point at, but that are not wanted."""
        missing: set[str] = set()
        chains = self.chains
        for name in (chains if self.need_resync else self._dirty_chains):
            missing.update(t for t in chains[name].targets() if t not in chains)
        for sname, adds in self._elem_added.items():
            s = self.sets.get(sname)
            if s is not None and s.map_to:
                for verdict in adds.values():
                    target = str(verdict).partition(" ")[2]
                    if target and target not in chains:
                        missing.add(target)
        return missing

    @property
    def dirty(self) -> bool:
        return bool(self.need_resync or self._dirty_chains or self._deleted_chains or self._new_sets
                    or self._deleted_sets or any(self._elem_added.values()) or any(self._elem_removed.values()))

    # --- rendering --------------------------------------------------------------------------

    def _obj(self, **kw: Any) -> JSON:
        return {"family": self.family, "table": TABLE, **kw}

    def _chain_obj(self, chain: Chain) -> JSON:
        obj = self._obj(name=chain.name)
        if chain.base is not None:
            obj.update(type=chain.base.type, hook=chain.base.hook, prio=chain.base.prio, policy="accept")
        return obj

    def _set_obj(self, s: NftSet) -> JSON:
        obj = self._obj(name=s.name, type=s.type)
        if s.flags:
            obj["flags"] = list(s.flags)
        if s.map_to:
            obj["map"] = s.map_to
        return obj

    def _elems(self, s: NftSet, keys: Iterable[Any]) -> list[Any]:
        if s.map_to:
            return [[element_json(k), _verdict_json(s.elements[k])] for k in keys]
        return [element_json(k) for k in keys]

    def _rule_cmds(self, chain: Chain) -> list[JSON]:
        fam, name = self.family, chain.name
        cmds = []
        for h, rule in zip(chain.hashes(), chain.rules):
            comment = f"{HASH_PREFIX}{h};" + (f" {rule.comment}"[:127 - len(HASH_PREFIX) - HASH_LENGTH]
                                                if rule.comment else "")
            cmds.append({"add": {"rule": {"family": fam, "table": TABLE, "chain": name, "expr": rule.rendering(),
                                          "comment": comment}}})
        return cmds

    def _incremental(self) -> list[JSON]:
        cmds: list[JSON] = [{"add": {"table": {"family": self.family, "name": TABLE}}}]
        for name in sorted(self._new_sets):
            cmds.append({"add": {"map" if self.sets[name].map_to else "set": self._set_obj(self.sets[name])}})
        for name in sorted(self._dirty_chains):
            if name not in self._programmed_chains:
                cmds.append({"add": {"chain": self._chain_obj(self.chains[name])}})
        for name, dels in sorted(self._elem_removed.items()):
            if dels and name in self.sets and name in self._programmed_sets:
                cmds.append({"delete": {"element": self._obj(name=name, elem=[element_json(k)
                                                                                for k in sorted(dels, key=str)])}})
        for name, adds in sorted(self._elem_added.items()):
            if adds and name in self.sets:
                cmds.append({"add": {"element": self._obj(name=name,
                                                           elem=self._elems(self.sets[name], sorted(adds, key=str)))}})
        for name in sorted(self._dirty_chains):
            if name in self._programmed_chains:
                cmds.append({"flush": {"chain": self._obj(name=name)}})
            cmds += self._rule_cmds(self.chains[name])
        gone = sorted(n for n in self._deleted_chains if n in self._programmed_chains)
        cmds += [{"flush": {"chain": self._obj(name=n)}} for n in gone]
        cmds += [{"delete": {"chain": self._obj(name=n)}} for n in gone]
        for name in sorted(self._deleted_sets):
            if name in self._programmed_sets:
                kind = "map" if name in self._programmed_maps else "set"
                cmds.append({"delete": {kind: self._obj(name=name)}})
        return cmds

    def _mark_clean(self) -> None:
        for name in self._dirty_chains:
            self._programmed_chains[name] = self.chains[name].hashes()
        for name in self._deleted_chains:
            self._programmed_chains.pop(name, None)
        self._programmed_sets |= self._new_sets
        self._programmed_maps |= {n for n in self._new_sets if self.sets[n].map_to}
        self._programmed_sets -= self._deleted_sets
        self._programmed_maps -= self._deleted_sets
        for name in self._deleted_sets:
            self._programmed_elems.pop(name, None)
        for name, dels in self._elem_removed.items():
            programmed = self._programmed_elems.setdefault(name, {})
            for k in dels:
                programmed.pop(k, None)
        for name, adds in self._elem_added.items():
            if name in self.sets:
                self._programmed_elems.setdefault(name, {}).update(adds)
        for coll in (self._dirty_chains, self._deleted_chains, self._new_sets, self._deleted_sets):
            coll.clear()
        self._elem_added.clear()
        self._elem_removed.clear()

    # --- reading the kernel back ---------------------------------------------------------------

    def read_kernel(self) -> tuple[dict[str, list[str]], dict[str, set[Any]], dict[str, Any], bool]:
        """(chains -> rule hashes, sets -> element keys, sets -> their spec, table exists)."""
        try:
            out = self.handle.run({"nftables": [{"list": {"table": {"family": self.family, "name": TABLE}}}]})
        except NftError as exc:
            if "No such file" in str(exc) or "does not exist" in str(exc):
                return {}, {}, {}, False
            raise
        chains: dict[str, list[str]] = {}
        sets: dict[str, set[Any]] = {}
        specs: dict[str, Any] = {}
        for item in out.get("nftables", []):
            if "chain" in item:
                c = item["chain"]
                chains[c["name"]] = []
                specs["chain:" + c["name"]] = (c.get("type"), c.get("hook"), c.get("prio"))
            elif "rule" in item:
                r = item["rule"]
                comment = r.get("comment", "")
                h = comment[len(HASH_PREFIX):len(HASH_PREFIX) + HASH_LENGTH] if comment.startswith(HASH_PREFIX) else "?"
                chains.setdefault(r["chain"], []).append(h)
            elif "set" in item or "map" in item:
                s = item.get("set") or item["map"]
                elems = s.get("elem", [])
                keys: set[Any] = set()
                for e in elems:
                    if "map" in item and isinstance(e, list):
                        keys.add((element_key(e[0]), json.dumps(e[1], sort_keys=True)))
                    else:
                        keys.add(element_key(e))
                sets[s["name"]] = keys
                specs["set:" + s["name"]] = (s.get("type"), s.get("map"), tuple(s.get("flags", [])))
        return chains, sets, specs, True

    def _resync_cmds(self) -> list[JSON]:
        """Compare with the kernel: repair what drifted, delete what is ours but unwanted."""
        have_chains, have_sets, specs, _ = self.read_kernel()
        cmds: list[JSON] = [{"add": {"table": {"family": self.family, "name": TABLE}}}]
        for name, s in sorted(self.sets.items()):
            spec = specs.get("set:" + name)
            want_spec = (s.type, s.map_to or None, s.flags)
            if spec is not None and (spec[0], spec[1]) != (want_spec[0], want_spec[1]):
                # Wrong type: it has to go (and everything naming it is rewritten below).
                cmds.append({"delete": {"map" if spec[1] else "set": self._obj(name=name)}})
                have_sets.pop(name, None)
                for chain_name in have_chains:
                    have_chains[chain_name] = ["?"]
            if name not in have_sets:
                cmds.append({"add": {"map" if s.map_to else "set": self._set_obj(s)}})
        for name, chain in sorted(self.chains.items()):
            if name not in have_chains:
                cmds.append({"add": {"chain": self._chain_obj(chain)}})
            elif chain.base is not None and specs.get("chain:" + name) != (chain.base.type, chain.base.hook,
                                                                             chain.base.prio):
                cmds.append({"add": {"chain": self._chain_obj(chain)}})
        for name, chain in sorted(self.chains.items()):
            if have_chains.get(name) != chain.hashes():
                if name in have_chains:
                    cmds.append({"flush": {"chain": self._obj(name=name)}})
                cmds += self._rule_cmds(chain)
        for name, s in sorted(self.sets.items()):
            have = have_sets.get(name, set())
            if s.map_to:
                want = {(k, json.dumps(_verdict_json(v), sort_keys=True)): k for k, v in s.elements.items()}
                extra = [k for k in have if k not in want]
                if extra:
                    cmds.append({"delete": {"element": self._obj(name=name, elem=[element_json(k[0]) for k in extra])}})
                missing = [k for wk, k in want.items() if wk not in have]
            else:
                extra = sorted(have - set(s.elements), key=str)
                if extra:
                    cmds.append({"delete": {"element": self._obj(name=name, elem=[element_json(k) for k in extra])}})
                missing = sorted(set(s.elements) - have, key=str)
            if missing:
                cmds.append({"add": {"element": self._obj(name=name, elem=self._elems(s, missing))}})
        stray_chains = sorted(set(have_chains) - set(self.chains))
        for name in stray_chains:
            cmds.append({"flush": {"chain": self._obj(name=name)}})
        for name in stray_chains:
            cmds.append({"delete": {"chain": self._obj(name=name)}})
        for name in sorted(set(have_sets) - set(self.sets)):
            kind = "map" if (specs.get("set:" + name) or (None, None))[1] else "set"
            cmds.append({"delete": {kind: self._obj(name=name)}})
        return cmds

    # --- apply ------------------------------------------------------------------------------

    def stage(self) -> list[JSON] | None:
        """The commands that make the kernel match (None: nothing to send); :meth:`committed` after
        they were applied, or set ``need_resync`` if they failed."""
        if not self.dirty:
            return None
        resync = self.need_resync
        cmds = self._resync_cmds() if resync else self._incremental()
        self._staged_resync = resync
        if len(cmds) <= 1 and not resync:
            self._mark_clean()
            return None
        return cmds if len(cmds) > 1 else []

    def committed(self) -> None:
        self._mark_clean()
        if self._staged_resync:
            self._programmed_chains = {n: c.hashes() for n, c in self.chains.items()}
            self._programmed_sets = set(self.sets)
            self._programmed_maps = {n for n, st in self.sets.items() if st.map_to}
            self._programmed_elems = {n: dict(st.elements) for n, st in self.sets.items()}
            self.need_resync = False
        self._staged_resync = False

    def apply(self) -> int:
        """Make the kernel match; return the number of commands sent (0: nothing to do)."""
        return apply_tables(self.handle, [self])


def apply_tables(handle: NftHandle, tables: list[Table]) -> int:
    """One transaction for the tables' changes (``ip calico`` and ``ip6 calico`` together: all or
    nothing, and libnftables loads its cache of the ruleset once, not once per table); returns the
    number of commands sent. On failure every table that had something to send resyncs."""
    staged = [(t, t.stage()) for t in tables]
    cmds = [c for _, cs in staged if cs for c in cs]
    if cmds:
        try:
            handle.run({"nftables": cmds})
        except NftError:
            for t, cs in staged:
                if cs is not None:
                    t.need_resync = True
            raise
        for t, cs in staged:
            if cs:
                t.transactions += 1
    for t, cs in staged:
        if cs is not None:
            t.committed()
    return sum(len(cs) - 1 for _, cs in staged if cs)


# --- a fake kernel for tests ----------------------------------------------------------------------


class FakeNft:
    """The commands :class:`Table` sends, applied to an in-memory ruleset with nft's all-or-nothing
    semantics (a failing command leaves everything as it was). ``tables`` is inspectable."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], dict[str, Any]] = {}
        self.batches: list[list[JSON]] = []
        self.fail_next: str = ""

    def run(self, batch: JSON) -> JSON:
        import copy

        cmds = json.loads(encode_batch(batch))["nftables"]   # what a real handle would send
        if self.fail_next:
            msg, self.fail_next = self.fail_next, ""
            raise NftError(msg)
        if len(cmds) == 1 and "list" in cmds[0]:
            t = cmds[0]["list"]["table"]
            return self._list(t["family"], t["name"])
        self.batches.append(cmds)
        saved = copy.deepcopy(self.tables)
        try:
            for cmd in cmds:
                self._one(cmd)
        except (KeyError, NftError) as exc:
            self.tables = saved
            raise NftError(f"fake nft: {exc}") from exc
        return {"nftables": []}

    def _table(self, obj: JSON) -> dict[str, Any]:
        key = (obj["family"], obj.get("table") or obj["name"])
        if key not in self.tables:
            raise NftError(f"No such file or directory: table {key}")
        return self.tables[key]

    def _one(self, cmd: JSON) -> None:
        (verb, body), = cmd.items()
        (what, obj), = body.items()
        if what == "table":
            key = (obj["family"], obj["name"])
            if verb == "add":
                self.tables.setdefault(key, {"chains": {}, "sets": {}, "specs": {}})
            elif verb == "delete":
                del self.tables[key]
            return
        t = self._table(obj)
        if what == "chain":
            if verb == "add":
                t["chains"].setdefault(obj["name"], [])
                t["specs"]["chain:" + obj["name"]] = obj
            elif verb == "flush":
                t["chains"][obj["name"]][:] = []
            elif verb == "delete":
                if t["chains"][obj["name"]]:
                    raise NftError(f"chain {obj['name']} is not empty")
                if any(self._refers(r, obj["name"]) for rules in t["chains"].values() for r in rules):
                    raise NftError(f"chain {obj['name']} is in use")
                del t["chains"][obj["name"]]
        elif what == "rule":
            for ref in self._targets(obj["expr"]):
                if ref not in t["chains"]:
                    raise NftError(f"jump to unknown chain {ref}")
            t["chains"][obj["chain"]].append(obj)
        elif what in ("set", "map"):
            if verb == "add":
                t["sets"].setdefault(obj["name"], {})
                t["specs"]["set:" + obj["name"]] = obj
            elif verb == "delete":
                del t["sets"][obj["name"]]
        elif what == "element":
            s = t["sets"][obj["name"]]
            for e in obj["elem"]:
                if isinstance(e, list):
                    k, v = element_key(e[0]), e[1]
                else:
                    k, v = element_key(e), None
                if verb == "add":
                    if k in s and s[k] != v:
                        raise NftError(f"element {k} exists with another value")
                    s[k] = v
                elif k not in s:
                    raise NftError(f"No such file or directory: element {k}")
                else:
                    del s[k]

    @staticmethod
    def _targets(expr: list[Any]) -> list[str]:
        out = []
        for stmt in expr:
            for verb in ("jump", "goto"):
                if isinstance(stmt, dict) and verb in stmt:
                    out.append(stmt[verb]["target"])
        return out

    def _refers(self, rule: JSON, chain: str) -> bool:
        return chain in self._targets(rule["expr"])

    def _list(self, family: str, name: str) -> JSON:
        t = self.tables.get((family, name))
        if t is None:
            raise NftError("Error: No such file or directory; did you mean table 'calico'?")
        out: list[JSON] = [{"table": {"family": family, "name": name}}]
        for sname, elems in t["sets"].items():
            spec = dict(t["specs"]["set:" + sname])
            kind = "map" if "map" in spec else "set"
            if elems:
                spec["elem"] = [[element_json(k), v] if kind == "map" else element_json(k) for k, v in elems.items()]
            out.append({kind: spec})
        for cname, rules in t["chains"].items():
            out.append({"chain": t["specs"]["chain:" + cname]})
            out += [{"rule": r} for r in rules]
        return {"nftables": out}

    # --- inspection helpers for tests ----------------------------------------------------------

    def chain(self, name: str, family: str = "ip") -> list[list[Any]]:
        return [r["expr"] for r in self.tables[(family, TABLE)]["chains"][name]]

    def elements(self, name: str, family: str = "ip") -> dict[Any, Any]:
        return dict(self.tables[(family, TABLE)]["sets"][name])
