"""Tests of the edgemeter Helm chart over its rendered YAML (no cluster needed).

For every case helm/edgemeter/ci/<case>-values.yaml, rendered as

    helm template edgemeter helm/edgemeter -n metering -f helm/edgemeter/ci/<case>-values.yaml --kube-version 1.33.0

it checks `helm lint --strict`, the golden file tests/golden/<case>.yaml, kubernetes-validate
--strict against Kubernetes 1.33, the security contexts, the RBAC grants (exact sets), the
workloads' shape, and that values.schema.json refuses unknown keys and wrong types.

Run: bash .ci/chart.sh            (installs the pinned helm and Python packages first)
     bash .ci/chart.sh --regen    (rewrites the golden files, then tests)
or, with HELM and KUBERNETES_VALIDATE pointing at the tools:
     python3 helm/edgemeter/tests/test_chart.py [--regen] [-k PATTERN]
"""

from __future__ import annotations

import base64
import difflib
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1]
REPO = CHART.parents[1]
CHART_REL = CHART.relative_to(REPO).as_posix()
GOLDEN = CHART / "tests" / "golden"
HELM = os.environ.get("HELM", "helm")
KUBERNETES_VALIDATE = os.environ.get("KUBERNETES_VALIDATE", "kubernetes-validate")
KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "edgemeter", "metering"
UID = 65532
READ = {"get", "list", "watch"}

CASES = sorted(p.name[: -len("-values.yaml")] for p in (CHART / "ci").glob("*-values.yaml"))

# What each case must grant, per ServiceAccount: the kinds it meters (pods → pods + nodes,
# pvcs → persistentvolumeclaims + persistentvolumes) and the Lease it may hold (None: no
# leader election, so no Lease Role at all). Written out by hand, not derived from the
# templates' logic, so a template change that widens or narrows a grant fails here.
BOTH = ("pods", "pvcs")
EXPECTED = {
    "default": {"edgemeter": (BOTH, "edgemeter")},
    "single-replica": {"edgemeter": (BOTH, None)},
    "daemonset-pvcs": {"edgemeter": (("pods",), None), "edgemeter-cluster": (("pvcs",), "edgemeter-cluster")},
    "daemonset-pods-only": {"edgemeter": (("pods",), None)},
    "existing-secret": {"edgemeter": (BOTH, "edgemeter")},
    "mapper-configmap": {"edgemeter": (BOTH, "edgemeter")},
    "mapper-image": {"edgemeter": (BOTH, "edgemeter")},
    "namespaced": {"edgemeter": (BOTH, "edgemeter")},
    "runai": {"edgemeter": (("pods",), None), "edgemeter-cluster": (("pvcs",), "edgemeter-cluster")},
    # Run:ai alone: no Kubernetes kinds, so nothing of the cluster is read but the Lease.
    "runai-only": {"edgemeter": ((), "edgemeter")},
    # SQL reads a database, nothing of the cluster: the grants are the Kubernetes kinds' alone.
    "sql": {"edgemeter": (("pods",), None), "edgemeter-cluster": (("pvcs",), "edgemeter-cluster")},
    "sql-only": {"edgemeter": ((), "edgemeter")},
}
# Namespaces the pods/PVCs grants are limited to (cluster-wide otherwise).
SCOPED = {"namespaced": ("team-a", "team-b")}
# The one workload (by ServiceAccount) that runs the Run:ai source, per case: the cluster-wide
# collector under a Lease, never the per-node DaemonSet. Cases not listed run no Run:ai.
RUNAI = {"runai": "edgemeter-cluster", "runai-only": "edgemeter", "sql-only": "edgemeter"}
# The same for the SQL source: the one collector, under a Lease, whose EDGEMETER_SOURCES has
# `sql`, and the only one with SQL_* variables and the database URL volume.
SQL = {"sql": "edgemeter-cluster", "sql-only": "edgemeter"}
SQL_ENV = {"SQL_IMPORTS", "SQL_MAPPER", "SQL_MAPPER_CONFIG", "SQL_REQUEST_TIMEOUT"}
# The keys of one import that `edgemeter run` reads (host/src/sources/sql/config.rs, RawImport;
# it refuses others) and those the chart may write: a URL only as a file of the Secret volume.
SQL_IMPORT_KEYS = {"name", "driver", "url_env", "url_file", "query", "cursor", "key", "page_size",
                   "max_rows_per_round", "ca_file"}
SQL_CHART_KEYS = {"name", "driver", "url_file", "query", "cursor", "key", "page_size", "max_rows_per_round", "ca_file"}
SQL_URL_DIR = "/etc/edgemeter/sql"
RUNAI_ENV = {"RUNAI_URL", "RUNAI_CREDENTIALS_FILE", "RUNAI_TOKEN_ENDPOINT", "RUNAI_MAPPER",
             "RUNAI_MAPPER_CONFIG", "RUNAI_METRICS_DELAY", "RUNAI_SAMPLE_STEP", "RUNAI_PAGE_SIZE",
             "RUNAI_REQUEST_TIMEOUT"}


# --- helpers -----------------------------------------------------------------------------

def run(args, **kw):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, **kw)


def helm_template(*extra: str) -> subprocess.CompletedProcess:
    return run([HELM, "template", RELEASE, CHART_REL, "-n", NAMESPACE,
                "--kube-version", KUBE_VERSION, *extra])


@functools.cache
def rendered(case: str) -> str:
    p = helm_template("-f", f"{CHART_REL}/ci/{case}-values.yaml")
    if p.returncode != 0:
        raise AssertionError(f"helm template failed for {case}:\n{p.stderr}")
    return p.stdout


@functools.cache
def docs(case: str) -> tuple:
    return tuple(d for d in yaml.safe_load_all(rendered(case)) if d)


