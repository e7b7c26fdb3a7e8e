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
