//! Writes of `coordination.k8s.io/v1` leases over HTTP, with the API server's semantics for the
//! generic registry and the Lease strategy (`pkg/registry/coordination/lease/strategy.go`:
//! `AllowCreateOnUpdate` true, `AllowUnconditionalUpdate` false), so Lease-based leader election
//! (client-go's `tryAcquireOrRenew`: GET, CREATE on 404, resourceVersion-guarded UPDATE, and an
//! UPDATE that releases on shutdown) can be tested against it.
//!
//! | request | outcome |
//! |---|---|
//! | `POST` new name | 201, the stored object |
//! | `POST` existing name | 409 `AlreadyExists` |
//! | `POST` with `metadata.resourceVersion` | 500 "resourceVersion should not be set on objects to be created" |
//! | `POST` without name or `generateName` | 422 `Invalid` |
//! | `PUT` existing, same resourceVersion | 200, stored (no write, same resourceVersion, if nothing changed) |
//! | `PUT` existing, other resourceVersion | 409 `Conflict` "the object has been modified; …" |
//! | `PUT` existing, no resourceVersion | 422 `Invalid` "must be specified for an update" (Leases allow no unconditional update) |
//! | `PUT` missing name | 201, created (Leases allow create on update; the body's resourceVersion is ignored) |
//! | `PUT` with `metadata.uid` other than the stored one | 409 `Conflict` "Precondition failed: UID …" |
//! | `PUT`/`PATCH` body name or namespace other than the URL's | 400 `BadRequest` |
//! | `PATCH` (`application/merge-patch+json`) existing | as `PUT` of the patched object; without resourceVersion in the patch it is unconditional |
//! | `PATCH` missing name | 404 `NotFound` |
//! | `PATCH` of another content type | 415 `UnsupportedMediaType` |
//! | `DELETE` existing | 200, a `Success` Status; `preconditions` (uid, resourceVersion) are checked (409) |
//! | `GET`/`PATCH`/`DELETE` missing name | 404 `NotFound` with details `{name, group, kind: "leases"}` |
//! | `?dryRun=…` or `dryRun` in the delete options | 400 (not supported) |
//!
//! Every write goes through the [`Store`](crate::store::Store): it adds exactly 1 to the global
//! resourceVersion and records one change, like every other kind. The server sets `kind`,
//! `apiVersion`, `metadata.namespace`, `metadata.resourceVersion`, and on create `metadata.uid`
//! and `metadata.creationTimestamp` (scenario clock); updates keep the stored uid and
//! creationTimestamp. Everything else is stored as sent (spec times stay the client's strings),
//! except `null` members, which are dropped as the API server's decoding drops them. Unknown
//! fields are kept (the API server would drop them); there is no field validation beyond names.

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use crate::cluster::{Cluster, ClusterState};
use crate::lifecycle::{new_uid, rfc3339};
use crate::resource::ResourceKind;
use crate::store::ObjectKey;
use crate::watch::status;

const KIND: ResourceKind = ResourceKind::Lease;

/// The API server's optimistic-lock message (`OptimisticLockErrorMsg`).
pub const OPTIMISTIC_LOCK_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// A response: status code and JSON body. Errors are `Status` objects.
pub(crate) type Reply = Result<(StatusCode, Value), Value>;

fn details(name: &str, kind: &str) -> Value {
    json!({"name": name, "group": KIND.group(), "kind": kind})
}

fn with_details(mut st: Value, name: &str) -> Value {
    st["details"] = details(name, KIND.plural());
    st
}

pub(crate) fn not_found(name: &str) -> Value {
    with_details(
        status(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", KIND.qualified()),
        ),
        name,
    )
}

fn already_exists(name: &str) -> Value {
    with_details(
        status(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", KIND.qualified()),
        ),
        name,
    )
}

fn conflict(name: &str, cause: &str) -> Value {
    with_details(
        status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": {cause}",
                KIND.qualified()
            ),
        ),
        name,
    )
}

