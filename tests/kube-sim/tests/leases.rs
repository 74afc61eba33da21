//! `coordination.k8s.io/v1` leases through the real `kube` client, as Lease-based leader election
//! (client-go's `tryAcquireOrRenew`) uses them: create, get, resourceVersion-guarded replace,
//! merge patch, delete, the API server's errors, discovery, lease-only faults and request counts.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{bounded, client, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::core::Status;
use kube::{Client, ResourceExt};
use kube_sim::{Cluster, KubeSim, LeaseFault, ResourceKind, Verb};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const NS: &str = "edgemeter";
const GROUP: &str = "coordination.k8s.io";

fn micro(s: &str) -> MicroTime {
    MicroTime(s.parse().expect("timestamp"))
}

fn lease(name: &str, holder: &str, renew: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some([("edgemeter.io/owner".to_owned(), "collector".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(micro(renew)),
            renew_time: Some(micro(renew)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref()?.holder_identity.as_deref()
}

/// The `Status` of an API error; panics on any other error.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn setup() -> (KubeSim, Client, Api<Lease>) {
    let sim = start(Cluster::new()).await;
    let client = client(&sim).await;
    let api = Api::<Lease>::namespaced(client.clone(), NS);
    (sim, client, api)
}

#[tokio::test]
async fn discovery_lists_coordination_v1_leases() {
    let (_sim, client, _) = setup().await;
    let groups = client.list_api_groups().await.expect("/apis");
    let coordination = groups
        .groups
        .iter()
        .find(|g| g.name == GROUP)
        .expect("coordination.k8s.io listed");
    assert_eq!(
        coordination.versions[0].group_version,
        "coordination.k8s.io/v1"
    );
    assert_eq!(
        coordination
            .preferred_version
            .as_ref()
            .map(|v| v.version.as_str()),
        Some("v1")
    );
    let resources = client
        .list_api_group_resources("coordination.k8s.io/v1")
        .await
        .expect("/apis/coordination.k8s.io/v1");
    assert_eq!(resources.group_version, "coordination.k8s.io/v1");
    let leases = resources
        .resources
        .iter()
        .find(|r| r.name == "leases")
        .expect("leases listed");
    assert!(leases.namespaced);
    assert_eq!(leases.kind, "Lease");
    let mut verbs = leases.verbs.clone();
    verbs.sort();
    assert_eq!(
        verbs,
        [
            "create", "delete", "get", "list", "patch", "update", "watch"
        ]
    );
    // Core resources are unchanged and leases are not under /api/v1.
    let core = client.list_core_api_resources("v1").await.expect("/api/v1");
    assert!(core.resources.iter().all(|r| r.name != "leases"));
    assert!(core.resources.iter().any(|r| r.name == "pods"));

    // kube's own discovery resolves the kind.
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let gvk = kube::api::GroupVersionKind::gvk(GROUP, "v1", "Lease");
    let (ar, caps) = discovery.resolve_gvk(&gvk).expect("Lease resolved");
    assert_eq!(ar.plural, "leases");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.supports_operation(kube::discovery::verbs::UPDATE));
}

#[tokio::test]
async fn create_get_and_create_again() {
    let (sim, _, api) = setup().await;
    sim.cluster().advance(42).expect("clock");
    let rv_before = sim.cluster().resource_version();
    let sent = lease("leader", "collector-a", "2026-01-01T00:00:42.123456Z");
    let created = api
        .create(&PostParams::default(), &sent)
        .await
        .expect("create");
    assert_eq!(
        created.resource_version(),
        Some((rv_before + 1).to_string())
    );
    assert_eq!(created.namespace().as_deref(), Some(NS));
    assert!(created.uid().is_some_and(|u| !u.is_empty()));
    assert_eq!(
        created.metadata.creation_timestamp.as_ref().map(|t| t.0),
        Some(sim.cluster().now())
    );
    assert_eq!(created.annotations()["edgemeter.io/owner"], "collector");
    assert_eq!(created.spec, sent.spec);

    // The stored JSON keeps the MicroTime strings as sent.
    let stored = sim.lease(NS, "leader").expect("stored");
    assert_eq!(stored["spec"]["renewTime"], "2026-01-01T00:00:42.123456Z");
    assert_eq!(stored["spec"]["holderIdentity"], "collector-a");
    assert_eq!(stored["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(stored["kind"], "Lease");
    assert_eq!(sim.cluster().lease(NS, "leader"), Some(stored));

    let got = api.get("leader").await.expect("get");
    assert_eq!(got, created);

    let again = api_error(
        api.create(
            &PostParams::default(),
            &lease("leader", "collector-b", "2026-01-01T00:00:43Z"),
        )
        .await,
    );
    assert_eq!(again.code, 409);
    assert_eq!(again.reason, "AlreadyExists");
    assert!(again.is_already_exists());
    assert_eq!(
        again.message,
        "leases.coordination.k8s.io \"leader\" already exists"
    );
    let details = again.details.expect("details");
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("leader", GROUP, "leases")
    );
    assert_eq!(
        holder(&api.get("leader").await.expect("get")),
        Some("collector-a")
    );
    assert_eq!(sim.cluster().resource_version(), rv_before + 1);
}

#[tokio::test]
async fn replace_is_guarded_by_the_resource_version() {
    let (sim, client, api) = setup().await;
    let created = api
        .create(
            &PostParams::default(),
            &lease("leader", "collector-a", "2026-01-01T00:00:00Z"),
        )
        .await
        .expect("create");
    // Writes of other kinds share the one resourceVersion.
    sim.cluster()
        .create_pod(&kube_sim::PodTemplate::new(NS, "p"))
        .expect("pod");
    let pod_rv = Api::<Pod>::namespaced(client, NS)
        .get("p")
        .await
        .expect("pod")
        .resource_version()
        .expect("rv");

    let mut renewed = created.clone();
    if let Some(spec) = renewed.spec.as_mut() {
        spec.renew_time = Some(micro("2026-01-01T00:00:02.000001Z"));
    }
    let after = api
        .replace("leader", &PostParams::default(), &renewed)
        .await
        .expect("replace with the current resourceVersion");
    let after_rv: u64 = after
        .resource_version()
        .and_then(|rv| rv.parse().ok())
        .expect("rv");
    assert_eq!(after_rv, pod_rv.parse::<u64>().expect("pod rv") + 1);
    assert_eq!(after.uid(), created.uid());
    assert_eq!(
        after.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
    assert_eq!(
        sim.lease(NS, "leader").expect("stored")["spec"]["renewTime"],
        "2026-01-01T00:00:02.000001Z"
    );

    // `renewed` still carries the resourceVersion from before the replace.
    let stale = api_error(
        api.replace("leader", &PostParams::default(), &renewed)
            .await,
    );
    assert_eq!(stale.code, 409);
    assert_eq!(stale.reason, "Conflict");
    assert!(stale.is_conflict());
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"leader\": the object has \
         been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(stale.details.expect("details").kind, "leases");

    // Leases allow no unconditional update.
    let mut unconditional = after.clone();
    unconditional.metadata.resource_version = None;
    let invalid = api_error(
        api.replace("leader", &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!(invalid.code, 422);
    assert_eq!(invalid.reason, "Invalid");

    // Name or namespace other than the URL's.
    let mut renamed = after.clone();
    renamed.metadata.name = Some("other".into());
    let bad = api_error(
        api.replace("leader", &PostParams::default(), &renamed)
            .await,
    );
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
    let mut moved = after.clone();
    moved.metadata.namespace = Some("elsewhere".into());
    let bad = api_error(api.replace("leader", &PostParams::default(), &moved).await);
    assert_eq!(bad.code, 400);

    // A replace that changes nothing writes nothing.
    let rv = sim.cluster().resource_version();
    let same = api
        .replace("leader", &PostParams::default(), &after)
        .await
        .expect("no-op replace");
    assert_eq!(same.resource_version(), after.resource_version());
    assert_eq!(sim.cluster().resource_version(), rv);
}

#[tokio::test]
async fn missing_leases_are_not_found_and_put_creates() {
    let (sim, _, api) = setup().await;
    let missing = api_error(api.get("nobody").await);
    assert_eq!(missing.code, 404);
    assert_eq!(missing.reason, "NotFound");
    assert!(missing.is_not_found());
    assert_eq!(
        missing.message,
        "leases.coordination.k8s.io \"nobody\" not found"
    );
    let details = missing.details.expect("details");
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("nobody", GROUP, "leases")
    );
    assert_eq!(api.get_opt("nobody").await.expect("get_opt"), None);
    let patch = api_error(
        api.patch(
            "nobody",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "x"}})),
        )
        .await,
    );
    assert_eq!(patch.code, 404);

    // Leases allow create on update: a PUT of a missing lease creates it (201).
    let made = api
        .replace(
            "put-made",
            &PostParams::default(),
            &lease("put-made", "collector-a", "2026-01-01T00:00:00Z"),
        )
        .await
        .expect("create on update");
    assert!(made.uid().is_some());
    assert_eq!(
        made.resource_version(),
        Some(sim.cluster().resource_version().to_string())
    );
}

#[tokio::test]
async fn delete_removes_the_lease() {
    let (sim, _, api) = setup().await;
    let created = api
        .create(
            &PostParams::default(),
            &lease("leader", "collector-a", "2026-01-01T00:00:00Z"),
        )
        .await
        .expect("create");
    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let refused = api_error(api.delete("leader", &stale).await);
    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));

    let rv = sim.cluster().resource_version();
    let guarded = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: created.resource_version(),
            uid: created.uid(),
        }),
        ..DeleteParams::default()
    };
    let deleted = api.delete("leader", &guarded).await.expect("delete");
    let status = deleted.right().expect("a Status");
    assert!(status.is_success());
    let details = status.details.expect("details");
    assert_eq!(details.name, "leader");
    assert_eq!(Some(details.uid), created.uid());
    assert_eq!(sim.cluster().resource_version(), rv + 1);
    assert_eq!(sim.lease(NS, "leader"), None);
    assert!(api_error(api.get("leader").await).is_not_found());
    let again = api_error(api.delete("leader", &DeleteParams::default()).await);
    assert_eq!(again.code, 404);
}

