"""The Kubernetes manifests kcheck ships (kcheck/fleet/kubernetes), field by field.

No Kubernetes cluster can run on this machine, so nothing here applies them: the tests read the
installed files and check what a cluster would act on (the probe's argv, its privileges and host
mounts, the tolerations, the node-problem-detector plugin config), and that kcheck's own parser
accepts the argv the manifests run.
"""

# These are checks of the files, not a cluster run: no Kubernetes cluster can run on this machine.

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from kcheck.cli import build_parser
from kcheck.core.render import NPD_MAX

MANIFESTS = files("kcheck.fleet").joinpath("kubernetes")
NAMESPACE = "kube-system"
NODE = "worker-1"  # what the downward API puts in NODE_NAME on a node of that name
# The DaemonSet in each file, and its container that runs kcheck.
PROBE_CONTAINERS = {
    "daemonset.yaml": "kcheck",
    "prometheus-textfile.yaml": "kcheck",
    "npd-kcheck.yaml": "node-problem-detector",
}
LOOP = ["/bin/sh", "-c", 'while true; do "$@"; sleep "$KCHECK_INTERVAL_SECONDS" || exit; done', "kcheck-loop"]
TEXTFILE = "/var/lib/node_exporter/textfile_collector/kcheck.prom"
NPD_CONFIG = "kcheck-monitor.json"


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFESTS.joinpath(name).read_text()) if doc is not None]


def only(name: str, kind: str) -> dict:
    (found,) = [doc for doc in documents(name) if doc["kind"] == kind]
    return found


def pod_spec(name: str) -> dict:
    return only(name, "DaemonSet")["spec"]["template"]["spec"]


def probe_container(name: str) -> dict:
    (container,) = [c for c in pod_spec(name)["containers"] if c["name"] == PROBE_CONTAINERS[name]]
    return container