/// A storage precondition failure, worded as etcd3's `InvalidObjError` turned into a Conflict.
fn precondition_failed(key: &ObjectKey, what: &str, wanted: &str, actual: &str) -> Value {
    conflict(
        &key.name,
        &format!(
            "StorageError: invalid object, Code: 4, Key: /registry/{}/{}/{}, ResourceVersion: 0, \
             AdditionalErrorMsg: Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}",
            KIND.plural(),
            key.namespace,
            key.name
        ),
    )
}

/// 422 `Invalid`; `qualified_kind` is `Lease` for validation errors and `leases` where the
/// registry reports them with the resource (as upstream does).
fn invalid(qualified_kind: &str, name: &str, field: &str, detail: &str, reason: &str) -> Value {
    let mut st = status(
        422,
        "Invalid",
        &format!(
            "{qualified_kind}.{} \"{name}\" is invalid: {field}: {detail}",
            KIND.group()
        ),
    );
    let mut d = details(name, qualified_kind);
    d["causes"] = json!([{"reason": reason, "message": detail, "field": field}]);
    st["details"] = d;
    st
}

fn bad_request(message: &str) -> Value {
    status(400, "BadRequest", message)
}

fn internal_error(message: &str) -> Value {
    let mut st = status(500, "", message);
    if let Some(m) = st.as_object_mut() {
        m.remove("reason");
    }
    st
}

/// Requests that ask for `dryRun` are refused rather than silently written.
pub(crate) fn refuse_dry_run(dry_run: Option<&str>) -> Result<(), Value> {
    match dry_run {
        Some(v) if !v.is_empty() => Err(bad_request(
            "kube-sim does not support dryRun; the request was not applied",
        )),
        _ => Ok(()),
    }
}

/// Drops `null` object members, recursively (the API server never stores or returns them).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(field.to_owned(), value);
    }
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// Checks `kind`/`apiVersion` (absent ones are defaulted) and that `metadata` is an object.
fn check_type(obj: &mut Value) -> Result<(), Value> {
    let Some(m) = obj.as_object_mut() else {
        return Err(bad_request("the request body must be a JSON object"));
    };
    match m.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {}
        Some(v) if v == KIND.api_version() => {}
        Some(v) => {
            return Err(bad_request(&format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                KIND.api_version()
            )));
        }
    }
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {}
        Some(k) if k == KIND.kind() => {}
        Some(k) => {
            return Err(bad_request(&format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                KIND.kind()
            )));
        }
    }
    m.insert("apiVersion".into(), KIND.api_version().into());
    m.insert("kind".into(), KIND.kind().into());
    match m.entry("metadata").or_insert_with(|| json!({})) {
        Value::Object(_) => Ok(()),
        _ => Err(bad_request("metadata must be a JSON object")),
    }
}

fn decode(body: &[u8]) -> Result<Value, Value> {
    let mut obj: Value =
        serde_json::from_slice(body).map_err(|e| bad_request(&format!("json parse error: {e}")))?;
    check_type(&mut obj)?;
    strip_nulls(&mut obj);
    Ok(obj)
}

/// `metadata.name`: a lowercase RFC 1123 subdomain (what `ValidateObjectMeta` requires).
fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