#[tokio::test]
async fn merge_patch_renews_and_releases() {
    let (sim, _, api) = setup().await;
    let created = api
        .create(
            &PostParams::default(),
            &lease("leader", "collector-a", "2026-01-01T00:00:00Z"),
        )
        .await
        .expect("create");
    let renewed = api
        .patch(
            "leader",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": created.resource_version()},
                "spec": {"renewTime": "2026-01-01T00:00:05.000000Z"}
            })),
        )
        .await
        .expect("guarded patch");
    assert_ne!(renewed.resource_version(), created.resource_version());
    let stale = api_error(
        api.patch(
            "leader",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": created.resource_version()},
                "spec": {"holderIdentity": "collector-b"}
            })),
        )
        .await,
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    // Without a resourceVersion a patch is unconditional.
    let released = api
        .patch(
            "leader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": 1}})),
        )
        .await
        .expect("release");
    assert_eq!(holder(&released), None);
    let stored = sim.lease(NS, "leader").expect("stored");
    assert_eq!(stored["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(
        stored["metadata"]["annotations"]["edgemeter.io/owner"],
        "collector"
    );
    let unsupported = api_error(
        api.patch(
            "leader",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"holderIdentity": "x"}})),
        )
        .await,
    );
    assert_eq!(unsupported.code, 415);
}

