//! Token flows (v1 `client_credentials` and `app_token`, v2 form-encoded) and refusals.

mod common;

use std::time::Duration;

use common::{client, get, org, start, token};
use runai_sim::token::claims;
use runai_sim::{Route, Times};
use serde_json::{Value, json};

#[tokio::test]
async fn v1_client_credentials_and_app_token_give_jwts_with_the_configured_lifetime() {
    let sim = start(org()).await;
    let http = client();
    let c = sim.credentials().clone();
    for body in [
        json!({"grantType": "client_credentials", "clientID": c.client_id, "clientSecret": c.client_secret}),
        json!({"grantType": "app_token", "appID": c.app_id, "appSecret": c.app_secret}),
    ] {
        let r = http
            .post(format!("{}/api/v1/token", sim.url()))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.expect("json");
        let t = b["accessToken"].as_str().expect("accessToken");
        let cl = claims(t).expect("a JWT");
        assert_eq!(
            cl["exp"].as_i64().expect("exp") - cl["iat"].as_i64().expect("iat"),
            3600
        );
        assert_eq!(b["expiresIn"], 3600);
        let (status, _) = get(&sim, &http, t, "/api/v1/workloads").await;
        assert_eq!(status, 200);
    }
    sim.set_token_lifetime(Duration::from_secs(120));
    let t = token(&sim, &http).await;
    let cl = claims(&t).expect("jwt");
    assert_eq!(
        cl["exp"].as_i64().expect("exp") - cl["iat"].as_i64().expect("iat"),
        120
    );
    assert_eq!(sim.requests().get(Route::TokenV1), 3);
}

#[tokio::test]
async fn v2_form_token() {
    let sim = start(org()).await;
    let http = client();
    let c = sim.credentials().clone();
    let r = http
        .post(format!("{}/api/v2/token", sim.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"], 3600);
    let t = b["access_token"].as_str().expect("access_token");
    assert!(claims(t).is_some());
    assert_eq!(
        get(&sim, &http, t, "/api/v1/org-unit/projects").await.0,
        200
    );

    let bad = http
        .post(format!("{}/api/v2/token", sim.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 401);
    let b: Value = bad.json().await.expect("json");
    assert_eq!(b["error"], "invalid_client");
    let unsupported = http
        .post(format!("{}/api/v2/token", sim.url()))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .expect("send");
    assert_eq!(unsupported.status(), 400);
}

#[tokio::test]
async fn wrong_credentials_and_missing_or_bad_tokens_are_refused() {
    let sim = start(org()).await;
    let http = client();
    let c = sim.credentials().clone();
    for (body, want) in [
        (
            json!({"grantType": "client_credentials", "clientID": c.client_id, "clientSecret": "nope"}),
            401,
        ),
        (
            json!({"grantType": "app_token", "appID": "someone", "appSecret": c.app_secret}),
            401,
        ),
        (json!({"grantType": "app_token", "appID": c.app_id}), 400),
        (json!({"clientID": c.client_id}), 400),
    ] {
        let r = http
            .post(format!("{}/api/v1/token", sim.url()))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), want, "{body}");
        let b: Value = r.json().await.expect("error body");
        assert_eq!(b["code"], want);
        assert!(b["message"].is_string());
    }
    let no_auth = http
        .get(format!("{}/api/v1/workloads", sim.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(no_auth.status(), 401);
    assert_eq!(
        get(&sim, &http, "not-a-token", "/api/v1/workloads").await.0,
        401
    );
    // A well-formed JWT this server did not issue.
    let forged = runai_sim::token::issue(b"other-key", "x", 0, i64::MAX / 2, 1);
    assert_eq!(get(&sim, &http, &forged, "/api/v1/workloads").await.0, 401);
    assert_eq!(sim.requests().with_status(Route::Workloads, 401), 3);
}

#[tokio::test]
async fn expiry_revocation_and_forced_401() {
    let sim = start(org()).await;
    let http = client();
    // Lifetime 0: `exp == iat`, expired on issue (no sleeping needed).
    sim.set_token_lifetime(Duration::ZERO);
    let dead = token(&sim, &http).await;
    let (status, body) = get(&sim, &http, &dead, "/api/v1/workloads").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Token is expired."))
    );

    sim.set_token_lifetime(Duration::from_secs(600));
    let t = token(&sim, &http).await;
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);
    sim.expire_tokens();
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 401);

    let t = token(&sim, &http).await;
    sim.revoke_tokens();
    assert_eq!(sim.issued_tokens(), 0);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 401);

    let t = token(&sim, &http).await;
    sim.fail_auth_once();
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 401);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);

    sim.inject(Route::Pods, runai_sim::Fault::Unauthorized, Times::N(2));
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads/pods").await.0, 401);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads/pods").await.0, 401);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads/pods").await.0, 200);
    assert_eq!(sim.pending_faults(), 0);
}
