//! The scenario driver: what the scheduler, kubelet and PV controller would do, as single steps on
//! [`Cluster`], stamped with the scenario clock.
//!
//! Pod life cycle (each arrow one write, i.e. one watch event):
//!
//! ```text
//! create_pod ─► Pending ─schedule_pod─► Pending+nodeName ─start_pod─► Running ─finish_pod─► Succeeded/Failed
//!                  │ (PodScheduled=True,                 │ (startedAt)          (finishedAt, exitCode)
//!                  │  lastTransitionTime)                └─finish_pod(Failed)─► Failed, no container ran
//!   delete_pod from any state ─► DELETED (deletionTimestamp = clock)
//! ```
//!
//! The allocation a collector must bill for a pod is therefore exactly
//! `[PodScheduled.lastTransitionTime, finishedAt)` or `[.., deletionTimestamp)` when deleted first.
//! PVCs: `create_pvc` (Pending) ─`bind_pvc`─► Bound (`spec.volumeName`, a PV with the storage
//! class and `status.lastPhaseTransitionTime`) ─`delete_pvc`─► DELETED (its PV Released, deleted).

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::builders::{NodeTemplate, PodTemplate, PvcTemplate};
use crate::cluster::{Cluster, ClusterError, ClusterState};
use crate::resource::ResourceKind;
use crate::store::{ObjectKey, StoreError};

/// How a pod ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum PodOutcome {
    /// Every container exits 0.
    Succeeded,
    /// The app containers exit with `exit_code`.
    Failed {
        /// Exit code of the app containers.
        exit_code: i32,
    },
}

impl PodOutcome {
    /// The outcome for an exit code (0 = Succeeded).
    pub fn from_exit_code(exit_code: i32) -> Self {
        if exit_code == 0 {
            PodOutcome::Succeeded
        } else {
            PodOutcome::Failed { exit_code }
        }
    }
}

/// RFC 3339, whole seconds, UTC (`2026-01-01T00:00:00Z`), as the API writes timestamps.
pub fn rfc3339(seconds: i64) -> String {
    Timestamp::from_second(seconds)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

pub(crate) fn new_uid(state: &mut ClusterState, kind: ResourceKind, key: &ObjectKey) -> String {
    state.uid_counter += 1;
    let seed = format!("{kind}/{key}/{}", state.uid_counter);
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()).to_string()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn condition(ty: &str, status: &str, now: &str) -> Value {
    json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now})
}

fn set_condition(pod: &mut Value, ty: &str, status: &str, now: &str, reason: Option<&str>) {
    let mut c = condition(ty, status, now);
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    let Some(st) = pod.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = conds.as_array_mut() {
        match list.iter_mut().find(|x| x["type"] == ty) {
            Some(existing) if existing["status"] == status => {}
            Some(existing) => *existing = c,
            None => list.push(c),
        }
    }
}

fn container_id(pod_uid: &str, name: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{pod_uid}/{name}").as_bytes(),
    );
    format!("containerd://{}", id.simple())
}

fn names(pod: &Value, field: &str) -> Vec<(String, bool)> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or_default().to_owned();
                    (name, c["restartPolicy"] == "Always")
                })
                .collect()
        })
        .unwrap_or_default()
}

fn status_of(pod_uid: &str, name: &str, image: &str, ready: bool, state: Value) -> Value {
    json!({
        "name": name, "image": image, "imageID": format!("{image}@sha256:0"),
        "containerID": container_id(pod_uid, name),
        "ready": ready, "started": ready, "restartCount": 0, "state": state,
    })
}

fn image_of(pod: &Value, field: &str, name: &str) -> String {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["image"].as_str())
        .unwrap_or("registry.example/unknown:1")
        .to_owned()
}

/// The scheduler binds a pending pod to `node`.
fn schedule(pod: &mut Value, node: &str, now: &str) -> Result<(), String> {
    if str_at(pod, "/status/phase") != Some("Pending") || str_at(pod, "/spec/nodeName").is_some() {
        return Err("the pod is not pending and unscheduled".into());
    }
    pod["spec"]["nodeName"] = json!(node);
    set_condition(pod, "PodScheduled", "True", now, None);
    Ok(())
}