/// client-go's `tryAcquireOrRenew` with a Lease lock, against a fake clock: GET; CREATE on 404;
/// if another holder's lease has not expired, give up; otherwise UPDATE guarded by the GET's
/// resourceVersion. `Ok(false)` when someone else holds it or won a race.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    now: jiff::Timestamp,
    seen: Option<Lease>,
) -> kube::Result<bool> {
    let record = LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(15),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    };
    let current = match seen {
        Some(l) => l,
        None => match api.get_opt(name).await? {
            Some(l) => l,
            None => {
                let new = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(record),
                };
                return match api.create(&PostParams::default(), &new).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                    Err(e) => Err(e),
                };
            }
        },
    };
    let old = current.spec.clone().unwrap_or_default();
    let old_holder = old.holder_identity.clone().unwrap_or_default();
    let expires = old.renew_time.as_ref().map(|t| {
        t.0 + jiff::SignedDuration::from_secs(i64::from(old.lease_duration_seconds.unwrap_or(0)))
    });
    if !old_holder.is_empty() && old_holder != me && expires.is_some_and(|e| e > now) {
        return Ok(false);
    }
    let mut spec = record;
    if old_holder == me {
        spec.acquire_time = old.acquire_time;
        spec.lease_transitions = old.lease_transitions;
    } else {
        spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
    }
    let mut next = current;
    next.spec = Some(spec);
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