fn validate_name(name: &str) -> Result<(), Value> {
    if is_dns_subdomain(name) {
        return Ok(());
    }
    let detail = format!(
        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
         characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
         regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    Err(invalid(
        KIND.kind(),
        name,
        "metadata.name",
        &detail,
        "FieldValueInvalid",
    ))
}

/// `names.SimpleNameGenerator`: the prefix and 5 characters from the API server's alphabet
/// (deterministic here, from the uid counter).
fn generate_name(state: &mut ClusterState, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    state.uid_counter += 1;
    let mut x = state
        .uid_counter
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    let mut out = prefix.to_owned();
    for _ in 0..5 {
        let i = usize::try_from(x % ALPHABET.len() as u64).unwrap_or(0);
        out.push(char::from(ALPHABET[i]));
        x /= ALPHABET.len() as u64;
    }
    out
}

/// Stores `obj` (metadata.name set, namespace set) as a new lease: fills the system fields.
fn insert_new(state: &mut ClusterState, mut obj: Value, key: &ObjectKey) -> Reply {
    let uid = new_uid(state, KIND, key);
    set_meta(&mut obj, "uid", uid.into());
    set_meta(&mut obj, "creationTimestamp", rfc3339(state.clock).into());
    remove_meta(&mut obj, "resourceVersion");
    remove_meta(&mut obj, "deletionTimestamp");
    remove_meta(&mut obj, "deletionGracePeriodSeconds");
    let stored = state
        .store
        .create(KIND, obj)
        .map_err(|_| already_exists(&key.name))?;
    Ok((StatusCode::CREATED, (*stored).clone()))
}

/// The update path shared by PUT and PATCH once the stored object exists.
fn update_existing(state: &mut ClusterState, existing: &Value, mut obj: Value) -> Reply {
    let name = meta_str(existing, "name").to_owned();
    let new_rv = meta_str(&obj, "resourceVersion");
    if new_rv.is_empty() {
        return Err(invalid(
            KIND.plural(),
            &name,
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update",
            "FieldValueInvalid",
        ));
    }
    if new_rv != meta_str(existing, "resourceVersion") {
        return Err(conflict(&name, OPTIMISTIC_LOCK_MESSAGE));
    }
    // rest.BeforeUpdate: system fields come from the stored object.
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match existing.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => set_meta(&mut obj, field, v.clone()),
            None => remove_meta(&mut obj, field),
        }
    }
    // etcd3's GuaranteedUpdate skips the write when nothing changed: same resourceVersion.
    if obj == *existing {
        return Ok((StatusCode::OK, obj));
    }
    let stored = state
        .store
        .update(KIND, obj)
        .map_err(|_| not_found(&name))?;
    Ok((StatusCode::OK, (*stored).clone()))
}

/// `POST /apis/coordination.k8s.io/v1/namespaces/{ns}/leases`.
pub(crate) fn create(cluster: &Cluster, namespace: &str, body: &[u8]) -> Reply {
    let mut obj = decode(body)?;
    let body_ns = meta_str(&obj, "namespace");
    if !body_ns.is_empty() && body_ns != namespace {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_meta(&mut obj, "namespace", namespace.into());
    cluster.write(|s| {
        let mut name = meta_str(&obj, "name").to_owned();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_owned();
            if prefix.is_empty() {
                return Err(invalid(
                    KIND.kind(),
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                    "FieldValueRequired",
                ));
            }
            name = generate_name(s, &prefix);
            set_meta(&mut obj, "name", name.clone().into());
        }
        validate_name(&name)?;
        if !meta_str(&obj, "resourceVersion").is_empty() {
            return Err(internal_error(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let key = ObjectKey::new(namespace, name.as_str());
        if s.store.get(KIND, &key).is_some() {
            return Err(already_exists(&name));
        }
        insert_new(s, obj, &key)
    })
}

fn check_name_and_namespace(obj: &Value, key: &ObjectKey) -> Result<(), Value> {
    let name = meta_str(obj, "name");
    if name != key.name {
        return Err(bad_request(&format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            key.name
        )));
    }
    let ns = meta_str(obj, "namespace");
    if !ns.is_empty() && ns != key.namespace {
        return Err(bad_request(&format!(
            "the namespace of the object ({ns}) does not match the namespace on the request ({})",
            key.namespace
        )));
    }
    Ok(())
}

/// `PUT /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`.
pub(crate) fn replace(cluster: &Cluster, key: &ObjectKey, body: &[u8]) -> Reply {
    let mut obj = decode(body)?;
    check_name_and_namespace(&obj, key)?;
    set_meta(&mut obj, "namespace", key.namespace.clone().into());
    cluster.write(|s| {
        let existing = s.store.get(KIND, key);
        let stored_uid = existing.as_deref().map_or("", |e| meta_str(e, "uid"));
        let uid = meta_str(&obj, "uid");
        if !uid.is_empty() && uid != stored_uid {
            return Err(precondition_failed(key, "UID", uid, stored_uid));
        }
        match existing {
            None => {
                validate_name(&key.name)?;
                insert_new(s, obj, key)
            }
            Some(existing) => update_existing(s, &existing, obj),
        }
    })
}

/// `PATCH /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`.
pub(crate) fn patch(cluster: &Cluster, key: &ObjectKey, content_type: &str, body: &[u8]) -> Reply {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/merge-patch+json") {
        return Err(status(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - kube-sim accepts \
                 application/merge-patch+json patches only (got \"{media}\")"
            ),
        ));
    }
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| bad_request(&format!("json parse error: {e}")))?;
    if !patch.is_object() {
        return Err(bad_request("a merge patch must be a JSON object"));
    }
    cluster.write(|s| {
        let Some(existing) = s.store.get(KIND, key) else {
            return Err(not_found(&key.name));
        };
        let mut obj = (*existing).clone();
        merge_patch(&mut obj, &patch);
        check_type(&mut obj)?;
        strip_nulls(&mut obj);
        check_name_and_namespace(&obj, key)?;
        set_meta(&mut obj, "namespace", key.namespace.clone().into());
        let uid = meta_str(&obj, "uid");
        let stored_uid = meta_str(&existing, "uid");
        if uid != stored_uid {
            return Err(invalid(
                KIND.kind(),
                &key.name,
                "metadata.uid",
                &format!("Invalid value: \"{uid}\": field is immutable"),
                "FieldValueInvalid",
            ));
        }
        // A patch without resourceVersion applies to the current object, unconditionally.
        if meta_str(&obj, "resourceVersion").is_empty() {
            let rv = meta_str(&existing, "resourceVersion").to_owned();
            set_meta(&mut obj, "resourceVersion", rv.into());
        }
        update_existing(s, &existing, obj)
    })
}