/// The kubelet starts a scheduled pod's containers.
fn start(pod: &mut Value, now: &str) -> Result<(), String> {
    if str_at(pod, "/status/phase") != Some("Pending") || str_at(pod, "/spec/nodeName").is_none() {
        return Err("the pod is not scheduled and pending".into());
    }
    let uid = str_at(pod, "/metadata/uid").unwrap_or_default().to_owned();
    let running = json!({"running": {"startedAt": now}});
    let init: Vec<Value> = names(pod, "initContainers")
        .into_iter()
        .map(|(n, sidecar)| {
            let image = image_of(pod, "initContainers", &n);
            if sidecar {
                status_of(&uid, &n, &image, true, running.clone())
            } else {
                let done = json!({"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                    "containerID": container_id(&uid, &n),
                }});
                status_of(&uid, &n, &image, false, done)
            }
        })
        .collect();
    let apps: Vec<Value> = names(pod, "containers")
        .into_iter()
        .map(|(n, _)| {
            let image = image_of(pod, "containers", &n);
            status_of(&uid, &n, &image, true, running.clone())
        })
        .collect();
    let st = &mut pod["status"];
    st["phase"] = json!("Running");
    st["startTime"] = json!(now);
    st["hostIP"] = json!("10.0.0.1");
    st["podIP"] = json!("10.244.0.10");
    st["containerStatuses"] = json!(apps);
    if !init.is_empty() {
        st["initContainerStatuses"] = json!(init);
    }
    for ty in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        set_condition(pod, ty, "True", now, None);
    }
    Ok(())
}

impl Cluster {
    fn now_string(state: &ClusterState) -> String {
        rfc3339(state.clock)
    }

    /// Reads one object under the lock, applies `step`, and stores the result (one event).
    fn step(
        &self,
        action: &'static str,
        kind: ResourceKind,
        key: ObjectKey,
        step: impl FnOnce(&mut Value, &str) -> Result<(), String>,
    ) -> Result<Value, ClusterError> {
        self.write(|s| {
            let current = s
                .store
                .get(kind, &key)
                .ok_or_else(|| StoreError::NotFound {
                    kind,
                    key: key.clone(),
                })?;
            let mut next = (*current).clone();
            let now = Self::now_string(s);
            step(&mut next, &now).map_err(|reason| ClusterError::Transition {
                action,
                kind,
                key: key.clone(),
                reason,
            })?;
            Ok((*s.store.update(kind, next)?).clone())
        })
    }

    fn create_from(
        &self,
        kind: ResourceKind,
        key: ObjectKey,
        build: impl FnOnce(&str, &str) -> Value,
    ) -> Result<Value, ClusterError> {
        self.write(|s| {
            let uid = new_uid(s, kind, &key);
            let now = Self::now_string(s);
            Ok((*s.store.create(kind, build(&uid, &now))?).clone())
        })
    }

