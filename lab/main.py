"""``calico-lab``: a Calico cluster in a box, made of network namespaces (see :mod:`lab.cluster`).

    calico-lab up [--nodes 4] [--encap vxlan|vxlan-crosssubnet|ipip|ipip-crosssubnet|none] [--bgp mesh|rr]
                  [--datastore etcd|kubernetes [--api-group projectcalico.org/v3|crd.projectcalico.org/v1]]
                  [--observability] [--typha] [--kube-controllers]
    calico-lab pod create NAME --node NODE [--namespace NS] [--label k=v ...]
    calico-lab pod label NAME k=v [k2- ...]
    calico-lab exec NAME -- CMD...
    calico-lab status
    calico-lab dashboards --png DIR [--range SECONDS]
    calico-lab demo [--out DIR]
    calico-lab demo --encap ENCAP [--nodes 4] [--bgp mesh|rr] [--typha] [--out DIR]
    calico-lab down

``demo`` alone runs the seed's experiments on the running lab. With
``--encap`` it is a run of its own: up, the experiments, down. For the IPIP
encapsulations on a kernel without the ipip module that run happens in a VM on
Debian's kernel (:mod:`lab.vm`), which writes the same report here.

State lives under ``$CALICO_LAB_DIR`` (default /var/run/calico-lab/<name>), so
``down`` cleans up after any ``up``, finished or not. Needs root (network
namespaces).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from lab.cluster import API_GROUPS, DEFAULT_RUN_DIR, ENCAPS, KCC_CONTROLLERS, Lab, LabError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calico-lab", description="A Calico cluster made of network namespaces.")
    p.add_argument("--dir", type=Path, default=DEFAULT_RUN_DIR, help="run directory (state, logs, configs)")
    p.add_argument("--lab-name", dest="lab_name", default="lab", help="lab name (prefix of its namespaces)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    up = sub.add_parser("up", help="start etcd, nodes, Felix, confd and BIRD")
    up.add_argument("--nodes", type=int, default=4)
    up.add_argument("--encap", default="vxlan", choices=ENCAPS)
    up.add_argument("--bgp", default="mesh", choices=("mesh", "rr"))
    up.add_argument("--datastore", default="etcd", choices=("etcd", "kubernetes"))
    up.add_argument("--api-group", default=API_GROUPS[0], choices=API_GROUPS,
                    help="with --datastore kubernetes: the CRDs' group (crds/v3 or crds/v1); the README's "
                         "examples are projectcalico.org/v3")
    up.add_argument("--observability", action="store_true",
                    help="also run Prometheus (deploy/observability/prometheus.yml) scraping every Felix")
    up.add_argument("--typha", action="store_true",
                    help="run calico-typha in the underlay; every Felix and confd follows it (restarted if it exits)")
    up.add_argument("--kube-controllers", action="store_true",
                    help="with --datastore kubernetes: run calico-kube-controllers in the underlay "
                         f"(ENABLED_CONTROLLERS={KCC_CONTROLLERS}; pools from an operator Installation)")
    sub.add_parser("down", help="remove every namespace, link and process of the lab")
    sub.add_parser("status", help="nodes, processes, health, BGP sessions, pods")
    pod = sub.add_parser("pod", help="pods")
    psub = pod.add_subparsers(dest="pod_command", metavar="SUBCOMMAND")
    create = psub.add_parser("create", help="make a pod through the calico CNI plugin")
    create.add_argument("name")
    create.add_argument("--node", required=True)
    create.add_argument("--namespace", default="default", help="the pod's Kubernetes namespace")
    create.add_argument("--label", action="append", default=[], metavar="K=V", help="a label (repeatable)")
    relabel = psub.add_parser("label", help="set (k=v) or remove (k-) a pod's labels: policy follows at once")
    relabel.add_argument("name")
    relabel.add_argument("labels", nargs="+", metavar="K=V|K-")
    ex = sub.add_parser("exec", help="run a command in a pod's namespace")
    ex.add_argument("name")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("env", help="print the environment for calicoctl")
    dash = sub.add_parser("dashboards", help="draw deploy/observability's dashboards from the lab's Prometheus "
                                             "(up --observability) as PNGs")
    dash.add_argument("--png", type=Path, required=True, metavar="DIR", help="directory for one PNG per dashboard")
    dash.add_argument("--range", type=int, default=None, dest="range_seconds", metavar="SECONDS",
                      help="how far back (default: the dashboard's own range, 1h)")
    demo = sub.add_parser("demo", help="run the seed's experiments with per-hop captures; write a report")
    demo.add_argument("--out", type=Path, default=None,
                      help="report directory (default: the lab's directory; with --encap, the run directory)")
    demo.add_argument("--encap", choices=ENCAPS, default=None,
                      help="a demo run of its own: up with this encapsulation, the experiments, down "
                           "(IPIP in a VM when this kernel lacks the module)")
    demo.add_argument("--nodes", type=int, default=4, help="with --encap: how many nodes")
    demo.add_argument("--bgp", default="mesh", choices=("mesh", "rr"), help="with --encap: mesh or route reflector")
    demo.add_argument("--typha", action="store_true", help="with --encap: Felix and confd through calico-typha")
    demo.add_argument("--no-policy", action="store_true", help="leave out experiment 5 (network policy)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 1
    if os.geteuid() != 0:
        sys.stderr.write("calico-lab needs root: it makes network namespaces\n")
        return 1
    lab = Lab(args.dir, args.lab_name, say=lambda m: print(m, flush=True))
    try:
        if args.command == "up":
            lab.up(args.nodes, args.encap, args.bgp, args.datastore, api_group=args.api_group,
                   observability=args.observability, typha=args.typha, kube_controllers=args.kube_controllers)
        elif args.command == "down":
            if not lab.exists:
                print("no lab is running")
                return 0
            lab.down()
        elif args.command == "demo" and args.encap:
            return demo_run(lab, args.encap, args.nodes, args.bgp, args.out or args.dir, policy=not args.no_policy,
                            typha=args.typha)
        elif not lab.exists:
            raise LabError("no lab is running; `calico-lab up` first")
        elif args.command == "status":
            print(lab.status())
        elif args.command == "demo":
            from lab import demo

            path = demo.run(lab, args.out or lab.dir, policy=not args.no_policy)
            print(path.read_text())
            print(f"report written to {path}")
        elif args.command == "dashboards":
            from lab import dashboards

            for path in dashboards.lab_pngs(lab, args.png, range_seconds=args.range_seconds):
                print(f"dashboard written to {path}")
        elif args.command == "env":
            print((lab.dir / "calicoctl.env").read_text(), end="")
        elif args.command == "pod":
            if args.pod_command == "create":
                labels = {k: v for k, v in _labels(args.label).items() if v is not None}
                ip = lab.pod_create(args.name, args.node, labels, namespace=args.namespace)
                print(f"pod {args.name} on {args.node} in namespace {args.namespace}: {ip}")
            elif args.pod_command == "label":
                now = lab.pod_label(args.name, _labels(args.labels))
                print(f"pod {args.name} labelled: {', '.join(f'{k}={v}' for k, v in sorted(now.items()))}")
            else:
                raise LabError("calico-lab pod: choose create or label")
        elif args.command == "exec":
            pod = lab.state.pods.get(args.name)
            if pod is None:
                raise LabError(f"no pod {args.name!r}; pods: {', '.join(lab.state.pods) or 'none'}")
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                raise LabError("give a command after --")
            os.execvp("ip", ["ip", "netns", "exec", pod["ns"], *cmd])
    except LabError as exc:
        sys.stderr.write(f"calico-lab: {exc}\n")
        return 1
    return 0


def _labels(items: list[str]) -> dict[str, str | None]:
    """``k=v`` sets a label, ``k-`` removes it (kubectl's syntax); anything else is refused by name."""
    from libcalico.api import fields

    out: dict[str, str | None] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq and item.endswith("-"):
            out[item[:-1]] = None
            continue
        if not eq or not key:
            raise LabError(f"label {item!r}: write k=v (or k- to remove)")
        try:
            fields.check_labels({key: value})
        except ValueError as exc:
            raise LabError(f"label {item!r}: {exc}") from exc
        out[key] = value
    return out


def demo_run(lab: Lab, encap: str, nodes: int, bgp: str, out: Path, *, policy: bool = True,
             typha: bool = False) -> int:
    """``calico-lab demo --encap``: up, the experiments, down; in a VM when this kernel lacks ipip."""
    from lab import demo, netns, vm

    if lab.exists:
        raise LabError(f"a lab already runs from {lab.dir}; `calico-lab down` first, or give another --lab-name")
    if encap.startswith("ipip") and not os.environ.get(vm.IN_VM) and not netns.kernel_supports("ipip"):
        reason = vm.unavailable("ipip")
        if reason:
            raise LabError(f"this kernel has no ipip module, and {reason}")
        out = out.resolve()
        out.mkdir(parents=True, exist_ok=True)
        kernel = vm.find_kernel("ipip")
        print(f"This kernel has no ipip module: the IPIP demo runs in a VM on Debian's kernel "
              f"{kernel.version if kernel else '?'} (under emulation this takes several minutes); "
              f"the report comes back to {out}.", flush=True)
        argv = [vm.python(), "-m", "lab.main", "--dir", "/tmp/calico-lab", "--lab-name", lab.state.name, "demo",
                "--encap", encap, "--nodes", str(nodes), "--bgp", bgp, "--out", str(out),
                *([] if policy else ["--no-policy"]), *(["--typha"] if typha else [])]
        r = vm.run(shlex.join(argv), module="ipip", rwdirs=[out], cwd=Path(__file__).resolve().parent.parent,
                   env={vm.IN_VM: "1"}, progress=lambda line: print(line, flush=True))
        print(f"(ran in {vm.describe(r)}: {r.seconds:.0f} s)")
        return r.returncode
    try:
        lab.up(nodes, encap, bgp, stays_up=False, typha=typha)
        path = demo.run(lab, out, policy=policy)
        print(path.read_text())
        print(f"report written to {path}")
    finally:
        if lab.exists:
            lab.down()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