def values(case: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{case}-values.yaml").read_text()) or {}


def of_kind(case: str, kind: str) -> list:
    return [d for d in docs(case) if d["kind"] == kind]


def one(case: str, kind: str, name: str) -> dict:
    found = [d for d in of_kind(case, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{case}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(case: str) -> list:
    return [d for d in docs(case) if d["kind"] in ("StatefulSet", "DaemonSet")]


def one_named(case: str, sa: str) -> str:
    """The name of the one workload running as ServiceAccount `sa`."""
    (name,) = [w["metadata"]["name"] for w in workloads(case) if service_account(w) == sa]
    return name


def pod_specs(case: str):
    """(name, pod spec) of every pod the chart makes: workloads and the helm test pod."""
    for w in workloads(case):
        yield f"{w['kind']}/{w['metadata']['name']}", w["spec"]["template"]["spec"]
    for p in of_kind(case, "Pod"):
        yield f"Pod/{p['metadata']['name']}", p["spec"]


def env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container: dict, name: str):
    e = env(container).get(name)
    return None if e is None else e.get("value")


def collector(workload: dict) -> dict:
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "edgemeter"]
    return c


def service_account(workload: dict) -> str:
    return workload["spec"]["template"]["spec"]["serviceAccountName"]


def expected_sources(case: str, sa: str) -> str:
    """EDGEMETER_SOURCES of a workload, from the hand-written EXPECTED and RUNAI."""
    sources = ["kubernetes"] if EXPECTED[case][sa][0] else []
    if RUNAI.get(case) == sa:
        sources.append("runai")
    if SQL.get(case) == sa:
        sources.append("sql")
    return ",".join(sources)


def kubelet_expand(value: str, env: dict) -> str:
    """An env `value` as the container sees it: the kubelet replaces $(NAME) of a variable
    defined before it, leaves $(NAME) of an unknown one as written, and turns $$ into $
    (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2:end]
                    out.append(env.get(name, f"$({name})"))
                    i = end + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def container_env(container: dict) -> dict:
    """name → the value the process gets, for literal values (references stay out)."""
    seen: dict = {}
    for e in container.get("env", []):
        if "value" in e:
            seen[e["name"]] = kubelet_expand(e["value"], seen)
    return seen


def sql_imports(container: dict):
    """SQL_IMPORTS as the daemon parses it: JSON once the kubelet has expanded it."""
    raw = container_env(container).get("SQL_IMPORTS")
    return None if raw is None else json.loads(raw)


def expected_sql_imports(case: str) -> list:
    """sql.imports of a case in the daemon's keys, translated here by hand."""
    out = []
    ca = values(case)["sql"].get("caBundle", {})
    for i in values(case)["sql"]["imports"]:
        e = {"name": i["name"], "url_file": f"{SQL_URL_DIR}/{i['name']}", "query": i["query"],
             "cursor": dict(i["cursor"])}
        for ours, theirs in (("driver", "driver"), ("key", "key"), ("pageSize", "page_size"),
                             ("maxRowsPerRound", "max_rows_per_round")):
            if ours in i:
                e[theirs] = i[ours]
        if ca.get("configMap") or ca.get("secret"):
            e["ca_file"] = f"/etc/edgemeter/sql-ca/{ca.get('key', 'ca.crt')}"
        out.append(e)
    return out


def grants(case: str) -> dict:
    """ServiceAccount → set of (namespace or '*', apiGroup, resource, verb, resourceName or '')."""
    roles = {("*", r["metadata"]["name"]): r for r in of_kind(case, "ClusterRole")}
    roles.update({(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(case, "Role")})
    out: dict = {}
    for b in of_kind(case, "ClusterRoleBinding") + of_kind(case, "RoleBinding"):
        scope = b["metadata"].get("namespace", "*")
        ref = b["roleRef"]
        role = roles[("*" if ref["kind"] == "ClusterRole" else scope, ref["name"])]
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount" and s["namespace"] == NAMESPACE, s
            g = out.setdefault(s["name"], set())
            for rule in role["rules"]:
                assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        for verb in rule["verbs"]:
                            for rn in rule.get("resourceNames") or [""]:
                                g.add((scope, group, res, verb, rn))
    return out


def expected_grants(case: str) -> dict:
    out = {}
    scoped = SCOPED.get(case)
    for sa, (kinds, lease) in EXPECTED[case].items():
        g = set()
        for kind, namespaced, cluster in (("pods", "pods", "nodes"),
                                          ("pvcs", "persistentvolumeclaims", "persistentvolumes")):
            if kind not in kinds:
                continue
            for verb in READ:
                g.add(("*", "", cluster, verb, ""))
                for scope in scoped or ("*",):
                    g.add((scope, "", namespaced, verb, ""))
        if lease:
            g.add((NAMESPACE, "coordination.k8s.io", "leases", "create", ""))
            g.add((NAMESPACE, "coordination.k8s.io", "leases", "get", lease))
            g.add((NAMESPACE, "coordination.k8s.io", "leases", "update", lease))
        out[sa] = g
    return out


class PerCase(unittest.TestCase):
    def each_case(self):
        for case in CASES:
            with self.subTest(case=case):
                yield case


# --- lint, golden files, Kubernetes schemas ----------------------------------------------

class TestMatrix(unittest.TestCase):
    def test_every_case_has_expectations_and_a_golden_file(self):
        self.assertEqual(sorted(EXPECTED), CASES, "a ci/*-values.yaml without expectations here (or the reverse)")
        self.assertEqual(sorted(p.stem for p in GOLDEN.glob("*.yaml")), CASES,
                         "golden files do not match the cases: bash .ci/chart.sh --regen")


class TestLint(PerCase):
    def test_helm_lint_strict(self):
        for case in self.each_case():
            p = run([HELM, "lint", "--strict", CHART_REL, "-n", NAMESPACE, "--kube-version", KUBE_VERSION,
                     "-f", f"{CHART_REL}/ci/{case}-values.yaml"])
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertNotIn("[WARNING]", p.stdout)
            self.assertNotIn("[ERROR]", p.stdout)

    def test_install_dry_run_renders_the_notes(self):
        # `helm template` skips NOTES.txt; a client-side dry-run install renders it (no cluster).
        for case in self.each_case():
            p = run([HELM, "install", RELEASE, CHART_REL, "-n", NAMESPACE, "--dry-run=client", "--hide-secret",
                     "-f", f"{CHART_REL}/ci/{case}-values.yaml"])
            self.assertEqual(p.returncode, 0, p.stderr)
            notes = p.stdout.split("\nNOTES:\n", 1)[-1]
            self.assertIn(f"helm test {RELEASE} -n {NAMESPACE}", notes)
            for w in workloads(case):
                self.assertIn(f"{w['kind']} {w['metadata']['name']}: meters", notes)
            runai_lines = [line for line in notes.splitlines() if "Run:ai workloads" in line]
            if case in RUNAI:
                (line,) = [line for line in runai_lines if ": meters" in line]
                self.assertIn(f"StatefulSet {one_named(case, RUNAI[case])}: meters", line)
                self.assertIn(values(case)["runai"]["url"], notes)
            else:
                self.assertEqual(runai_lines, [])
            sql_lines = [line for line in notes.splitlines() if "SQL imports" in line]
            if case in SQL:
                (line,) = [line for line in sql_lines if ": meters" in line]
                self.assertIn(f"StatefulSet {one_named(case, SQL[case])}: meters", line)
                names = ", ".join(i["name"] for i in values(case)["sql"]["imports"])
                self.assertIn(f"SQL imports {names} are read", notes)
                self.assertIn(f"statefulset/{one_named(case, SQL[case])} bills them", notes)
            else:
                self.assertEqual(sql_lines, [])
            pre_create = "Pre-create it on every node"
            initchown = values(case).get("daemonset", {}).get("hostPath", {}).get("initChown", {}).get("enabled")
            self.assertEqual(pre_create in notes, values(case).get("mode") == "daemonset" and not initchown)


class TestGolden(PerCase):
    def test_render_equals_golden(self):
        for case in self.each_case():
            path = GOLDEN / f"{case}.yaml"
            want = path.read_text() if path.exists() else ""
            got = rendered(case)
            if got != want:
                diff = "".join(list(difflib.unified_diff(
                    want.splitlines(True), got.splitlines(True), f"golden/{case}.yaml", "rendered"))[:80])
                self.fail(f"render differs from golden/{case}.yaml (intended? bash .ci/chart.sh --regen):\n{diff}")


class TestKubernetesValidate(PerCase):
    def test_strict_against_kubernetes_1_33(self):
        for case in self.each_case():
            p = run([KUBERNETES_VALIDATE, "--strict", "-k", KUBE_VERSION, "--quiet", "-"], input=rendered(case))
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            out = (p.stdout + p.stderr).strip()
            for line in filter(None, out.splitlines()):
                # No schema ships for CRDs: only the ServiceMonitor may be unchecked.
                self.assertRegex(line, r"^WARN .*kind ServiceMonitor with api version monitoring\.coreos\.com/v1")


# --- security ----------------------------------------------------------------------------

class TestSecurity(PerCase):
    def test_pods_run_as_65532_with_runtime_default_seccomp(self):
        for case in self.each_case():
            for name, spec in pod_specs(case):
                sc = spec["securityContext"]
                self.assertIs(sc["runAsNonRoot"], True, name)
                self.assertEqual((sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]), (UID, UID, UID), name)
                self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"}, name)
                for host in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
                    self.assertFalse(spec.get(host, False), f"{name}: {host}")

    def test_containers_read_only_no_capabilities_no_escalation(self):
        for case in self.each_case():
            for name, spec in pod_specs(case):
                for c in spec["containers"] + spec.get("initContainers", []):
                    where = f"{name}/{c['name']}"
                    sc = c["securityContext"]
                    self.assertIs(sc["readOnlyRootFilesystem"], True, where)
                    self.assertIs(sc["allowPrivilegeEscalation"], False, where)
                    self.assertIs(sc.get("privileged", False), False, where)
                    self.assertEqual(sc["capabilities"].get("drop"), ["ALL"], where)
                    self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"}, where)
                    if c["name"] == "chown-queue":
                        continue  # checked below: root with CHOWN only, by design
                    self.assertNotIn("add", sc["capabilities"], where)
                    self.assertIs(sc["runAsNonRoot"], True, where)
                    self.assertEqual(sc["runAsUser"], UID, where)

    def test_root_init_container_only_when_asked_and_only_chown(self):
        for case in self.each_case():
            wanted = values(case).get("daemonset", {}).get("hostPath", {}).get("initChown", {}).get("enabled", False)
            inits = [(n, c) for n, s in pod_specs(case) for c in s.get("initContainers", [])]
            self.assertEqual(len(inits), 1 if wanted else 0, inits)
            for name, c in inits:
                self.assertTrue(name.startswith("DaemonSet/"), name)
                self.assertEqual(c["command"], ["chown", "65532:65532", "/var/lib/edgemeter/queue"])
                self.assertEqual(c["securityContext"]["capabilities"], {"drop": ["ALL"], "add": ["CHOWN"]})
                self.assertEqual(c["securityContext"]["runAsUser"], 0)
                self.assertEqual([m["name"] for m in c["volumeMounts"]], ["queue"])

    def test_only_the_collector_mounts_a_service_account_token(self):
        for case in self.each_case():
            for sa in of_kind(case, "ServiceAccount"):
                self.assertIs(sa["automountServiceAccountToken"], False, sa["metadata"]["name"])
            for w in workloads(case):
                self.assertIs(w["spec"]["template"]["spec"]["automountServiceAccountToken"], True)
            for p in of_kind(case, "Pod"):
                self.assertIs(p["spec"]["automountServiceAccountToken"], False)
                self.assertNotIn("serviceAccountName", p["spec"])

    def test_only_volumes_the_collector_needs(self):
        allowed = {"queue", "mapper-cache", "mapper", "ca-bundle", "runai-credentials", "runai-mapper",
                   "sql-urls", "sql-ca", "sql-mapper"}
        for case in self.each_case():
            for name, spec in pod_specs(case):
                for v in spec.get("volumes", []):
                    self.assertIn(v["name"], allowed, name)
                    if "hostPath" in v:
                        self.assertTrue(name.startswith("DaemonSet/"), f"{name}: hostPath outside the DaemonSet")
                        self.assertEqual(v["name"], "queue")
                        self.assertEqual(v["hostPath"]["type"], "DirectoryOrCreate")
                for c in spec["containers"]:
                    for m in c.get("volumeMounts", []):
                        if m["name"] in ("mapper", "ca-bundle", "runai-credentials", "runai-mapper",
                                         "sql-urls", "sql-ca", "sql-mapper"):
                            self.assertIs(m.get("readOnly"), True, f"{name}: {m}")


# --- RBAC --------------------------------------------------------------------------------

class TestRBAC(PerCase):
    def test_grants_are_exactly_what_the_kinds_need(self):
        for case in self.each_case():
            self.assertEqual(grants(case), expected_grants(case))

    def test_no_wildcards_anywhere(self):
        for case in self.each_case():
            for r in of_kind(case, "ClusterRole") + of_kind(case, "Role"):
                for rule in r["rules"]:
                    for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                        self.assertNotIn("*", rule.get(field, []), f"{r['metadata']['name']}: {rule}")

    def test_lease_role_only_with_leader_election(self):
        for case in self.each_case():
            leases = [r for r in of_kind(case, "Role")
                      if any("leases" in rule["resources"] for rule in r["rules"])]
            wanted = {sa: lease for sa, (_, lease) in EXPECTED[case].items() if lease}
            self.assertEqual(len(leases), len(wanted))
            for r in leases:
                self.assertEqual(r["metadata"]["namespace"], NAMESPACE)
                (lease,) = {rn for rule in r["rules"] for rn in rule.get("resourceNames", [])}
                self.assertEqual(r["rules"], [
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                     "resourceNames": [lease], "verbs": ["get", "update"]},
                ])
            # Every workload's leader-election env agrees with its grants.
            for w in workloads(case):
                sa = w["spec"]["template"]["spec"]["serviceAccountName"]
                c = collector(w)
                lease = EXPECTED[case][sa][1]
                self.assertEqual(env_value(c, "EDGEMETER_LEADER_ELECTION"), "true" if lease else "false")
                self.assertEqual(env_value(c, "EDGEMETER_LEASE_NAME"), lease)
                if lease:
                    self.assertEqual(env_value(c, "EDGEMETER_LEASE_NAMESPACE"), NAMESPACE)

    def test_each_workload_has_its_own_service_account(self):
        for case in self.each_case():
            sas = [w["spec"]["template"]["spec"]["serviceAccountName"] for w in workloads(case)]
            self.assertEqual(sorted(sas), sorted(EXPECTED[case]))
            self.assertEqual(sorted(s["metadata"]["name"] for s in of_kind(case, "ServiceAccount")), sorted(sas))