    /// Changes one object in place (one MODIFIED event), e.g. to relabel a pod or to record an
    /// in-place resize in `status.containerStatuses[].allocatedResources`. The closure gets the
    /// object and the clock as RFC 3339.
    pub fn modify(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value, &str),
    ) -> Result<Value, ClusterError> {
        self.step(
            "modify",
            kind,
            ObjectKey::new(namespace, name),
            |obj, now| {
                change(obj, now);
                Ok(())
            },
        )
    }

    /// Creates a node (Ready).
    pub fn create_node(&self, node: &NodeTemplate) -> Result<Value, ClusterError> {
        self.create_from(
            ResourceKind::Node,
            ObjectKey::new("", &node.name),
            |uid, now| node.to_object(uid, now),
        )
    }

    /// Deletes a node.
    pub fn delete_node(&self, name: &str) -> Result<Value, ClusterError> {
        self.delete(ResourceKind::Node, "", name)
    }

    /// Creates a pod: phase Pending, not scheduled.
    pub fn create_pod(&self, pod: &PodTemplate) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(&pod.namespace, &pod.name);
        self.create_from(ResourceKind::Pod, key, |uid, now| pod.to_object(uid, now))
    }

    /// Creates a pod that is already scheduled on `node` and running, as one ADDED event (a pod
    /// that existed before anyone watched; handy for large benchmarks). Scheduled and started at
    /// the clock.
    pub fn create_running_pod(&self, pod: &PodTemplate, node: &str) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(&pod.namespace, &pod.name);
        let kind = ResourceKind::Pod;
        self.write(|s| {
            let uid = new_uid(s, kind, &key);
            let now = Self::now_string(s);
            let mut obj = pod.to_object(&uid, &now);
            schedule(&mut obj, node, &now)
                .and_then(|()| start(&mut obj, &now))
                .map_err(|reason| ClusterError::Transition {
                    action: "create running",
                    kind,
                    key,
                    reason,
                })?;
            Ok((*s.store.create(kind, obj)?).clone())
        })
    }

    /// Binds a pending pod to `node`: `spec.nodeName` and `PodScheduled=True` at the clock.
    pub fn schedule_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(namespace, name);
        self.step("schedule", ResourceKind::Pod, key, |pod, now| {
            schedule(pod, node, now)
        })
    }

    /// Starts a scheduled pod: regular init containers ran (terminated 0 at the clock), sidecars
    /// and app containers running since the clock, phase Running.
    pub fn start_pod(&self, namespace: &str, name: &str) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(namespace, name);
        self.step("start", ResourceKind::Pod, key, start)
    }

    /// Ends a pod at the clock. From Running, every running container terminates (`finishedAt`
    /// = clock; app containers with the outcome's exit code, sidecars with 0). From a scheduled
    /// Pending pod only `Failed` applies, and no container has a `finishedAt` (it never ran).
    pub fn finish_pod(
        &self,
        namespace: &str,
        name: &str,
        outcome: PodOutcome,
    ) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(namespace, name);
        self.step("finish", ResourceKind::Pod, key, |pod, now| {
            let phase = str_at(pod, "/status/phase").unwrap_or_default().to_owned();
            let scheduled = str_at(pod, "/spec/nodeName").is_some();
            let (phase_name, app_code) = match outcome {
                PodOutcome::Succeeded => ("Succeeded", 0),
                PodOutcome::Failed { exit_code } => ("Failed", exit_code),
            };
            match (phase.as_str(), outcome) {
                ("Running", _) => {}
                ("Pending", PodOutcome::Failed { .. }) if scheduled => {
                    pod["status"]["phase"] = json!("Failed");
                    pod["status"]["reason"] = json!("StartError");
                    set_condition(pod, "Ready", "False", now, Some("PodFailed"));
                    return Ok(());
                }
                _ => return Err(format!("a {phase} pod cannot become {phase_name}")),
            }
            let terminate = |status: &mut Value, code: i32| {
                if let Some(started) = status.pointer("/state/running/startedAt").cloned() {
                    let reason = if code == 0 { "Completed" } else { "Error" };
                    status["state"] = json!({"terminated": {
                        "exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now,
                        "containerID": status["containerID"].clone(),
                    }});
                    status["ready"] = json!(false);
                    status["started"] = json!(false);
                }
            };
            if let Some(list) = pod
                .pointer_mut("/status/containerStatuses")
                .and_then(Value::as_array_mut)
            {
                list.iter_mut().for_each(|c| terminate(c, app_code));
            }
            if let Some(list) = pod
                .pointer_mut("/status/initContainerStatuses")
                .and_then(Value::as_array_mut)
            {
                list.iter_mut().for_each(|c| terminate(c, 0));
            }
            pod["status"]["phase"] = json!(phase_name);
            set_condition(pod, "Ready", "False", now, Some("PodCompleted"));
            set_condition(pod, "ContainersReady", "False", now, Some("PodCompleted"));
            set_condition(pod, "PodReadyToStartContainers", "False", now, None);
            Ok(())
        })
    }

    /// Deletes a pod in whatever state it is (a force delete): one DELETED event whose object
    /// carries `deletionTimestamp` = clock and `deletionGracePeriodSeconds: 0`.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<Value, ClusterError> {
        self.delete_stamped(ResourceKind::Pod, ObjectKey::new(namespace, name))
    }

    fn delete_stamped(&self, kind: ResourceKind, key: ObjectKey) -> Result<Value, ClusterError> {
        self.write(|s| {
            let now = Self::now_string(s);
            let last = s.store.delete_with(kind, &key, |obj| {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("deletionTimestamp".into(), json!(now));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
            })?;
            Ok((*last).clone())
        })
    }

    /// Creates a PVC (phase Pending).
    pub fn create_pvc(&self, pvc: &PvcTemplate) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(&pvc.namespace, &pvc.name);
        self.create_from(ResourceKind::PersistentVolumeClaim, key, |uid, now| {
            pvc.to_object(uid, now)
        })
    }

    /// Provisions a PV for a pending PVC and binds them at the clock (two events: PV ADDED, PVC
    /// MODIFIED). Returns `(pvc, pv)`.
    pub fn bind_pvc(&self, namespace: &str, name: &str) -> Result<(Value, Value), ClusterError> {
        let key = ObjectKey::new(namespace, name);
        let kind = ResourceKind::PersistentVolumeClaim;
        self.write(|s| {
            let pvc = s
                .store
                .get(kind, &key)
                .ok_or_else(|| StoreError::NotFound { kind, key: key.clone() })?;
            if str_at(&pvc, "/status/phase") != Some("Pending") {
                return Err(ClusterError::Transition {
                    action: "bind",
                    kind,
                    key,
                    reason: "the PVC is not Pending".into(),
                });
            }
            let now = Self::now_string(s);
            let pvc_uid = str_at(&pvc, "/metadata/uid").unwrap_or_default().to_owned();
            let pv_name = format!("pvc-{pvc_uid}");
            let storage = pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("0"));
            let class = pvc.pointer("/spec/storageClassName").cloned().unwrap_or(Value::Null);
            let pv_key = ObjectKey::new("", &pv_name);
            let pv_uid = new_uid(s, ResourceKind::PersistentVolume, &pv_key);
            let pv = json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name, "uid": pv_uid, "creationTimestamp": now,
                    "annotations": {"pv.kubernetes.io/provisioned-by": "kube-sim.local/provisioner"},
                },
                "spec": {
                    "capacity": {"storage": storage}, "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete", "storageClassName": class,
                    "volumeMode": "Filesystem",
                    "claimRef": {"kind": "PersistentVolumeClaim", "namespace": namespace, "name": name,
                                 "uid": pvc_uid, "apiVersion": "v1"},
                    "hostPath": {"path": format!("/var/local-path-provisioner/{pv_name}")},
                },
                "status": {"phase": "Bound", "lastPhaseTransitionTime": now},
            });
            let pv = s.store.create(ResourceKind::PersistentVolume, pv)?;
            let mut bound = (*pvc).clone();
            bound["spec"]["volumeName"] = json!(pv_name);
            bound["status"] = json!({
                "phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": storage},
            });
            if let Some(meta) = bound.get_mut("metadata").and_then(Value::as_object_mut) {
                let ann = meta.entry("annotations").or_insert_with(|| json!({}));
                ann["pv.kubernetes.io/bind-completed"] = json!("yes");
                ann["pv.kubernetes.io/bound-by-controller"] = json!("yes");
            }
            let bound = s.store.update(kind, bound)?;
            Ok(((*bound).clone(), (*pv).clone()))
        })
    }

    /// Deletes a PVC (DELETED with `deletionTimestamp` = clock); a bound PV goes Released and is
    /// then deleted (reclaim policy Delete).
    pub fn delete_pvc(&self, namespace: &str, name: &str) -> Result<Value, ClusterError> {
        let last = self.delete_stamped(
            ResourceKind::PersistentVolumeClaim,
            ObjectKey::new(namespace, name),
        )?;
        if let Some(pv_name) = str_at(&last, "/spec/volumeName") {
            let pv_key = ObjectKey::new("", pv_name);
            if self
                .get(ResourceKind::PersistentVolume, "", pv_name)
                .is_some()
            {
                self.step(
                    "release",
                    ResourceKind::PersistentVolume,
                    pv_key.clone(),
                    |pv, now| {
                        pv["status"] = json!({"phase": "Released", "lastPhaseTransitionTime": now});
                        Ok(())
                    },
                )?;
                self.delete_stamped(ResourceKind::PersistentVolume, pv_key)?;
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::ContainerTemplate;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn pod_life_cycle_uses_the_scenario_clock() {
        let c = Cluster::new();
        c.set_time(ts("2026-03-01T10:00:00Z")).expect("clock");
        c.create_node(&NodeTemplate::new("n1").gpus("NVIDIA-A100-SXM4-40GB", 8))
            .expect("node");
        let tpl = PodTemplate::new("ns", "job")
            .container(
                ContainerTemplate::new("main")
                    .cpu("500m", Some("1"))
                    .gpus(1),
            )
            .sidecar(ContainerTemplate::new("proxy").cpu("100m", None))
            .init_container(ContainerTemplate::new("setup"))
            .restart_policy("Never");
        let created = c.create_pod(&tpl).expect("create");
        assert_eq!(created["status"]["phase"], "Pending");
        assert_eq!(
            created["spec"]["initContainers"][0]["restartPolicy"],
            "Always"
        );
        assert!(
            c.start_pod("ns", "job").is_err(),
            "cannot start before scheduling"
        );
        c.advance(2).expect("clock");
        let scheduled = c.schedule_pod("ns", "job", "n1").expect("schedule");
        assert_eq!(scheduled["spec"]["nodeName"], "n1");
        assert_eq!(
            scheduled["status"]["conditions"][0]["lastTransitionTime"],
            "2026-03-01T10:00:02Z"
        );
        c.advance(3).expect("clock");
        let running = c.start_pod("ns", "job").expect("start");
        assert_eq!(running["status"]["phase"], "Running");
        assert_eq!(
            running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-03-01T10:00:05Z"
        );
        assert_eq!(
            running["status"]["initContainerStatuses"][1]["state"]["terminated"]["exitCode"],
            0
        );
        c.advance(10).expect("clock");
        let done = c
            .finish_pod("ns", "job", PodOutcome::Failed { exit_code: 3 })
            .expect("finish");
        assert_eq!(done["status"]["phase"], "Failed");
        let term = &done["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(term["finishedAt"], "2026-03-01T10:00:15Z");
        assert_eq!(term["startedAt"], "2026-03-01T10:00:05Z");
        assert_eq!(term["exitCode"], 3);
        assert!(c.finish_pod("ns", "job", PodOutcome::Succeeded).is_err());
        c.advance(1).expect("clock");
        let gone = c.delete_pod("ns", "job").expect("delete");
        assert_eq!(
            gone["metadata"]["deletionTimestamp"],
            "2026-03-01T10:00:16Z"
        );
        assert!(c.get(ResourceKind::Pod, "ns", "job").is_none());
        assert!(
            c.set_time(ts("2026-03-01T09:00:00Z")).is_err(),
            "clock never goes back"
        );
    }

    #[test]
    fn running_pod_in_one_event() {
        let c = Cluster::new();
        let before = c.resource_version();
        let tpl =
            PodTemplate::new("ns", "svc").container(ContainerTemplate::new("a").cpu("1", None));
        let pod = c.create_running_pod(&tpl, "n1").expect("create");
        assert_eq!(c.resource_version(), before + 1, "one write");
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
        assert!(c.create_running_pod(&tpl, "n1").is_err(), "already exists");
        c.finish_pod("ns", "svc", PodOutcome::Succeeded)
            .expect("it can finish like any pod");
    }

    #[test]
    fn pvc_binds_to_a_provisioned_pv() {
        let c = Cluster::new();
        c.create_pvc(&PvcTemplate::new("ns", "data", "standard", "10Gi").subject("acme"))
            .expect("pvc");
        let (pvc, pv) = c.bind_pvc("ns", "data").expect("bind");
        assert_eq!(pvc["status"]["phase"], "Bound");
        assert_eq!(pvc["spec"]["volumeName"], pv["metadata"]["name"]);
        assert_eq!(pv["spec"]["storageClassName"], "standard");
        assert_eq!(pv["spec"]["capacity"]["storage"], "10Gi");
        assert!(c.bind_pvc("ns", "data").is_err());
        c.delete_pvc("ns", "data").expect("delete");
        assert!(c.list(ResourceKind::PersistentVolume).is_empty());
        assert!(c.list(ResourceKind::PersistentVolumeClaim).is_empty());
    }

    #[test]
    fn pod_failing_before_start_has_no_finished_at() {
        let c = Cluster::new();
        c.create_pod(&PodTemplate::new("ns", "p").container(ContainerTemplate::new("a")))
            .expect("create");
        assert!(
            c.finish_pod("ns", "p", PodOutcome::Failed { exit_code: 1 })
                .is_err(),
            "unscheduled"
        );
        c.schedule_pod("ns", "p", "n1").expect("schedule");
        let failed = c
            .finish_pod("ns", "p", PodOutcome::Failed { exit_code: 1 })
            .expect("fail");
        assert_eq!(failed["status"]["phase"], "Failed");
        assert!(failed["status"].get("containerStatuses").is_none());
    }
}