#[tokio::test]
async fn two_candidates_elect_one_leader() {
    let (sim, _, api) = setup().await;
    let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("t0");
    let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);

    assert!(
        try_acquire_or_renew(&api, "leader", "a", at(0), None)
            .await
            .expect("a acquires")
    );
    assert!(
        !try_acquire_or_renew(&api, "leader", "b", at(1), None)
            .await
            .expect("b waits")
    );
    // b read the lease, then a renewed: b's update carries a stale resourceVersion.
    let b_saw = api.get("leader").await.expect("get");
    assert!(
        try_acquire_or_renew(&api, "leader", "a", at(2), None)
            .await
            .expect("a renews")
    );
    assert!(
        !try_acquire_or_renew(&api, "leader", "b", at(30), Some(b_saw))
            .await
            .expect("b loses the race")
    );
    // a releases on shutdown (client-go: empty holder, 1 s duration), b takes over at once.
    let mut release = api.get("leader").await.expect("get");
    if let Some(spec) = release.spec.as_mut() {
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(at(3)));
    }
    api.replace("leader", &PostParams::default(), &release)
        .await
        .expect("release");
    assert!(
        try_acquire_or_renew(&api, "leader", "b", at(3), None)
            .await
            .expect("b acquires")
    );
    let stored = sim.lease(NS, "leader").expect("stored");
    assert_eq!(stored["spec"]["holderIdentity"], "b");
    assert_eq!(stored["spec"]["leaseTransitions"], 1);
    assert_eq!(stored["spec"]["renewTime"], "2026-01-01T00:00:03.000000Z");

    let counts = sim.requests();
    assert_eq!(counts.get(Verb::Create, ResourceKind::Lease), 1);
    assert_eq!(counts.get(Verb::Update, ResourceKind::Lease), 4);
    assert_eq!(counts.get(Verb::Get, ResourceKind::Lease), 6);
}

