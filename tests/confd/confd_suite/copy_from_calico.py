"""Copy Calico's confd oneshot etcd-mode cases into tests/confd_suite."""
import re, subprocess, sys
from pathlib import Path
GIT = ["git", "--git-dir=/work/.mirror/projectcalico+calico/repo"]
COMMIT = subprocess.check_output(GIT + ["rev-parse", "HEAD"], text=True).strip()
def show(p): return subprocess.run(GIT + ["show", f"{COMMIT}:{p}"], capture_output=True, text=True)
sys.path.insert(0, "/work/wt/e")
from tests.confd_statements import statements
out = Path("/work/wt/e/tests/confd_suite")
cases = []
for f in ["mesh", "explicit_peering", "bgpfilter", "ttl_security", "extra_oneshot"]:
    src = show(f"confd/tests/{f}_test.go").stdout
    for m in re.finditer(r'\{name: "([^"]+)", goldenDir: "([^"]+)"(.*?)\},?\n', src):
        rest = m.group(3)
        if "kddOnly: true" in rest:
            continue
        env = dict(re.findall(r'"([A-Z_]+)": "([^"]*)"', rest))
        cases.append((m.group(2), env))
for case, env in cases:
    d = out / case
    d.mkdir(parents=True, exist_ok=True)
    (d / "input.yaml").write_text(show(f"confd/tests/mock_data/calicoctl/{case}/input.yaml").stdout)
    for name in ["bird.cfg", "bird6.cfg", "bird_ipam.cfg", "bird6_ipam.cfg", "bird_aggr.cfg", "bird6_aggr.cfg"]:
        r = show(f"confd/tests/compiled_templates/{case}/{name}")
        assert r.returncode == 0, (case, name)
        (d / name).write_text("\n".join(statements(r.stdout)) + "\n")
    if env:
        (d / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
print(COMMIT, len(cases))

# The etcd-mode scenarios of daemon_test.go, each step as the state it leaves, rendered once:
# (case, base input, change, node, block affinities seeded). A change is applied to the base's
# documents: ("upsert", <input dir>) adds or replaces documents by kind and name; ("delete", kind,
# name); ("set", kind, name, field, value) sets one spec field. The derived input.yaml is written
# as JSON documents (read as Calico reads them, libcalico.api.manifests), so nothing changes meaning.
import json
from libcalico.api import manifests

def docs_of(case):
    return [d for d in manifests.load_yaml_documents(show(f"confd/tests/mock_data/calicoctl/{case}/input.yaml").stdout) if d]

def change(docs, op):
    docs = [json.loads(json.dumps(d)) for d in docs]
    ident = lambda d: (d["kind"], d["metadata"]["name"])
    if op[0] == "upsert":
        for new in docs_of(op[1]):
            docs = [d for d in docs if ident(d) != ident(new)] + [new]
    elif op[0] == "delete":
        docs = [d for d in docs if ident(d) != (op[1], op[2])]
    elif op[0] == "set":
        for d in docs:
            if ident(d) == (op[1], op[2]):
                d.setdefault("spec", {})[op[3]] = op[4]
    return docs

PCR = [("mesh/restart-time/pcr-disabled", "Disabled"), ("mesh/restart-time/pcr-enabled", "Enabled"),
       ("mesh/restart-time/pcr-ipip-only", "EnabledIPIPOnly")]
DAEMON = [
    ("mesh/communities/step2", "mesh/communities", [("upsert", "mesh/communities/step2")], "kube-master", True),
    ("explicit_peering/selectors/step2", "explicit_peering/selectors", [("upsert", "explicit_peering/selectors/step2")],
     "kube-master", True),
    ("bgpfilter/filter_deletion/step1", "bgpfilter/filter_deletion", [], "kube-master", True),
    ("bgpfilter/filter_deletion/step2", "bgpfilter/filter_deletion", [("delete", "BGPFilter", "test-filter")],
     "kube-master", True),
    ("bgpfilter/node_mesh/priority1", "bgpfilter/node_mesh", [], "kube-master", False),
    ("bgpfilter/node_mesh/priority2", "bgpfilter/node_mesh",
     [("set", "BGPConfiguration", "default", "ipv4NormalRoutePriority", 5000)], "kube-master", False),
    ("bgpfilter/node_mesh/priority3", "bgpfilter/node_mesh",
     [("set", "BGPConfiguration", "default", "ipv4NormalRoutePriority", 5000),
      ("set", "BGPConfiguration", "default", "ipv6NormalRoutePriority", 80)], "kube-master", False),
    *[(c, "mesh/restart-time", [("set", "BGPConfiguration", "default", "programClusterRoutes", v)], "kube-master", True)
      for c, v in PCR],
    ("sourceaddr_gracefulrestart/step1", "sourceaddr_gracefulrestart", [], "node1", False),
    ("sourceaddr_gracefulrestart/step2", "sourceaddr_gracefulrestart",
     [("set", "BGPPeer", "bgppeer-1", "sourceAddress", "None")], "node1", False),
    ("sourceaddr_gracefulrestart/step3", "sourceaddr_gracefulrestart",
     [("set", "BGPPeer", "bgppeer-1", "sourceAddress", "None"), ("set", "BGPPeer", "bgppeer-1", "maxRestartTime", "10s")],
     "node1", False),
]
for case, base, ops, node, affinities in DAEMON:
    d = out / case
    d.mkdir(parents=True, exist_ok=True)
    docs = docs_of(base)
    for op in ops:
        docs = change(docs, op)
    (d / "input.yaml").write_text(f"# Derived from confd/tests/mock_data/calicoctl/{base}/input.yaml: {ops}\n"
                                  + "\n---\n".join(json.dumps(x, indent=1) for x in docs) + "\n")
    for name in ["bird.cfg", "bird6.cfg", "bird_ipam.cfg", "bird6_ipam.cfg", "bird_aggr.cfg", "bird6_aggr.cfg"]:
        r = show(f"confd/tests/compiled_templates/{case}/{name}")
        assert r.returncode == 0, (case, name)
        (d / name).write_text("\n".join(statements(r.stdout)) + "\n")
    if node != "kube-master":
        (d / "node").write_text(node + "\n")
    if not affinities:
        (d / "no-affinities").write_text("Calico's daemon test runs this withoutBlockAffinities()\n")
print(len(DAEMON), "daemon steps")