# --- workloads ---------------------------------------------------------------------------

class TestWorkloads(PerCase):
    def test_kinds_env_matches_the_grants(self):
        for case in self.each_case():
            for w in workloads(case):
                sa = service_account(w)
                kinds = EXPECTED[case][sa][0]
                self.assertEqual(env_value(collector(w), "EDGEMETER_KINDS"), ",".join(kinds) if kinds else None)
                self.assertEqual(env_value(collector(w), "EDGEMETER_SOURCES"), expected_sources(case, sa))

    def test_deployment_mode_is_a_statefulset_with_a_queue_claim_per_replica(self):
        for case in self.each_case():
            v = values(case)
            if v.get("mode", "deployment") != "deployment":
                continue
            self.assertEqual(of_kind(case, "DaemonSet"), [])
            s = one(case, "StatefulSet", "edgemeter")
            self.assertEqual(s["spec"]["replicas"], v.get("replicas", 2))
            self.assertEqual(s["spec"]["serviceName"], "edgemeter")
            self.assertEqual(s["spec"]["podManagementPolicy"], "Parallel")
            (vct,) = s["spec"]["volumeClaimTemplates"]
            self.assertEqual(vct["metadata"]["name"], "queue")
            persistence = v.get("queue", {}).get("persistence", {})
            self.assertEqual(vct["spec"]["resources"]["requests"]["storage"], persistence.get("size", "1639Mi"))
            self.assertEqual(vct["spec"].get("storageClassName"), persistence.get("storageClassName"))
            self.assertEqual(vct["spec"]["accessModes"], ["ReadWriteOnce"])
            self.assertNotIn("SCRAPE_NODE_NAME", env(collector(s)))

    def test_daemonset_mode_bills_its_node_and_leaves_pvcs_to_the_cluster_statefulset(self):
        for case in self.each_case():
            v = values(case)
            if v.get("mode") != "daemonset":
                continue
            d = one(case, "DaemonSet", "edgemeter")
            c = collector(d)
            self.assertEqual(env(c)["SCRAPE_NODE_NAME"]["valueFrom"], {"fieldRef": {"fieldPath": "spec.nodeName"}})
            self.assertEqual(env_value(c, "EDGEMETER_KINDS"), "pods")
            self.assertEqual(env_value(c, "EDGEMETER_LEADER_ELECTION"), "false")
            (queue,) = [x for x in d["spec"]["template"]["spec"]["volumes"] if x["name"] == "queue"]
            path = v.get("daemonset", {}).get("hostPath", {}).get("path") or f"/var/lib/edgemeter/{RELEASE}"
            self.assertEqual(queue["hostPath"], {"path": path, "type": "DirectoryOrCreate"})
            self.assertEqual(d["spec"]["template"]["spec"]["tolerations"], [{"operator": "Exists"}])
            self.assertEqual(env_value(c, "EDGEMETER_SOURCES"), "kubernetes")
            pvcs = v.get("sources", {}).get("kubernetes", {}).get("pvcs", True)
            runai = v.get("runai", {}).get("enabled", False)
            sql = v.get("sql", {}).get("enabled", False)
            statefulsets = of_kind(case, "StatefulSet")
            self.assertEqual([s["metadata"]["name"] for s in statefulsets], ["edgemeter-cluster"] if pvcs or runai or sql else [])
            for s in statefulsets:
                cc = collector(s)
                self.assertEqual(s["spec"]["replicas"], 2)
                self.assertEqual(env_value(cc, "EDGEMETER_KINDS"), "pvcs" if pvcs else None)
                self.assertEqual(env_value(cc, "EDGEMETER_LEADER_ELECTION"), "true")
                self.assertNotIn("SCRAPE_NODE_NAME", env(cc))
                self.assertEqual([t["metadata"]["name"] for t in s["spec"]["volumeClaimTemplates"]], ["queue"])

    def test_probes_ports_and_shutdown(self):
        for case in self.each_case():
            for w in workloads(case):
                c = collector(w)
                spec = w["spec"]["template"]["spec"]
                self.assertEqual(c["args"], ["run"])
                self.assertEqual(c["ports"], [{"name": "http", "containerPort": 9464, "protocol": "TCP"}])
                self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"})
                self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})
                startup = c["startupProbe"]
                self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 300)
                self.assertEqual(spec["terminationGracePeriodSeconds"], values(case).get("terminationGracePeriodSeconds", 30))
                self.assertEqual(env(c)["POD_NAME"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}})
                self.assertEqual(env(c)["POD_NAMESPACE"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.namespace"}})
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                self.assertEqual(mounts["/var/lib/edgemeter/queue"], "queue")
                self.assertEqual(mounts["/var/cache/edgemeter/mappers"], "mapper-cache")
                self.assertEqual(env_value(c, "EDGEMETER_QUEUE_DIR"), "/var/lib/edgemeter/queue")
                # Below the emptyDir's mount point (0777, refused by the cache), not at it.
                self.assertEqual(env_value(c, "EDGEMETER_CACHE_DIR"), "/var/cache/edgemeter/mappers/compiled")
                grace = spec["terminationGracePeriodSeconds"]
                self.assertEqual(env_value(c, "EDGEMETER_SHUTDOWN_TIMEOUT"), f"{grace - 5}s")
                self.assertIn({"name": "mapper-cache", "emptyDir": {}}, spec["volumes"])
                self.assertEqual(env_value(c, "EDGEMETER_LOG"), "info")
                self.assertEqual(env_value(c, "EDGEMETER_LOG_FORMAT"), "json")
                self.assertEqual(c["resources"]["limits"]["memory"], "512Mi")

    def test_helm_test_probes_every_service_with_the_collector_image(self):
        for case in self.each_case():
            (pod,) = of_kind(case, "Pod")
            self.assertEqual(pod["metadata"]["annotations"]["helm.sh/hook"], "test")
            self.assertEqual(pod["spec"]["restartPolicy"], "Never")
            image = collector(workloads(case)[0])["image"]
            urls = []
            for c in pod["spec"]["containers"]:
                self.assertEqual(c["image"], image)
                self.assertEqual(c["args"][0], "probe")
                self.assertNotIn("command", c)
                urls.append(c["args"][1])
            services = [s["metadata"]["name"] for s in of_kind(case, "Service")]
            self.assertEqual(sorted(urls), sorted(f"http://{s}.{NAMESPACE}.svc:9464/readyz" for s in services))
            for s in of_kind(case, "Service"):
                self.assertEqual(s["spec"]["clusterIP"], "None")
                self.assertEqual(s["spec"]["ports"], [{"name": "http", "port": 9464, "targetPort": "http", "protocol": "TCP"}])

    def test_token_secret_and_ca_bundle(self):
        for case in self.each_case():
            om = values(case).get("openmeter", {})
            secrets = of_kind(case, "Secret")
            for w in workloads(case):
                c = collector(w)
                token = env(c).get("OPENMETER_TOKEN")
                self.assertEqual(env_value(c, "OPENMETER_URL"), om["url"])
                if om.get("existingSecret"):
                    self.assertEqual(token["valueFrom"]["secretKeyRef"],
                                     {"name": om["existingSecret"], "key": om.get("existingSecretKey", "token")})
                elif om.get("token"):
                    self.assertEqual(token["valueFrom"]["secretKeyRef"], {"name": "edgemeter", "key": "token"})
                else:
                    self.assertIsNone(token)
                self.assertNotIn("value", token or {}, "the token must come from a Secret")
                ca = values(case).get("caBundle", {})
                if ca.get("configMap") or ca.get("secret"):
                    path = env_value(c, "OPENMETER_CA_BUNDLE")
                    self.assertEqual(path, f"/etc/edgemeter/ca/{ca['key']}")
                    (vol,) = [x for x in w["spec"]["template"]["spec"]["volumes"] if x["name"] == "ca-bundle"]
                    if ca.get("configMap"):
                        self.assertEqual(vol["configMap"], {"name": ca["configMap"], "items": [{"key": ca["key"], "path": ca["key"]}]})
                    else:
                        self.assertEqual(vol["secret"], {"secretName": ca["secret"], "items": [{"key": ca["key"], "path": ca["key"]}]})
                else:
                    self.assertNotIn("OPENMETER_CA_BUNDLE", env(c))
            if om.get("token") and not om.get("existingSecret"):
                (s,) = secrets
                self.assertEqual(s["data"], {"token": base64.b64encode(om["token"].encode()).decode()})
            else:
                self.assertEqual(secrets, [])

    def test_mapper_sources(self):
        for case in self.each_case():
            m = values(case).get("mapper", {})
            for w in workloads(case):
                c = collector(w)
                vols = {x["name"]: x for x in w["spec"]["template"]["spec"]["volumes"]}
                self.assertEqual(env_value(c, "EDGEMETER_MAPPER_MEMORY_MIB"), str(m.get("memoryMiB", 256)))
                if not EXPECTED[case][service_account(w)][0]:
                    # No Kubernetes source: no Kubernetes mapper (the Run:ai one is checked below).
                    self.assertFalse({"EDGEMETER_MAPPER", "EDGEMETER_MAPPER_CONFIG"} & set(env(c)))
                    self.assertNotIn("mapper", vols)
                    continue
                self.assertEqual(json.loads(env_value(c, "EDGEMETER_MAPPER_CONFIG")), m.get("config", {}))
                kind = m.get("type", "builtin")
                if kind == "builtin":
                    self.assertEqual(env_value(c, "EDGEMETER_MAPPER"), f"builtin:{m.get('builtin', 'kubernetes')}")
                    self.assertNotIn("mapper", vols)
                    continue
                mount = [x for x in c["volumeMounts"] if x["name"] == "mapper"]
                self.assertEqual(mount, [{"name": "mapper", "mountPath": "/etc/edgemeter/mappers", "readOnly": True}])
                if kind == "configMap":
                    key = m["configMap"]["key"]
                    self.assertEqual(env_value(c, "EDGEMETER_MAPPER"), f"/etc/edgemeter/mappers/{key}")
                    self.assertEqual(vols["mapper"]["configMap"], {"name": m["configMap"]["name"], "items": [{"key": key, "path": key}]})
                else:
                    self.assertEqual(env_value(c, "EDGEMETER_MAPPER"), f"/etc/edgemeter/mappers/{m['image']['path']}")
                    self.assertEqual(vols["mapper"]["image"], {"reference": m["image"]["reference"], "pullPolicy": "IfNotPresent"})

    def test_scope_env(self):
        for case in self.each_case():
            k = values(case).get("sources", {}).get("kubernetes", {})
            for w in workloads(case):
                c = collector(w)
                if not EXPECTED[case][service_account(w)][0]:
                    self.assertFalse({"SCRAPE_NAMESPACE", "SCRAPE_LABEL_SELECTOR", "SCRAPE_NODE_NAME"} & set(env(c)))
                    continue
                self.assertEqual(env_value(c, "SCRAPE_NAMESPACE"), ",".join(k["namespaces"]) if k.get("namespaces") else None)
                self.assertEqual(env_value(c, "SCRAPE_LABEL_SELECTOR"), k.get("labelSelector"))

    def test_service_monitor_and_pdb_only_when_enabled(self):
        for case in self.each_case():
            v = values(case)
            sm = v.get("serviceMonitor", {}).get("enabled", False)
            self.assertEqual(len(of_kind(case, "ServiceMonitor")), 1 if sm else 0)
            pdb = v.get("podDisruptionBudget", {}).get("enabled", False)
            self.assertEqual(len(of_kind(case, "PodDisruptionBudget")), len(of_kind(case, "StatefulSet")) if pdb else 0)


# --- Run:ai ------------------------------------------------------------------------------

class TestRunai(PerCase):
    def test_only_the_cluster_wide_collector_under_a_lease_runs_runai(self):
        for case in self.each_case():
            runs = [w for w in workloads(case) if "runai" in (env_value(collector(w), "EDGEMETER_SOURCES") or "").split(",")]
            self.assertEqual([service_account(w) for w in runs], [RUNAI[case]] if case in RUNAI else [])
            for w in runs:
                # One biller: a StatefulSet whose Lease holder alone bills (or a single replica).
                self.assertEqual(w["kind"], "StatefulSet")
                c = collector(w)
                self.assertTrue(env_value(c, "EDGEMETER_LEADER_ELECTION") == "true" or w["spec"]["replicas"] == 1)
                self.assertNotIn("SCRAPE_NODE_NAME", env(c))
            for w in workloads(case):
                if w in runs:
                    continue
                c = collector(w)
                where = f"{case} {w['kind']}/{w['metadata']['name']}"
                self.assertNotIn("runai", env_value(c, "EDGEMETER_SOURCES").split(","), where)
                self.assertEqual({n for n in env(c) if n.startswith("RUNAI_")}, set(), where)
                vols = {x["name"] for x in w["spec"]["template"]["spec"]["volumes"]}
                self.assertEqual(vols & {"runai-credentials", "runai-mapper"}, set(), where)

    def test_env_and_the_read_only_credentials_mount(self):
        for case in self.each_case():
            if case not in RUNAI:
                continue
            r = values(case)["runai"]
            key = r.get("key", "credentials")
            (w,) = [w for w in workloads(case) if service_account(w) == RUNAI[case]]
            c = collector(w)
            self.assertEqual({n for n in env(c) if n.startswith("RUNAI_")}, RUNAI_ENV)
            for name in RUNAI_ENV:
                self.assertEqual(set(env(c)[name]), {"name", "value"}, f"{name}: a literal, non-secret value")
            mapper = r.get("mapper", {})
            want = {
                "RUNAI_URL": r["url"],
                "RUNAI_CREDENTIALS_FILE": f"/etc/edgemeter/runai/{key}",
                "RUNAI_TOKEN_ENDPOINT": r.get("tokenEndpoint", "v1"),
                "RUNAI_METRICS_DELAY": r.get("metricsDelay", "30s"),
                "RUNAI_SAMPLE_STEP": r.get("sampleStep", "15s"),
                "RUNAI_PAGE_SIZE": str(r.get("pageSize", 500)),
                "RUNAI_REQUEST_TIMEOUT": r.get("requestTimeout", "30s"),
            }
            for name, value in want.items():
                self.assertEqual(env_value(c, name), value, f"{case} {name}")
            self.assertEqual(json.loads(env_value(c, "RUNAI_MAPPER_CONFIG")), r.get("mapperConfig", {}))
            spec = w["spec"]["template"]["spec"]
            vols = {x["name"]: x for x in spec["volumes"]}
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            self.assertEqual(mounts["runai-credentials"],
                             {"name": "runai-credentials", "mountPath": "/etc/edgemeter/runai", "readOnly": True})
            # Only the one key, group-readable by fsGroup 65532 (0440), nothing writable.
            self.assertEqual(vols["runai-credentials"], {"name": "runai-credentials", "secret": {
                "secretName": r["existingSecret"], "defaultMode": 0o440, "items": [{"key": key, "path": key}]}})
            self.assertEqual(spec["securityContext"]["fsGroup"], UID)
            kind = mapper.get("type", "builtin")
            if kind == "builtin":
                self.assertEqual(env_value(c, "RUNAI_MAPPER"), f"builtin:{mapper.get('builtin', 'runai')}")
                self.assertNotIn("runai-mapper", vols)
            else:
                self.assertEqual(mounts["runai-mapper"],
                                 {"name": "runai-mapper", "mountPath": "/etc/edgemeter/runai-mappers", "readOnly": True})
                if kind == "configMap":
                    cm = mapper["configMap"]
                    self.assertEqual(env_value(c, "RUNAI_MAPPER"), f"/etc/edgemeter/runai-mappers/{cm['key']}")
                    self.assertEqual(vols["runai-mapper"]["configMap"],
                                     {"name": cm["name"], "items": [{"key": cm["key"], "path": cm["key"]}]})
                else:
                    self.assertEqual(env_value(c, "RUNAI_MAPPER"), f"/etc/edgemeter/runai-mappers/{mapper['image']['path']}")

    def test_no_secret_value_in_the_rendered_output(self):
        for case in self.each_case():
            if case not in RUNAI:
                continue
            text = rendered(case)
            for name in ("RUNAI_CLIENT_ID", "RUNAI_CLIENT_SECRET", "RUNAI_APP_ID", "RUNAI_APP_SECRET"):
                self.assertNotIn(name, text, f"{case}: credentials must come from the mounted file")
            for word in ("clientSecret", "appSecret", "clientId", "appId"):
                self.assertNotIn(word, text)
            # The chart creates no Secret for Run:ai: it only references an existing one.
            for s in of_kind(case, "Secret"):
                self.assertEqual(set(s.get("data", {})), {"token"}, "only the OpenMeter token Secret")
            # Every reference to the Run:ai Secret is the credentials volume, never an env var.
            secret = values(case)["runai"]["existingSecret"]
            for w in workloads(case):
                for e in collector(w).get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef", {})
                    self.assertNotEqual(ref.get("name"), secret, e)

    def test_runai_only_reads_nothing_of_the_cluster_but_its_lease(self):
        for case in self.each_case():
            for sa, (kinds, lease) in EXPECTED[case].items():
                if kinds:
                    continue
                self.assertEqual({g[2] for g in grants(case)[sa]}, {"leases"})
                (w,) = [w for w in workloads(case) if service_account(w) == sa]
                self.assertFalse({"EDGEMETER_KINDS", "EDGEMETER_MAPPER", "SCRAPE_NAMESPACE"} & set(env(collector(w))))
            # No empty ClusterRole is rendered for a workload without Kubernetes kinds.
            for r in of_kind(case, "ClusterRole"):
                self.assertTrue(all(rule["resources"] for rule in r["rules"]), r["metadata"]["name"])


# --- SQL ---------------------------------------------------------------------------------

def sql_values(case: str) -> dict:
    return values(case).get("sql", {})


def sql_collector(case: str) -> dict:
    return one(case, "StatefulSet", one_named(case, SQL[case]))


class TestSql(PerCase):
    def test_only_the_cluster_wide_collector_under_a_lease_runs_sql(self):
        for case in self.each_case():
            runs = [w for w in workloads(case) if "sql" in (env_value(collector(w), "EDGEMETER_SOURCES") or "").split(",")]
            self.assertEqual([service_account(w) for w in runs], [SQL[case]] if case in SQL else [])
            for w in runs:
                # One biller: a StatefulSet whose Lease holder alone bills (or a single replica),
                # not bound to a node.
                self.assertEqual(w["kind"], "StatefulSet")
                c = collector(w)
                self.assertTrue(env_value(c, "EDGEMETER_LEADER_ELECTION") == "true" or w["spec"]["replicas"] == 1)
                self.assertNotIn("SCRAPE_NODE_NAME", env(c))
            for w in workloads(case):
                if w in runs:
                    continue
                c = collector(w)
                where = f"{case} {w['kind']}/{w['metadata']['name']}"
                self.assertNotIn("sql", env_value(c, "EDGEMETER_SOURCES").split(","), where)
                self.assertEqual({n for n in env(c) if n.startswith("SQL_")}, set(), where)
                vols = {x["name"] for x in w["spec"]["template"]["spec"]["volumes"]}
                self.assertEqual(vols & {"sql-urls", "sql-ca", "sql-mapper"}, set(), where)
                self.assertEqual({m["name"] for m in c["volumeMounts"]} & {"sql-urls", "sql-ca", "sql-mapper"}, set(), where)
            # Every per-node collector runs exactly the Kubernetes source, whatever is enabled.
            for d in of_kind(case, "DaemonSet"):
                self.assertEqual(env_value(collector(d), "EDGEMETER_SOURCES"), "kubernetes", case)

    def test_sql_imports_is_json_in_the_daemons_keys(self):
        for case in self.each_case():
            if case not in SQL:
                continue
            w = sql_collector(case)
            c = collector(w)
            self.assertEqual({n for n in env(c) if n.startswith("SQL_")}, SQL_ENV)
            for name in SQL_ENV:
                self.assertEqual(set(env(c)[name]), {"name", "value"}, f"{name}: a literal, non-secret value")
            try:
                imports = sql_imports(c)
            except json.JSONDecodeError as e:
                self.fail(f"{case}: SQL_IMPORTS is not JSON once the kubelet expanded it: {e}")
            self.assertEqual(imports, expected_sql_imports(case))
            for i in imports:
                self.assertLessEqual(set(i), SQL_CHART_KEYS, i["name"])
                self.assertLessEqual(set(i), SQL_IMPORT_KEYS, i["name"])
                self.assertLessEqual(set(i["cursor"]), {"mode", "column", "lateness"})
            # The kubelet rewrites $$ to $ and expands $(VAR): the rendered value doubles
            # every `$`, so none is left alone.
            raw = env_value(c, "SQL_IMPORTS")
            self.assertNotIn("$", raw.replace("$$", ""), "a `$` that the kubelet would rewrite")
            self.assertEqual(json.loads(container_env(c)["SQL_MAPPER_CONFIG"]), sql_values(case).get("mapperConfig", {}))
            self.assertEqual(env_value(c, "SQL_REQUEST_TIMEOUT"), sql_values(case).get("requestTimeout", "30s"))
            mapper = sql_values(case).get("mapper", {})
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            vols = {x["name"]: x for x in w["spec"]["template"]["spec"]["volumes"]}
            if mapper.get("type", "builtin") == "builtin":
                self.assertEqual(env_value(c, "SQL_MAPPER"), f"builtin:{mapper.get('builtin', 'sql')}")
                self.assertNotIn("sql-mapper", vols)
            else:
                self.assertEqual(mounts["sql-mapper"],
                                 {"name": "sql-mapper", "mountPath": "/etc/edgemeter/sql-mappers", "readOnly": True})
                cm = mapper["configMap"]
                self.assertEqual(env_value(c, "SQL_MAPPER"), f"/etc/edgemeter/sql-mappers/{cm['key']}")
                self.assertEqual(vols["sql-mapper"]["configMap"],
                                 {"name": cm["name"], "items": [{"key": cm["key"], "path": cm["key"]}]})

    def test_each_url_file_is_its_secret_key_mounted_read_only(self):
        for case in self.each_case():
            if case not in SQL:
                continue
            s = sql_values(case)
            w = sql_collector(case)
            c = collector(w)
            spec = w["spec"]["template"]["spec"]
            (mount,) = [m for m in c["volumeMounts"] if m["name"] == "sql-urls"]
            self.assertEqual(mount, {"name": "sql-urls", "mountPath": SQL_URL_DIR, "readOnly": True})
            (vol,) = [v for v in spec["volumes"] if v["name"] == "sql-urls"]
            # Only the imports' keys, each under its import's name, 0440 to group 65532.
            self.assertEqual(set(vol), {"name", "projected"})
            self.assertEqual(vol["projected"]["defaultMode"], 0o440)
            self.assertEqual(spec["securityContext"]["fsGroup"], UID)
            files = {}
            for src in vol["projected"]["sources"]:
                self.assertEqual(set(src), {"secret"}, "only Secrets hold database URLs")
                self.assertEqual(set(src["secret"]), {"name", "items"})
                for item in src["secret"]["items"]:
                    self.assertEqual(set(item), {"key", "path"})
                    files[f"{SQL_URL_DIR}/{item['path']}"] = (src["secret"]["name"], item["key"])
            want = {f"{SQL_URL_DIR}/{i['name']}": (i.get("existingSecret", s.get("existingSecret")),
                                                   i.get("existingSecretKey", i["name"]))
                    for i in s["imports"]}
            self.assertEqual(files, want)
            self.assertEqual(sorted(i["url_file"] for i in sql_imports(c)), sorted(want))
            # The CA bundle, when given, is its own read-only volume that every import trusts.
            ca = s.get("caBundle", {})
            vols = {v["name"]: v for v in spec["volumes"]}
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            if ca.get("configMap") or ca.get("secret"):
                key = ca.get("key", "ca.crt")
                self.assertEqual(mounts["sql-ca"], {"name": "sql-ca", "mountPath": "/etc/edgemeter/sql-ca", "readOnly": True})
                items = [{"key": key, "path": key}]
                self.assertEqual(vols["sql-ca"], {"name": "sql-ca", **(
                    {"configMap": {"name": ca["configMap"], "items": items}} if ca.get("configMap")
                    else {"secret": {"secretName": ca["secret"], "items": items}})})
                self.assertEqual({i["ca_file"] for i in sql_imports(c)}, {f"/etc/edgemeter/sql-ca/{key}"})
            else:
                self.assertNotIn("sql-ca", vols)
                self.assertFalse(any("ca_file" in i for i in sql_imports(c)))

    def test_no_database_url_or_secret_reference_outside_the_volume(self):
        for case in self.each_case():
            text = rendered(case)
            self.assertIsNone(re.search(r"(?i)postgres(ql)?://", text), f"{case}: a database URL in the manifests")
            self.assertEqual(of_kind(case, "ConfigMap"), [], f"{case}: the chart renders no ConfigMap")
            for s in of_kind(case, "Secret"):
                self.assertEqual(set(s.get("data", {})), {"token"}, "only the OpenMeter token Secret")
            if case not in SQL:
                continue
            s = sql_values(case)
            secrets = {i.get("existingSecret", s.get("existingSecret")) for i in s["imports"]}
            for w in workloads(case):
                c = collector(w)
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef", {})
                    self.assertNotIn(ref.get("name"), secrets, f"{case}: a URL Secret as env: {e}")
                    self.assertNotIn("url_env", e.get("value", ""))
                self.assertNotIn("envFrom", c)
                for v in w["spec"]["template"]["spec"]["volumes"]:
                    if v["name"] == "sql-urls":
                        continue
                    self.assertNotIn(v.get("secret", {}).get("secretName"), secrets, f"{case}: {v}")


# --- values.schema.json and the templates' own checks ------------------------------------

URL = ["--set", "openmeter.url=https://openmeter.cloud"]
RUNAI_ON = ["--set", "runai.enabled=true", "--set", "runai.url=https://acme.run.ai",
            "--set", "runai.existingSecret=runai-credentials"]
SQL_ON = ["--set", "sql.enabled=true", "--set", "sql.existingSecret=billing-db",
          "--set", "sql.imports[0].name=calls",
          "--set", "sql.imports[0].query=SELECT * FROM calls WHERE id > $1 AND id <= $2",
          "--set", "sql.imports[0].cursor.mode=sequence", "--set", "sql.imports[0].cursor.column=id"]
SQL_TIME = ["--set", "sql.enabled=true", "--set", "sql.existingSecret=billing-db",
            "--set", "sql.imports[0].name=calls",
            "--set", "sql.imports[0].query=SELECT * FROM calls WHERE t >= $1 AND t < $2",
            "--set", "sql.imports[0].cursor.mode=time", "--set", "sql.imports[0].cursor.column=t"]


class TestSchema(unittest.TestCase):
    def refused(self, *args: str, expect: str):
        p = helm_template(*args)
        self.assertNotEqual(p.returncode, 0, f"helm template {' '.join(args)} was accepted")
        self.assertIn(expect, p.stderr)

    def test_the_readme_install_command_renders(self):
        p = helm_template(*URL, "--set", "openmeter.token=om_x")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_unknown_keys_are_refused_at_every_level(self):
        for key in ("bogus", "openmeter.bogus", "sources.kubernetes.bogus", "daemonset.hostPath.initChown.image.bogus",
                    "mapper.image.bogus", "queue.persistence.bogus", "resources.bogus", "affinity.bogus",
                    "runai.bogus", "runai.mapper.bogus", "runai.mapper.image.bogus", "sql.bogus",
                    "sql.mapper.bogus", "sql.mapper.configMap.bogus", "sql.caBundle.bogus"):
            with self.subTest(key=key):
                self.refused(*URL, "--set", f"{key}=1", expect="additional properties 'bogus' not allowed")

    def test_wrong_types_and_values_are_refused(self):
        for setting in ("replicas=two", "replicas=0", "mode=cronjob", "unit=day", "log.format=xml",
                        "image.pullPolicy=Sometimes", "interval=15 seconds", "sources.kubernetes.pods=maybe",
                        "batch.size=-1", "mapper.type=wasi", "mapper.configMap.key=mapper.js",
                        "mapper.image.path=../etc/passwd.wasm", "openmeter.url=openmeter.cloud",
                        "queue.persistence.size=lots", "service.port=70000", "sink=kafka",
                        "mapper.builtin=acme", "runai.mapper.builtin=acme", "runai.url=acme.run.ai",
                        "runai.url=ftp://acme.run.ai", "runai.tokenEndpoint=v3", "runai.metricsDelay=500ms",
                        "runai.sampleStep=0s", "runai.sampleStep=1.5s", "runai.requestTimeout=0s",
                        "runai.pageSize=0", "runai.pageSize=501", "runai.key=../x", "runai.only=yes",
                        "runai.mapper.type=wasi", "runai.mapper.configMap.key=mapper.js"):
            with self.subTest(setting=setting):
                self.refused(*URL, "--set", setting, expect="values don't meet the specifications of the schema")

    def test_free_form_only_where_documented(self):
        schema = json.loads((CHART / "values.schema.json").read_text())
        free = {"/mapper/config", "/runai/mapperConfig", "/sql/mapperConfig", "/affinity/nodeAffinity", "/affinity/podAffinity",
                "/affinity/podAntiAffinity"}
        seen = set()

        def walk(node, path):
            if isinstance(node, dict):
                if node.get("type") == "object" and "additionalProperties" not in node:
                    seen.add(path)
                for key, child in node.get("properties", {}).items():
                    walk(child, f"{path}/{key}")
                if isinstance(node.get("items"), dict):
                    walk(node["items"], f"{path}[]")
        walk(schema, "")
        for name, d in schema["definitions"].items():
            walk(d, f"#{name}")
        self.assertEqual(seen, free)
        self.assertIs(schema["additionalProperties"], False)

    def test_template_checks_name_the_fix(self):
        cases = [
            ((), "openmeter.url is required"),
            ((*URL, "--set", "leaderElection.enabled=false"), "replicas 2 without leaderElection.enabled"),
            ((*URL, "--set", "mode=daemonset", "--set", "leaderElection.enabled=false"),
             "daemonset.cluster.replicas 2 without leaderElection.enabled"),
            ((*URL, "--set", "mode=daemonset", "--set", "sources.kubernetes.pods=false"), "enable sources.kubernetes.pods"),
            ((*URL, "--set", "sources.kubernetes.pods=false", "--set", "sources.kubernetes.pvcs=false"), "nothing to meter"),
            ((*URL, "--set", "mapper.type=configMap"), "needs mapper.configMap.name"),
            ((*URL, "--set", "mapper.type=image"), "needs mapper.image.reference"),
            ((*URL, "--set", "caBundle.configMap=a", "--set", "caBundle.secret=b"), "not both"),
            ((*URL, "--set", "serviceAccount.create=false"), "needs serviceAccount.name"),
            ((*URL, "--set", "runai.only=true"), "runai.only=true meters Run:ai alone but runai.enabled is false"),
            ((*URL, *RUNAI_ON, "--set", "runai.only=true", "--set", "mode=daemonset"),
             "runai.only runs no Kubernetes source, so mode daemonset would have no per-node collectors"),
            ((*URL, *RUNAI_ON, "--set", "mode=daemonset", "--set", "leaderElection.enabled=false"),
             "daemonset.cluster.replicas 2 without leaderElection.enabled would bill every PVC and Run:ai window"),
            ((*URL, *RUNAI_ON, "--set", "mode=daemonset", "--set", "leaderElection.enabled=false",
              "--set", "sources.kubernetes.pvcs=false"),
             "daemonset.cluster.replicas 2 without leaderElection.enabled would bill every Run:ai window"),
            ((*URL, *RUNAI_ON, "--set", "runai.only=true", "--set", "leaderElection.enabled=false"),
             "replicas 2 without leaderElection.enabled"),
            ((*URL, *RUNAI_ON, "--set", "runai.mapper.type=configMap"), "needs runai.mapper.configMap.name"),
            ((*URL, *RUNAI_ON, "--set", "runai.mapper.type=image"), "needs runai.mapper.image.reference"),
            ((*URL, *RUNAI_ON, "--set", "extraEnv[0].name=RUNAI_CLIENT_SECRET", "--set", "extraEnv[0].value=s3cr3t"),
             "extraEnv sets RUNAI_CLIENT_SECRET as a literal value"),
            ((*URL, *RUNAI_ON, "--set", "extraEnv[0].name=RUNAI_APP_SECRET", "--set", "extraEnv[0].value=s3cr3t"),
             "extraEnv sets RUNAI_APP_SECRET as a literal value"),
            # The schema refuses these first (below); without it the templates still do.
            ((*URL, "--skip-schema-validation", "--set", "runai.enabled=true"), "runai.enabled needs runai.url"),
            ((*URL, "--skip-schema-validation", "--set", "runai.enabled=true", "--set", "runai.url=https://acme.run.ai"),
             "runai.enabled needs runai.existingSecret"),
        ]
        for args, expect in cases:
            with self.subTest(expect=expect):
                self.refused(*args, expect=expect)

    def test_runai_url_and_secret_are_required_by_the_schema(self):
        for args, path in (((), "/runai/url"), ((), "/runai/existingSecret"),
                           (("--set", "runai.url=https://acme.run.ai"), "/runai/existingSecret"),
                           (("--set", "runai.existingSecret=runai-credentials"), "/runai/url")):
            with self.subTest(path=path, args=args):
                p = helm_template(*URL, "--set", "runai.enabled=true", *args)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("values don't meet the specifications of the schema", p.stderr)
                self.assertIn(f"at '{path}': minLength", p.stderr)
        # Off, neither is needed; http:// is allowed (an in-cluster control plane).
        self.assertEqual(helm_template(*URL).returncode, 0)
        p = helm_template(*URL, *RUNAI_ON, "--set", "runai.url=http://runai.runai.svc:8080")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_no_value_takes_a_runai_secret(self):
        for key in ("clientSecret", "clientId", "appSecret", "credentials", "token"):
            with self.subTest(key=key):
                self.refused(*URL, *RUNAI_ON, "--set", f"runai.{key}=s3cr3t",
                             expect=f"additional properties '{key}' not allowed")
        # A Secret reference in extraEnv is not a literal: allowed (the daemon then refuses
        # two ways to authenticate at start, naming both).
        p = helm_template(*URL, *RUNAI_ON, "--set", "extraEnv[0].name=RUNAI_CLIENT_SECRET",
                          "--set", "extraEnv[0].valueFrom.secretKeyRef.name=s",
                          "--set", "extraEnv[0].valueFrom.secretKeyRef.key=k")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_runai_beside_pods_only_in_daemonset_mode_gets_a_cluster_collector_of_its_own(self):
        p = helm_template(*URL, *RUNAI_ON, "--set", "mode=daemonset", "--set", "sources.kubernetes.pvcs=false")
        self.assertEqual(p.returncode, 0, p.stderr)
        ds = [d for d in yaml.safe_load_all(p.stdout) if d]
        (d,) = [x for x in ds if x["kind"] == "DaemonSet"]
        (s,) = [x for x in ds if x["kind"] == "StatefulSet"]
        self.assertEqual(s["metadata"]["name"], "edgemeter-cluster")
        self.assertEqual(env_value(collector(d), "EDGEMETER_SOURCES"), "kubernetes")
        self.assertEqual(env_value(collector(d), "EDGEMETER_KINDS"), "pods")
        c = collector(s)
        self.assertEqual(env_value(c, "EDGEMETER_SOURCES"), "runai")
        self.assertIsNone(env_value(c, "EDGEMETER_KINDS"))
        self.assertEqual(env_value(c, "EDGEMETER_LEADER_ELECTION"), "true")
        self.assertEqual(env_value(c, "RUNAI_URL"), "https://acme.run.ai")
        # Its ServiceAccount reads no pods, nodes, PVCs or PVs: only its Lease.
        roles = [x for x in ds if x["kind"] in ("ClusterRole", "Role") and x["metadata"]["name"].endswith("edgemeter-cluster")]
        self.assertEqual(roles, [])
        (lease,) = [x for x in ds if x["kind"] == "Role" and x["metadata"]["name"] == "edgemeter-cluster-lease"]
        self.assertEqual({res for rule in lease["rules"] for res in rule["resources"]}, {"leases"})

    def test_kubernetes_kinds_off_with_runai_on_is_runai_alone(self):
        p = helm_template(*URL, *RUNAI_ON, "--set", "sources.kubernetes.pods=false", "--set", "sources.kubernetes.pvcs=false")
        self.assertEqual(p.returncode, 0, p.stderr)
        (s,) = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "StatefulSet"]
        self.assertEqual(env_value(collector(s), "EDGEMETER_SOURCES"), "runai")

    def test_builtin_runai_is_accepted_where_builtins_are_listed(self):
        p = helm_template(*URL, "--set", "mapper.builtin=runai")
        self.assertEqual(p.returncode, 0, p.stderr)
        (s,) = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "StatefulSet"]
        self.assertEqual(env_value(collector(s), "EDGEMETER_MAPPER"), "builtin:runai")
        p = helm_template(*URL, *RUNAI_ON, "--set", "runai.mapper.builtin=kubernetes")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_runai_image_mapper_needs_kubernetes_1_31(self):
        args = [*URL, *RUNAI_ON, "--set", "runai.mapper.type=image", "--set", "runai.mapper.image.reference=ghcr.io/acme/m:1"]
        p = run([HELM, "template", RELEASE, CHART_REL, "-n", NAMESPACE, "--kube-version", "1.30.0", *args])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("runai.mapper.type image needs Kubernetes 1.31 or later", p.stderr)
        p = helm_template(*args)
        self.assertEqual(p.returncode, 0, p.stderr)
        (s,) = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "StatefulSet"]
        vols = {v["name"]: v for v in s["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["runai-mapper"]["image"], {"reference": "ghcr.io/acme/m:1", "pullPolicy": "IfNotPresent"})
        self.assertEqual(env_value(collector(s), "RUNAI_MAPPER"), "/etc/edgemeter/runai-mappers/mapper.wasm")

    def test_image_volume_mapper_needs_kubernetes_1_31(self):
        p = run([HELM, "template", RELEASE, CHART_REL, "-n", NAMESPACE, "--kube-version", "1.30.0",
                 "-f", f"{CHART_REL}/ci/mapper-image-values.yaml"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("needs Kubernetes 1.31 or later", p.stderr)

    def sql_render(self, *args: str) -> list:
        p = helm_template(*URL, *SQL_ON, *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [d for d in yaml.safe_load_all(p.stdout) if d]

    def test_sql_values_are_validated_by_the_schema(self):
        for setting in ("sql.enabled=yes", "sql.only=yes", "sql.existingSecret=Billing_DB",
                        "sql.requestTimeout=0s", "sql.requestTimeout=30 seconds", "sql.mapper.builtin=acme",
                        "sql.mapper.type=wasi", "sql.mapper.configMap.key=mapper.js",
                        "sql.imports[0].name=API-calls", "sql.imports[0].name=" + "a" * 65,
                        "sql.imports[0].query=SELECT 1 FROM t WHERE id > $1",
                        "sql.imports[0].query=SELECT 1 FROM t WHERE id > $1 AND id <= $2 AND x = $3",
                        "sql.imports[0].cursor.mode=offset", "sql.imports[0].cursor.lateness=1m",
                        "sql.imports[0].cursor.column= ",
                        "sql.imports[0].pageSize=0", "sql.imports[0].pageSize=100001",
                        "sql.imports[0].maxRowsPerRound=0", "sql.imports[0].existingSecretKey=a/b",
                        "sql.imports[0].existingSecret=Other_DB", "sql.caBundle.key=../ca.pem"):
            with self.subTest(setting=setting):
                self.refused(*URL, *SQL_ON, "--set", setting, expect="values don't meet the specifications of the schema")
        # A time cursor's lateness is whole seconds.
        self.refused(*URL, *SQL_TIME, "--set", "sql.imports[0].cursor.lateness=1.5s",
                     expect="values don't meet the specifications of the schema")
        p = helm_template(*URL, *SQL_TIME, "--set", "sql.imports[0].cursor.lateness=1m30s")
        self.assertEqual(p.returncode, 0, p.stderr)
        # A driver is postgres or clickhouse; a ClickHouse sequence cursor takes a lateness
        # (no transactions to wait for), a PostgreSQL one does not.
        self.refused(*URL, *SQL_ON, "--set", "sql.imports[0].driver=mysql",
                     expect="values don't meet the specifications of the schema")
        for driver, ok in (("clickhouse", True), ("postgres", False)):
            with self.subTest(driver=driver):
                p = helm_template(*URL, *SQL_ON, "--set", f"sql.imports[0].driver={driver}",
                                  "--set", "sql.imports[0].cursor.lateness=30s")
                self.assertEqual(p.returncode == 0, ok, p.stderr)
        # Enabled without an import: the schema names the key.
        p = helm_template(*URL, "--set", "sql.enabled=true", "--set", "sql.existingSecret=db")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("at '/sql'", p.stderr)
        self.assertIn("imports", p.stderr)

    def test_no_sql_value_takes_a_url(self):
        for key in ("url", "url_env", "url_file", "urlEnv", "password", "dsn"):
            with self.subTest(key=key):
                self.refused(*URL, *SQL_ON, "--set", f"sql.imports[0].{key}=postgres://u:p@db/x",
                             expect=f"additional properties '{key}' not allowed")
        for key in ("url", "password", "urls"):
            with self.subTest(key=key):
                self.refused(*URL, *SQL_ON, "--set", f"sql.{key}=postgres://u:p@db/x",
                             expect=f"additional properties '{key}' not allowed")
        self.refused(*URL, *SQL_ON, "--set", "sql.imports[0].cursor.bogus=1",
                     expect="additional properties 'bogus' not allowed")
        # A literal database URL or SQL_IMPORTS in extraEnv is refused by the templates (a
        # Secret reference is not a literal, and other variables pass).
        for name, value in (("BILLING_DATABASE_URL", "postgres://u:p@db/x"), ("DB", "PostgreSQL://u:p@db/x"),
                            ("SQL_IMPORTS", "[]")):
            with self.subTest(name=name):
                self.refused(*URL, "--set", f"extraEnv[0].name={name}", "--set-string", f"extraEnv[0].value={value}",
                             expect=f"extraEnv sets {name}")
        p = helm_template(*URL, *SQL_ON, "--set", "extraEnv[0].name=PGAPPNAME", "--set", "extraEnv[0].value=edgemeter",
                          "--set", "extraEnv[1].name=BILLING_DATABASE_URL",
                          "--set", "extraEnv[1].valueFrom.secretKeyRef.name=s",
                          "--set", "extraEnv[1].valueFrom.secretKeyRef.key=k")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_sql_template_checks_name_the_fix(self):
        cases = [
            ((*URL, "--set", "sql.only=true"), "sql.only=true meters SQL without the Kubernetes source but sql.enabled is false"),
            ((*URL, *SQL_ON, "--set", "sql.only=true", "--set", "mode=daemonset"),
             "sql.only runs no Kubernetes source, so mode daemonset would have no per-node collectors"),
            ((*URL, *SQL_ON, "--set", "sql.existingSecret="), "sql.imports calls needs a Secret with its database URL"),
            ((*URL, *SQL_ON, "--set", "sql.imports[1].name=calls", "--set", "sql.imports[1].query=SELECT 1 WHERE $1 < $2",
              "--set", "sql.imports[1].cursor.mode=sequence", "--set", "sql.imports[1].cursor.column=id"),
             "the name calls is used twice"),
            ((*URL, *SQL_ON, "--set", "mode=daemonset", "--set", "leaderElection.enabled=false"),
             "would bill every PVC and SQL window 2 times"),
            ((*URL, *SQL_ON, *RUNAI_ON, "--set", "mode=daemonset", "--set", "leaderElection.enabled=false"),
             "would bill every PVC, Run:ai and SQL window 2 times"),
            ((*URL, *SQL_ON, "--set", "mode=daemonset", "--set", "leaderElection.enabled=false",
              "--set", "sources.kubernetes.pvcs=false"), "would bill every SQL window 2 times"),
            ((*URL, *SQL_ON, "--set", "sql.only=true", "--set", "leaderElection.enabled=false"),
             "replicas 2 without leaderElection.enabled"),
            ((*URL, *SQL_ON, "--set", "sql.mapper.type=configMap"), "needs sql.mapper.configMap.name"),
            ((*URL, *SQL_ON, "--set", "sql.caBundle.configMap=a", "--set", "sql.caBundle.secret=b"),
             "sql.caBundle: set configMap or secret, not both"),
            ((*URL, *SQL_ON, "--set", "sql.mapper.type=image"), "needs sql.mapper.image.reference"),
            ((*URL, "--set", "sources.kubernetes.pods=false", "--set", "sources.kubernetes.pvcs=false"),
             "runai.enabled or sql.enabled"),
            # The schema refuses this first; without it the templates still do.
            ((*URL, "--skip-schema-validation", "--set", "sql.enabled=true"), "sql.enabled needs at least one import"),
        ]
        for args, expect in cases:
            with self.subTest(expect=expect):
                self.refused(*args, expect=expect)
        image = ["--set", "sql.mapper.type=image", "--set", "sql.mapper.image.reference=ghcr.io/acme/m:1"]
        p = run([HELM, "template", RELEASE, CHART_REL, "-n", NAMESPACE, "--kube-version", "1.30.0", *URL, *SQL_ON, *image])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("sql.mapper.type image needs Kubernetes 1.31 or later", p.stderr)
        (s,) = [d for d in self.sql_render(*image) if d["kind"] == "StatefulSet"]
        vols = {v["name"]: v for v in s["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["sql-mapper"]["image"], {"reference": "ghcr.io/acme/m:1", "pullPolicy": "IfNotPresent"})
        self.assertEqual(env_value(collector(s), "SQL_MAPPER"), "/etc/edgemeter/sql-mappers/mapper.wasm")

    def test_sql_alone_and_beside_pods_only_in_daemonset_mode(self):
        ds = self.sql_render("--set", "sources.kubernetes.pods=false", "--set", "sources.kubernetes.pvcs=false")
        (s,) = [d for d in ds if d["kind"] == "StatefulSet"]
        self.assertEqual(env_value(collector(s), "EDGEMETER_SOURCES"), "sql")
        self.assertEqual([d for d in ds if d["kind"] == "ClusterRole"], [])
        ds = self.sql_render("--set", "mode=daemonset", "--set", "sources.kubernetes.pvcs=false")
        (d,) = [x for x in ds if x["kind"] == "DaemonSet"]
        (s,) = [x for x in ds if x["kind"] == "StatefulSet"]
        self.assertEqual(s["metadata"]["name"], "edgemeter-cluster")
        self.assertEqual(env_value(collector(d), "EDGEMETER_SOURCES"), "kubernetes")
        self.assertEqual({n for n in env(collector(d)) if n.startswith("SQL_")}, set())
        self.assertEqual(env_value(collector(s), "EDGEMETER_SOURCES"), "sql")
        self.assertIsNone(env_value(collector(s), "EDGEMETER_KINDS"))
        # Its ServiceAccount reads nothing of the cluster but its Lease.
        roles = [x for x in ds if x["kind"] in ("ClusterRole", "Role") and x["metadata"]["name"].endswith("edgemeter-cluster")]
        self.assertEqual(roles, [])

    def test_queries_reach_the_daemon_as_written(self):
        # Whatever a query holds — dollar quotes, a $(NAME) the kubelet would expand, quotes,
        # newlines, commas, < and > — SQL_IMPORTS parses back to it.
        query = ("SELECT id, $$it's$$ AS a, \"x\", $tag$b$tag$ FROM t\n"
                 "WHERE id > $1 AND id <= $2 AND note <> '$(POD_NAME)' AND n <> '$$(X)' AND m <> '$'")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"sql": {"enabled": True, "existingSecret": "billing-db", "imports": [
                {"name": "calls", "query": query, "cursor": {"mode": "sequence", "column": "id"}}]}}, f)
        try:
            p = helm_template(*URL, "-f", f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(p.returncode, 0, p.stderr)
        (s,) = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "StatefulSet"]
        c = collector(s)
        (i,) = sql_imports(c)
        self.assertEqual(i["query"], query)
        self.assertNotIn("\\u003c", env_value(c, "SQL_IMPORTS"), "< and > are written as they are")

    def test_builtin_sql_is_accepted_where_builtins_are_listed(self):
        p = helm_template(*URL, "--set", "mapper.builtin=sql")
        self.assertEqual(p.returncode, 0, p.stderr)
        (s,) = [d for d in self.sql_render("--set", "sql.mapper.builtin=prometheus") if d["kind"] == "StatefulSet"]
        self.assertEqual(env_value(collector(s), "SQL_MAPPER"), "builtin:prometheus")

    def test_sink_stdout_needs_no_url_and_sets_no_openmeter_env(self):
        p = helm_template("--set", "sink=stdout", "--set", "replicas=1", "--set", "leaderElection.enabled=false")
        self.assertEqual(p.returncode, 0, p.stderr)
        (s,) = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "StatefulSet"]
        names = set(env(collector(s)))
        self.assertEqual(env_value(collector(s), "EDGEMETER_SINK"), "stdout")
        self.assertFalse({"OPENMETER_URL", "OPENMETER_TOKEN", "BATCH_SIZE"} & names)

    def test_derived_queue_size_follows_max_bytes(self):
        p = helm_template(*URL, "--set", "queue.maxBytes=10737418240")
        (s,) = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "StatefulSet"]
        # 1.6 × 10 GiB = 16384 MiB exactly.
        self.assertEqual(s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "16384Mi")
        self.assertEqual(env_value(collector(s), "EDGEMETER_QUEUE_MAX_BYTES"), "10737418240")


# --- docs --------------------------------------------------------------------------------

OPAQUE = {"resources", "daemonset.resources", "nodeSelector", "affinity", "podAnnotations", "podLabels",
          "mapper.config", "runai.mapperConfig", "sql.mapperConfig", "serviceAccount.annotations",
          "serviceMonitor.labels"}


def leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and path not in OPAQUE:
            yield from leaves(v, path + ".")
        else:
            yield path, v


def value_table(text: str) -> dict:
    """`key` → default (parsed as YAML) from rows `| \\`key\\` | \\`default\\` | meaning |`."""
    out = {}
    for m in re.finditer(r"^\| `([A-Za-z0-9_.]+)` \| `([^`]*)` \|", text, re.M):
        out[m.group(1)] = yaml.safe_load(m.group(2))
    return out


class TestDocs(unittest.TestCase):
    def check_table(self, text: str, where: str):
        defaults = dict(leaves(yaml.safe_load((CHART / "values.yaml").read_text())))
        table = value_table(text)
        self.assertEqual(sorted(set(defaults) - set(table)), [], f"values missing from the table in {where}")
        self.assertEqual(sorted(set(table) - set(defaults)), [], f"rows in {where} that are not values")
        for key, default in defaults.items():
            self.assertEqual(table[key], default, f"{where}: default of {key}")

    def test_chart_readme_documents_every_value(self):
        self.check_table((CHART / "README.md").read_text(), "helm/edgemeter/README.md")

    def test_top_level_readme_section_documents_every_value(self):
        text = (REPO / "README.md").read_text()
        m = re.search(r"^## Deploy on Kubernetes\n(.*?)^## ", text, re.M | re.S)
        self.assertIsNotNone(m, "README.md has no '## Deploy on Kubernetes' section")
        self.assertTrue(text[m.end() - 3:].startswith("## Layout"), "the section must come right before '## Layout'")
        self.check_table(m.group(1), "README.md")


# --- runner ------------------------------------------------------------------------------

def regen() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for old in GOLDEN.glob("*.yaml"):
        if old.stem not in CASES:
            old.unlink()
    for case in CASES:
        (GOLDEN / f"{case}.yaml").write_text(rendered(case))
        print(f"wrote {(GOLDEN / f'{case}.yaml').relative_to(REPO)}")


def main(argv: list[str]) -> int:
    if "--regen" in argv:
        argv = [a for a in argv if a != "--regen"]
        regen()
    prog = unittest.main(module=__name__, argv=["test_chart", "-v", *argv], exit=False)
    r = prog.result
    failed = len(r.failures) + len(r.errors) + len(r.unexpectedSuccesses)
    # The plain closing line CI reads.
    print(f"chart: {r.testsRun - failed - len(r.skipped)} passed, {failed} failed", flush=True)
    return 0 if r.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
