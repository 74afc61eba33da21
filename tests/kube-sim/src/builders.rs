//! Declarative templates for the objects a scenario creates: pods, PVCs and nodes. They are serde
//! structs (so scenarios can be written in JSON or YAML) with builder methods (so tests read well).
//! [`crate::Cluster`] turns them into API objects with the scenario clock's timestamps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Annotation naming the OpenMeter subject of a pod or PVC.
pub const SUBJECT_ANNOTATION: &str = "openmeter.io/subject";
/// Prefix of annotations copied into event data.
pub const DATA_ANNOTATION_PREFIX: &str = "data.openmeter.io/";
/// Node label carrying the GPU model.
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// Whole-GPU extended resource.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplate {
    /// Container name.
    pub name: String,
    /// Image (default `registry.example/<name>:1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `resources.requests`, quantities as the API writes them (`500m`, `1Gi`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// `resources.limits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
    /// For init containers: `restartPolicy: Always`, i.e. a native sidecar.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sidecar: bool,
}

impl ContainerTemplate {
    /// A container without resources.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets a request.
    pub fn request(mut self, resource: &str, quantity: &str) -> Self {
        self.requests.insert(resource.into(), quantity.into());
        self
    }

    /// Sets a limit.
    pub fn limit(mut self, resource: &str, quantity: &str) -> Self {
        self.limits.insert(resource.into(), quantity.into());
        self
    }

    /// CPU request and limit (`None`: no limit).
    pub fn cpu(self, request: &str, limit: Option<&str>) -> Self {
        let c = self.request("cpu", request);
        match limit {
            Some(l) => c.limit("cpu", l),
            None => c,
        }
    }

    /// Memory request and limit (`None`: no limit).
    pub fn memory(self, request: &str, limit: Option<&str>) -> Self {
        let c = self.request("memory", request);
        match limit {
            Some(l) => c.limit("memory", l),
            None => c,
        }
    }

    /// Whole GPUs (`nvidia.com/gpu`); extended resources have request == limit.
    pub fn gpus(self, count: u32) -> Self {
        let n = count.to_string();
        self.request(GPU_RESOURCE, &n).limit(GPU_RESOURCE, &n)
    }

    /// MIG slices (`nvidia.com/mig-<profile>`, e.g. profile `1g.5gb`).
    pub fn mig(self, profile: &str, count: u32) -> Self {
        let resource = format!("nvidia.com/mig-{profile}");
        let n = count.to_string();
        self.request(&resource, &n).limit(&resource, &n)
    }

    /// Sets the image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    fn to_json(&self, init: bool) -> Value {
        let mut resources = Map::new();
        if !self.requests.is_empty() {
            resources.insert("requests".into(), json!(self.requests));
        }
        if !self.limits.is_empty() {
            resources.insert("limits".into(), json!(self.limits));
        }
        let image = self
            .image
            .clone()
            .unwrap_or_else(|| format!("registry.example/{}:1", self.name));
        let mut c = json!({
            "name": self.name,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "resources": resources,
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        });
        if init && self.sidecar {
            c["restartPolicy"] = json!("Always");
        }
        c
    }
}

/// A pod to create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// App containers.
    #[serde(default)]
    pub containers: Vec<ContainerTemplate>,
    /// Init containers, in order; `sidecar: true` ones keep running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerTemplate>,
    /// `spec.restartPolicy` (default `Always`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Pod-level `spec.resources.requests`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_requests: BTreeMap<String, String>,
    /// `spec.overhead`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overhead: BTreeMap<String, String>,
    /// PVCs mounted as volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
}

impl PodTemplate {
    /// A pod without containers yet.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    /// Sets `openmeter.io/subject`.
    pub fn subject(self, subject: &str) -> Self {
        self.annotation(SUBJECT_ANNOTATION, subject)
    }

    /// Adds `data.openmeter.io/<key>`.
    pub fn data(self, key: &str, value: &str) -> Self {
        self.annotation(&format!("{DATA_ANNOTATION_PREFIX}{key}"), value)
    }

    /// Adds an app container.
    pub fn container(mut self, c: ContainerTemplate) -> Self {
        self.containers.push(c);
        self
    }

    /// Adds a regular init container (runs to completion before the app containers).
    pub fn init_container(mut self, c: ContainerTemplate) -> Self {
        self.init_containers.push(ContainerTemplate {
            sidecar: false,
            ..c
        });
        self
    }

    /// Adds a native sidecar (init container with `restartPolicy: Always`).
    pub fn sidecar(mut self, c: ContainerTemplate) -> Self {
        self.init_containers
            .push(ContainerTemplate { sidecar: true, ..c });
        self
    }

    /// Sets `spec.restartPolicy` (`Never` or `OnFailure` for jobs).
    pub fn restart_policy(mut self, policy: &str) -> Self {
        self.restart_policy = Some(policy.into());
        self
    }

    /// Sets a pod-level request (`spec.resources.requests`).
    pub fn pod_request(mut self, resource: &str, quantity: &str) -> Self {
        self.pod_requests.insert(resource.into(), quantity.into());
        self
    }