#[tokio::test]
async fn lease_faults_hit_only_lease_routes() {
    let (sim, client, api) = setup().await;
    let pods = Api::<Pod>::namespaced(client, NS);
    api.create(
        &PostParams::default(),
        &lease("leader", "collector-a", "2026-01-01T00:00:00Z"),
    )
    .await
    .expect("create");
    sim.reset_requests();

    sim.fail_leases(true);
    assert_eq!(sim.lease_fault(), LeaseFault::InternalError);
    let err = api_error(api.get("leader").await);
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    let mut renew = api.get_opt("leader").await;
    assert!(renew.is_err());
    let rv = sim.cluster().resource_version();
    let mut attempt = sim.lease(NS, "leader").expect("stored");
    attempt["spec"]["holderIdentity"] = "collector-b".into();
    let attempt: Lease = serde_json::from_value(attempt).expect("lease");
    let err = api_error(
        api.replace("leader", &PostParams::default(), &attempt)
            .await,
    );
    assert_eq!(err.code, 500);
    assert_eq!(sim.cluster().resource_version(), rv, "nothing applied");
    pods.list(&ListParams::default())
        .await
        .expect("other resources still served");

    sim.set_lease_fault(LeaseFault::Reset);
    let reset = api.get("leader").await;
    assert!(
        matches!(&reset, Err(e) if !matches!(e, kube::Error::Api(_))),
        "{reset:?}"
    );
    pods.list(&ListParams::default()).await.expect("pods");

    // A stalled request waits for the fault to change, then is served.
    sim.set_lease_fault(LeaseFault::Stall);
    let stalled = {
        let api = api.clone();
        let attempt = attempt.clone();
        tokio::spawn(async move {
            api.replace("leader", &PostParams::default(), &attempt)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stalled.is_finished());
    assert_eq!(sim.cluster().resource_version(), rv);
    sim.fail_leases(false);
    let landed = bounded("stalled replace", stalled)
        .await
        .expect("join")
        .expect("served after the stall");
    assert_eq!(holder(&landed), Some("collector-b"));
    renew = api.get_opt("leader").await;
    assert!(renew.expect("served again").is_some());

    let counts = sim.requests();
    assert_eq!(counts.get(Verb::Get, ResourceKind::Lease), 4);
    assert_eq!(counts.get(Verb::Update, ResourceKind::Lease), 2);
    assert_eq!(counts.lists(ResourceKind::Pod), 2);
}

#[tokio::test]
async fn leases_survive_stop_and_restart() {
    let (sim, _, api) = setup().await;
    let created = api
        .create(
            &PostParams::default(),
            &lease("leader", "collector-a", "2026-01-01T00:00:00Z"),
        )
        .await
        .expect("create");
    sim.stop().await;
    assert!(api.get("leader").await.is_err());
    sim.restart().await.expect("restart");
    let got = bounded("get after restart", async {
        loop {
            match api.get("leader").await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(got, created);
}

#[tokio::test]
async fn leases_list_and_watch_like_other_kinds() {
    let (sim, client, api) = setup().await;
    let mut labelled = lease("a", "x", "2026-01-01T00:00:00Z");
    labelled.metadata.labels = Some([("role".to_owned(), "leader".to_owned())].into());
    api.create(&PostParams::default(), &labelled)
        .await
        .expect("a");
    api.create(
        &PostParams::default(),
        &lease("b", "x", "2026-01-01T00:00:00Z"),
    )
    .await
    .expect("b");
    Api::<Lease>::namespaced(client.clone(), "other")
        .create(
            &PostParams::default(),
            &lease("c", "x", "2026-01-01T00:00:00Z"),
        )
        .await
        .expect("c");
    let names = |l: kube::core::ObjectList<Lease>| -> Vec<String> {
        l.items.iter().map(ResourceExt::name_any).collect()
    };
    assert_eq!(
        names(api.list(&ListParams::default()).await.expect("list")),
        ["a", "b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("role=leader"))
                .await
                .expect("list")
        ),
        ["a"]
    );
    assert_eq!(
        names(
            Api::<Lease>::all(client)
                .list(&ListParams::default())
                .await
                .expect("all")
        ),
        ["a", "b", "c"]
    );

    let from = sim.cluster().resource_version().to_string();
    let mut events = api
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .expect("watch")
        .boxed();
    // A pod write in between is not a lease event.
    sim.cluster()
        .create_pod(&kube_sim::PodTemplate::new(NS, "p"))
        .expect("pod");
    api.delete("b", &DeleteParams::default())
        .await
        .expect("delete");
    loop {
        match bounded("lease event", events.try_next()).await {
            Ok(Some(WatchEvent::Bookmark(_))) => {}
            Ok(Some(WatchEvent::Deleted(l))) => {
                assert_eq!(l.name_any(), "b");
                break;
            }
            other => panic!("expected DELETED b, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (sim, _, _) = setup().await;
    let mut stream = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let request = format!(
        "POST /apis/coordination.k8s.io/v1/namespaces/{NS}/leases HTTP/1.1\r\nHost: kube-sim\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        kube_sim::MAX_REQUEST_BODY_BYTES + 1
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send headers");
    let mut response = String::new();
    bounded("413", stream.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("RequestEntityTooLarge"), "{response}");
    assert_eq!(sim.requests().get(Verb::Create, ResourceKind::Lease), 1);
    // Core kinds stay read-only.
    let mut stream = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "POST /api/v1/namespaces/{NS}/pods HTTP/1.1\r\nHost: kube-sim\r\n\
                 Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut response = String::new();
    bounded("405", stream.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}

#[tokio::test]
async fn binary_serves_leases() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kube-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = bounded("URL line", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    let url = first.strip_prefix("KUBE_SIM_URL=").expect("URL line first");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::new(url.parse().expect("url"));
    let api = Api::<Lease>::namespaced(Client::try_from(config).expect("client"), NS);
    api.create(
        &PostParams::default(),
        &lease("leader", "collector-a", "2026-01-01T00:00:00Z"),
    )
    .await
    .expect("create");
    assert_eq!(
        holder(&api.get("leader").await.expect("get")),
        Some("collector-a")
    );

    let pid = child.id().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = bounded("exit", child.wait()).await.expect("wait");
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        rest.push(line);
    }
    for expected in [
        "requests Create leases 1 bytes ",
        "requests Get leases 1 bytes ",
    ] {
        assert!(
            rest.iter().any(|l| l.starts_with(expected)),
            "{expected}: {rest:?}"
        );
    }
}