/// `DELETE /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`, with optional
/// `DeleteOptions` in the body (its `preconditions` are honoured).
pub(crate) fn delete(cluster: &Cluster, key: &ObjectKey, body: &[u8]) -> Reply {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| bad_request(&format!("json parse error: {e}")))?
    };
    if options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        refuse_dry_run(Some("All"))?;
    }
    let pre = |field: &str| {
        options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let (want_uid, want_rv) = (pre("uid"), pre("resourceVersion"));
    cluster.write(|s| {
        let Some(existing) = s.store.get(KIND, key) else {
            return Err(not_found(&key.name));
        };
        let uid = meta_str(&existing, "uid").to_owned();
        if let Some(want) = &want_uid
            && *want != uid
        {
            return Err(precondition_failed(key, "UID", want, &uid));
        }
        let rv = meta_str(&existing, "resourceVersion");
        if let Some(want) = &want_rv
            && want != rv
        {
            return Err(precondition_failed(key, "ResourceVersion", want, rv));
        }
        s.store
            .delete(KIND, key)
            .map_err(|_| not_found(&key.name))?;
        let mut d = details(&key.name, KIND.plural());
        d["uid"] = uid.into();
        Ok((
            StatusCode::OK,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d
            }),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "h": [1]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "h": [1]}));
    }

    #[test]
    fn names_are_dns_subdomains() {
        assert!(is_dns_subdomain("edgemeter-leader"));
        assert!(is_dns_subdomain("a.b-c.d1"));
        for bad in ["", "Upper", "-a", "a-", "a..b", "a_b"] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    fn lease(name: &str, holder: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "annotations": {"a": "1"}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": "2026-01-01T00:00:00.123456Z", "acquireTime": null}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn writes_follow_the_registry() {
        let cluster = Cluster::new();
        let key = ObjectKey::new("ns", "l");
        let (code, created) = create(&cluster, "ns", &lease("l", "a")).expect("create");
        assert_eq!(code, StatusCode::CREATED);
        assert_eq!(created["metadata"]["resourceVersion"], "1001");
        assert_eq!(created["metadata"]["namespace"], "ns");
        assert_eq!(created["metadata"]["annotations"]["a"], "1");
        assert_eq!(created["spec"]["renewTime"], "2026-01-01T00:00:00.123456Z");
        assert!(created["spec"].get("acquireTime").is_none());
        let uid = created["metadata"]["uid"].clone();
        assert!(uid.as_str().is_some_and(|u| !u.is_empty()));

        let again = create(&cluster, "ns", &lease("l", "b")).expect_err("exists");
        assert_eq!(again["reason"], "AlreadyExists");
        assert_eq!(again["code"], 409);

        // No resourceVersion: Leases allow no unconditional update.
        let err = replace(&cluster, &key, &lease("l", "b")).expect_err("needs rv");
        assert_eq!(err["code"], 422);
        // Unchanged object: no write.
        let body = serde_json::to_vec(&created).unwrap_or_default();
        let (code, same) = replace(&cluster, &key, &body).expect("no-op");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(same["metadata"]["resourceVersion"], "1001");
        assert_eq!(cluster.resource_version(), 1001);

        let mut next = created.clone();
        next["spec"]["holderIdentity"] = "b".into();
        let body = serde_json::to_vec(&next).unwrap_or_default();
        let (_, updated) = replace(&cluster, &key, &body).expect("update");
        assert_eq!(updated["metadata"]["resourceVersion"], "1002");
        assert_eq!(updated["metadata"]["uid"], uid);
        let stale = replace(&cluster, &key, &body).expect_err("stale");
        assert_eq!(stale["reason"], "Conflict");

        let (_, patched) = patch(
            &cluster,
            &key,
            "application/merge-patch+json",
            br#"{"spec":{"holderIdentity":null}}"#,
        )
        .expect("patch");
        assert_eq!(patched["metadata"]["resourceVersion"], "1003");
        assert!(patched["spec"].get("holderIdentity").is_none());
        let guarded = patch(
            &cluster,
            &key,
            "application/merge-patch+json",
            br#"{"metadata":{"resourceVersion":"1002"}}"#,
        )
        .expect_err("stale patch");
        assert_eq!(guarded["reason"], "Conflict");

        let bad_uid = delete(
            &cluster,
            &key,
            br#"{"preconditions":{"uid":"someone-else"}}"#,
        )
        .expect_err("uid precondition");
        assert_eq!(bad_uid["code"], 409);
        let (_, st) = delete(&cluster, &key, b"").expect("delete");
        assert_eq!(st["status"], "Success");
        assert_eq!(st["details"]["uid"], uid);
        assert_eq!(cluster.resource_version(), 1004);
        let gone = delete(&cluster, &key, b"").expect_err("gone");
        assert_eq!(gone["code"], 404);
        assert_eq!(
            gone["message"],
            "leases.coordination.k8s.io \"l\" not found"
        );

        // PUT of a missing lease creates it, unless the body names the old uid.
        let stale_uid = replace(&cluster, &key, &body).expect_err("uid precondition");
        assert_eq!(stale_uid["reason"], "Conflict");
        if let Some(meta) = next["metadata"].as_object_mut() {
            meta.remove("uid");
        }
        let body = serde_json::to_vec(&next).unwrap_or_default();
        let (code, recreated) = replace(&cluster, &key, &body).expect("create on update");
        assert_eq!(code, StatusCode::CREATED);
        assert_ne!(recreated["metadata"]["uid"], uid);
    }

    #[test]
    fn create_checks_names_and_resource_versions() {
        let cluster = Cluster::new();
        let err = create(&cluster, "ns", br#"{"metadata":{}}"#).expect_err("no name");
        assert_eq!(err["code"], 422);
        let (_, generated) = create(
            &cluster,
            "ns",
            br#"{"metadata":{"generateName":"leader-"}}"#,
        )
        .expect("gen");
        let name = generated["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with("leader-") && name.len() == 12, "{name}");
        let err = create(
            &cluster,
            "ns",
            br#"{"metadata":{"name":"x","resourceVersion":"5"}}"#,
        )
        .expect_err("rv on create");
        assert_eq!(err["code"], 500);
        let err = create(
            &cluster,
            "ns",
            br#"{"metadata":{"name":"x","namespace":"other"}}"#,
        )
        .expect_err("namespace");
        assert_eq!(err["code"], 400);
        let err =
            create(&cluster, "ns", br#"{"kind":"Pod","metadata":{"name":"x"}}"#).expect_err("kind");
        assert_eq!(err["code"], 400);
        let err = create(&cluster, "ns", b"{").expect_err("json");
        assert_eq!(err["code"], 400);
        let err = replace(
            &cluster,
            &ObjectKey::new("ns", "x"),
            br#"{"metadata":{"name":"y"}}"#,
        )
        .expect_err("name mismatch");
        assert_eq!(err["code"], 400);
        assert_eq!(cluster.resource_version(), 1001);
    }
}