    /// Sets `spec.overhead`.
    pub fn overhead(mut self, resource: &str, quantity: &str) -> Self {
        self.overhead.insert(resource.into(), quantity.into());
        self
    }

    /// Mounts a PVC.
    pub fn claim(mut self, pvc: &str) -> Self {
        self.claims.push(pvc.into());
        self
    }

    /// The pod object as just created (phase Pending, unscheduled).
    pub(crate) fn to_object(&self, uid: &str, now: &str) -> Value {
        let mut spec = json!({
            "containers": self.containers.iter().map(|c| c.to_json(false)).collect::<Vec<_>>(),
            "restartPolicy": self.restart_policy.as_deref().unwrap_or("Always"),
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
        });
        if !self.init_containers.is_empty() {
            spec["initContainers"] = self
                .init_containers
                .iter()
                .map(|c| c.to_json(true))
                .collect();
        }
        if !self.pod_requests.is_empty() {
            spec["resources"] = json!({ "requests": self.pod_requests });
        }
        if !self.overhead.is_empty() {
            spec["overhead"] = json!(self.overhead);
        }
        if !self.claims.is_empty() {
            spec["volumes"] = self
                .claims
                .iter()
                .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
                .collect();
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata(&self.namespace, &self.name, uid, now, &self.labels, &self.annotations),
            "spec": spec,
            "status": { "phase": "Pending", "qosClass": self.qos_class() },
        })
    }

    fn qos_class(&self) -> &'static str {
        let all: Vec<&ContainerTemplate> = self
            .containers
            .iter()
            .chain(self.init_containers.iter())
            .collect();
        if all
            .iter()
            .all(|c| c.requests.is_empty() && c.limits.is_empty())
        {
            return "BestEffort";
        }
        let guaranteed = all.iter().all(|c| {
            ["cpu", "memory"].iter().all(|r| match c.limits.get(*r) {
                Some(l) => c.requests.get(*r).is_none_or(|q| q == l),
                None => false,
            })
        });
        if guaranteed {
            "Guaranteed"
        } else {
            "Burstable"
        }
    }
}

fn metadata(
    namespace: &str,
    name: &str,
    uid: &str,
    now: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut m = json!({ "name": name, "uid": uid, "creationTimestamp": now });
    if !namespace.is_empty() {
        m["namespace"] = json!(namespace);
    }
    if !labels.is_empty() {
        m["labels"] = json!(labels);
    }
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    m
}

/// A PVC to create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcTemplate {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.storageClassName`.
    pub storage_class: String,
    /// `spec.resources.requests.storage`, e.g. `10Gi`.
    pub storage: String,
    /// Annotations (e.g. `openmeter.io/subject`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl PvcTemplate {
    /// A PVC requesting `storage` of `storage_class`.
    pub fn new(namespace: &str, name: &str, storage_class: &str, storage: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            storage_class: storage_class.into(),
            storage: storage.into(),
            ..Self::default()
        }
    }

    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    /// Sets `openmeter.io/subject`.
    pub fn subject(self, subject: &str) -> Self {
        self.annotation(SUBJECT_ANNOTATION, subject)
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub(crate) fn to_object(&self, uid: &str, now: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(&self.namespace, &self.name, uid, now, &self.labels, &self.annotations),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": self.storage } },
                "storageClassName": self.storage_class,
                "volumeMode": "Filesystem",
            },
            "status": { "phase": "Pending" },
        })
    }
}

/// A node to create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Name.
    pub name: String,
    /// Labels (`nvidia.com/gpu.product`, `node.kubernetes.io/instance-type`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `status.capacity` (and allocatable); default `cpu: 8`, `memory: 32Gi`, `pods: 110`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
}

impl NodeTemplate {
    /// A node with the default capacity.
    pub fn new(name: &str) -> Self {
        let capacity = [("cpu", "8"), ("memory", "32Gi"), ("pods", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            capacity,
        }
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Sets a capacity entry.
    pub fn capacity(mut self, resource: &str, quantity: &str) -> Self {
        self.capacity.insert(resource.into(), quantity.into());
        self
    }

    /// GPUs of a model: `nvidia.com/gpu` capacity plus the GPU feature-discovery labels.
    pub fn gpus(self, product: &str, count: u32) -> Self {
        self.label(GPU_PRODUCT_LABEL, product)
            .label("nvidia.com/gpu.count", &count.to_string())
            .capacity(GPU_RESOURCE, &count.to_string())
    }

    pub(crate) fn to_object(&self, uid: &str, now: &str) -> Value {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), "amd64".into());
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": metadata("", &self.name, uid, now, &labels, &BTreeMap::new()),
            "spec": {},
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0", "containerRuntimeVersion": "containerd://2.0.0",
                    "operatingSystem": "linux", "architecture": "amd64",
                    "osImage": "kube-sim", "kernelVersion": "6.1.0",
                    "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
                },
            },
        })
    }
}