def host_mounts(name: str) -> dict[str, tuple[str, bool]]:
    """The probe container's hostPath mounts: {mount path: (host path, read-only)}."""
    volumes = {v["name"]: v for v in pod_spec(name)["volumes"]}
    return {
        m["mountPath"]: (volumes[m["name"]]["hostPath"]["path"], m.get("readOnly", False))
        for m in probe_container(name)["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


def npd_config() -> dict:
    return json.loads(only("npd-kcheck.yaml", "ConfigMap")["data"][NPD_CONFIG])


def go_seconds(duration: str) -> float:
    """A Go time.ParseDuration string (what NPD reads) in seconds; ValueError if it is not one."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"{duration!r} is not a Go duration")
    return sum(float(number) * units[unit] for number, unit in parts)


def kcheck_argv(name: str) -> list[str]:
    """The words after `kcheck` that the manifest runs, with Kubernetes' $(NODE_NAME) expanded
    as on a node named NODE."""
    if name == "npd-kcheck.yaml":
        (rule,) = npd_config()["rules"]
        return rule["args"]
    args = probe_container(name)["args"]
    assert args[0] == "kcheck"
    return [NODE if word == "$(NODE_NAME)" else word for word in args[1:]]


def test_the_three_manifests_are_installed_package_data():
    assert sorted(entry.name for entry in MANIFESTS.iterdir()) == [
        "daemonset.yaml",
        "npd-kcheck.yaml",
        "prometheus-textfile.yaml",
    ]


@pytest.mark.parametrize("name", PROBE_CONTAINERS)
def test_namespaced_objects_are_in_kube_system(name):
    namespaced = [doc for doc in documents(name) if doc["kind"] != "ClusterRoleBinding"]
    assert [doc["metadata"]["namespace"] for doc in namespaced] == [NAMESPACE] * len(namespaced)


@pytest.mark.parametrize("name", PROBE_CONTAINERS)
def test_daemonset_selects_its_own_pods(name):
    """A selector that does not match the template's labels is rejected by the API server."""
    daemonset = only(name, "DaemonSet")
    assert daemonset["apiVersion"] == "apps/v1"
    selector = daemonset["spec"]["selector"]["matchLabels"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert selector == {"app.kubernetes.io/name": daemonset["metadata"]["name"]}
    assert selector.items() <= labels.items()


@pytest.mark.parametrize("name", PROBE_CONTAINERS)
def test_probe_is_privileged_in_the_hosts_pid_namespace(name):
    """The probe mounts an overlay and maps AIO rings as root, and reads /proc of the host's
    PID namespace."""
    assert pod_spec(name)["hostPID"] is True
    assert probe_container(name)["securityContext"] == {"privileged": True}


@pytest.mark.parametrize("name", PROBE_CONTAINERS)
def test_host_kernel_files_are_mounted_read_only_where_the_probe_looks(name):
    """The running kernel's config and modules: /boot/config-R, /lib/modules/R. No host /proc:
    with hostPID the container's own /proc is the host's PID namespace's, which the probe reads."""
    mounts = host_mounts(name)
    assert {path: mounts[path] for path in ("/lib/modules", "/boot")} == {
        "/lib/modules": ("/lib/modules", True),
        "/boot": ("/boot", True),
    }
    host_paths = [v["hostPath"]["path"] for v in pod_spec(name)["volumes"] if "hostPath" in v]
    assert [path for path in [*mounts, *host_paths] if "proc" in Path(path).parts] == []


@pytest.mark.parametrize("name", PROBE_CONTAINERS)
def test_every_taint_is_tolerated(name):
    assert pod_spec(name)["tolerations"] == [{"operator": "Exists"}]


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("daemonset.yaml", ["kcheck", "probe", "--format", "json", "--name", "$(NODE_NAME)"]),
        ("prometheus-textfile.yaml", ["kcheck", "probe", "--format", "prometheus", "--output", TEXTFILE]),
    ],
)
def test_loop_runs_kcheck_probe_as_its_arguments(name, argv):
    """A constant shell loop runs "$@": kcheck's argv is never part of the shell code."""
    container = probe_container(name)
    assert container["command"] == LOOP
    assert container["args"] == argv
    interval = {e["name"]: e.get("value") for e in container["env"]}["KCHECK_INTERVAL_SECONDS"]
    assert int(interval) == 300


@pytest.mark.parametrize(
    ("name", "fmt", "label", "output"),
    [
        ("daemonset.yaml", "json", NODE, None),
        ("prometheus-textfile.yaml", "prometheus", None, Path(TEXTFILE)),
        ("npd-kcheck.yaml", "npd", None, None),
    ],
)
def test_kcheck_accepts_the_argv(name, fmt, label, output):
    """An option kcheck does not have would exit 3 on every node, every interval."""
    args = build_parser("probe").parse_args(kcheck_argv(name))
    assert (args.command, args.format, args.name, args.output) == ("probe", fmt, label, output)


@pytest.mark.parametrize("name", ["daemonset.yaml", "npd-kcheck.yaml"])
def test_node_name_comes_from_the_downward_api(name):
    (node_name,) = [e for e in probe_container(name)["env"] if e["name"] == "NODE_NAME"]
    assert node_name["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


@pytest.mark.parametrize("name", ["daemonset.yaml", "prometheus-textfile.yaml"])
def test_plain_probes_need_no_api_access(name):
    assert pod_spec(name)["automountServiceAccountToken"] is False


def test_textfile_lands_in_the_hosts_collector_directory():
    """node_exporter reads *.prom from its host directory; kcheck's atomic write needs that
    directory writable (its temporary file sits beside the report)."""
    directory = str(Path(TEXTFILE).parent)
    assert host_mounts("prometheus-textfile.yaml")[directory] == (directory, False)


def test_npd_config_is_a_custom_plugin_monitor():
    config = npd_config()
    assert config["plugin"] == "custom"
    assert config["source"] == "kcheck-custom-plugin-monitor"
    assert config["metricsReporting"] is True
    assert config["pluginConfig"]["concurrency"] == 1


def test_npd_rule_times_out_before_the_next_run():
    """NPD refuses a rule timeout above the global one; a timeout at or past the interval would
    let runs pile up."""
    plugin = npd_config()["pluginConfig"]
    (rule,) = npd_config()["rules"]
    interval, timeout, rule_timeout = (
        go_seconds(plugin["invoke_interval"]),
        go_seconds(plugin["timeout"]),
        go_seconds(rule["timeout"]),
    )
    assert (interval, timeout, rule_timeout) == (300, 60, 60)
    assert rule_timeout <= timeout < interval


def test_go_seconds_refuses_what_npd_would():
    assert go_seconds("1m30s") == 90
    for bad in ("300", "5 m", "60sec", ""):
        with pytest.raises(ValueError):
            go_seconds(bad)


def test_npd_keeps_kcheck_line_whole():
    """kcheck's npd line is at most NPD_MAX characters; NPD cuts its output in bytes, and a
    character is up to 4 bytes of UTF-8."""
    assert npd_config()["pluginConfig"]["max_output_length"] >= 4 * NPD_MAX


def test_npd_sets_condition_criu_not_ready_from_kcheck_exit_code():
    """A permanent rule: exit 1 sets CRIUNotReady=True (NPD's True is the problem, so the
    condition is named after it); exit 0 puts back the default, False, KcheckProbe."""
    config = npd_config()
    assert [(c["type"], c["reason"]) for c in config["conditions"]] == [("CRIUNotReady", "KcheckProbe")]
    (rule,) = config["rules"]
    assert {key: rule[key] for key in ("type", "condition", "reason", "args")} == {
        "type": "permanent",
        "condition": "CRIUNotReady",
        "reason": "KernelNotReadyForCRIU",
        "args": ["probe", "--format", "npd"],
    }


def test_npd_rule_runs_the_kcheck_its_image_has():
    """The init container fails the pod when the image has no working kcheck at the rule's path."""
    (rule,) = npd_config()["rules"]
    spec = pod_spec("npd-kcheck.yaml")
    (init,) = spec["initContainers"]
    assert rule["path"] == "/opt/kcheck/bin/kcheck"
    assert init["command"] == [rule["path"], "--version"]
    assert init["image"] == probe_container("npd-kcheck.yaml")["image"]


def test_npd_reads_the_configmap_it_mounts():
    configmap = only("npd-kcheck.yaml", "ConfigMap")
    container = probe_container("npd-kcheck.yaml")
    (volume,) = [v for v in pod_spec("npd-kcheck.yaml")["volumes"] if "configMap" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": NPD_CONFIG, "path": NPD_CONFIG}]
    assert f"--config.custom-plugin-monitor={mount['mountPath']}/{NPD_CONFIG}" in container["command"]
    assert container["command"][0] == "/node-problem-detector"


def test_npd_service_account_may_set_node_conditions():
    account = only("npd-kcheck.yaml", "ServiceAccount")["metadata"]
    binding = only("npd-kcheck.yaml", "ClusterRoleBinding")
    assert pod_spec("npd-kcheck.yaml")["serviceAccountName"] == account["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:node-problem-detector",
    }
