//! `/schedules` (SPEC 12.1, 12.2) through the API: create, list, read, merge patch, skip,
//! delete, the occurrence preview across the 2027 daylight-saving changes of four zones,
//! validation, scopes, the per-device limit, `Idempotency-Key`, and `STATE_STORE=none`.
#![allow(clippy::unwrap_used)]

mod common;

use common::app::{CLOCKS_TOKEN, JsonBody, OPS_TOKEN, TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json_body(body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, _, answer) = send(app, Method::POST, "/schedules", OPS_TOKEN, Some(&body)).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

fn id(schedule: &Value) -> String {
    schedule["scheduleId"].as_str().unwrap().to_owned()
}

async fn preview(app: &TestApp, schedule: &Value, from: &str, count: u32) -> Vec<String> {
    let path = format!(
        "/schedules/{}/occurrences?from={from}&count={count}",
        id(schedule)
    );
    let (status, _, answer) = send(app, Method::GET, &path, OPS_TOKEN, None).await;
    assert_eq!(status, 200, "{answer}");
    answer["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_schedule_is_created_with_its_location_and_next_occurrence_and_reads_back() {
    let app = spawn_app(&[]).await;
    let body = json!({"deviceId": "kitchen", "time": "06:30", "days": ["fri", "mon"],
        "timeZone": "europe/berlin", "label": "work"});
    let (status, headers, created) =
        send(&app, Method::POST, "/schedules", OPS_TOKEN, Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let id = id(&created);
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/schedules/{id}")
    );
    assert!(uuid::Uuid::try_parse(&id).is_ok());
    for (field, value) in [
        ("deviceId", json!("kitchen")),
        ("time", json!("06:30:00")),
        ("days", json!(["mon", "fri"])),
        ("timeZone", json!("Europe/Berlin")),
        ("label", json!("work")),
        ("enabled", json!(true)),
        ("ttlSeconds", Value::Null),
        ("lastFiredAt", Value::Null),
        ("lastCommandId", Value::Null),
        ("principal", json!("ops")),
    ] {
        assert_eq!(created[field], value, "{field}");
    }
    // The next Monday or Friday at 06:30 in Berlin, in UTC with milliseconds.
    let next = chrono::DateTime::parse_from_rfc3339(created["nextFireAt"].as_str().unwrap())
        .unwrap()
        .to_utc();
    assert!(next > chrono::Utc::now());
    assert!(
        created["nextFireAt"]
            .as_str()
            .unwrap()
            .ends_with(":00.000Z")
    );
    let (status, _, read) = send(
        &app,
        Method::GET,
        &format!("/schedules/{id}"),
        OPS_TOKEN,
        None,
    )
    .await;
    assert_eq!((status, &read), (200, &created));
}

#[tokio::test]
async fn the_preview_follows_daylight_saving_in_four_zones_across_2027() {
    let app = spawn_app(&[]).await;
    let daily =
        |zone: &str, time: &str| json!({"deviceId": "kitchen", "time": time, "timeZone": zone});
    // Europe/Berlin: 02:30 does not exist on 2027-03-28 (fires at 03:30 CEST) and exists
    // twice on 2027-10-31 (fires once, at the first).
    let berlin = create(&app, daily("Europe/Berlin", "02:30")).await;
    assert_eq!(
        preview(&app, &berlin, "2027-03-27T12:00:00Z", 2).await,
        ["2027-03-28T01:30:00.000Z", "2027-03-29T00:30:00.000Z"]
    );
    assert_eq!(
        preview(&app, &berlin, "2027-10-30T12:00:00Z", 2).await,
        ["2027-10-31T00:30:00.000Z", "2027-11-01T01:30:00.000Z"]
    );
    // America/New_York: 2027-03-14 and 2027-11-07.
    let new_york = create(&app, daily("America/New_York", "02:15")).await;
    assert_eq!(
        preview(&app, &new_york, "2027-03-13T12:00:00Z", 2).await,
        ["2027-03-14T07:15:00.000Z", "2027-03-15T06:15:00.000Z"]
    );
    let new_york = create(&app, daily("America/New_York", "01:30")).await;
    assert_eq!(
        preview(&app, &new_york, "2027-11-06T12:00:00Z", 2).await,
        ["2027-11-07T05:30:00.000Z", "2027-11-08T06:30:00.000Z"]
    );
    // Australia/Sydney (southern hemisphere): back on 2027-04-04, forward on 2027-10-03.
    let sydney = create(&app, daily("Australia/Sydney", "02:30")).await;
    assert_eq!(
        preview(&app, &sydney, "2027-04-02T17:00:00Z", 2).await,
        ["2027-04-03T15:30:00.000Z", "2027-04-04T16:30:00.000Z"]
    );
    assert_eq!(
        preview(&app, &sydney, "2027-10-01T17:00:00Z", 2).await,
        ["2027-10-02T16:30:00.000Z", "2027-10-03T15:30:00.000Z"]
    );
    // Pacific/Auckland: the local date is a day ahead of UTC's; the weekday is local.
    let auckland = create(
        &app,
        json!({"deviceId": "kitchen", "time": "07:00", "days": ["mon"], "timeZone": "Pacific/Auckland"}),
    )
    .await;
    assert_eq!(
        preview(&app, &auckland, "2027-01-01T00:00:00Z", 2).await,
        ["2027-01-03T18:00:00.000Z", "2027-01-10T18:00:00.000Z"]
    );
    let auckland = create(&app, daily("Pacific/Auckland", "02:30")).await;
    assert_eq!(
        preview(&app, &auckland, "2027-09-24T16:00:00Z", 2).await,
        ["2027-09-25T14:30:00.000Z", "2027-09-26T13:30:00.000Z"]
    );
    // `from` with an offset (a `+` left as is in the query), and the default count of 10.
    assert_eq!(
        preview(&app, &berlin, "2027-03-28T02:00:00%2B01:00", 1).await,
        ["2027-03-28T01:30:00.000Z"]
    );
    let (_, _, ten) = send(
        &app,
        Method::GET,
        &format!("/schedules/{}/occurrences", id(&berlin)),
        OPS_TOKEN,
        None,
    )
    .await;
    assert_eq!(ten["occurrences"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn bad_input_gets_a_400_naming_the_culprit_and_nothing_is_stored() {
    let app = spawn_app(&[]).await;
    let good = json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "Europe/Berlin"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    for (body, error, culprit) in [
        (with("time", json!("25:00")), "invalid command", "25:00"),
        (with("time", json!("6:30")), "invalid command", "HH:MM"),
        (without("time"), "invalid command", "time is required"),
        (
            with("days", json!([])),
            "invalid command",
            "days must not be empty",
        ),
        (
            with("days", json!(["mon", "mon"])),
            "invalid command",
            "given twice",
        ),
        (
            with("days", json!(["mon-fri"])),
            "invalid command",
            "mon-fri",
        ),
        (
            with("timeZone", json!("Mars/Olympus")),
            "invalid command",
            "IANA",
        ),
        (with("timeZone", json!("+01:00")), "invalid command", "IANA"),
        (without("timeZone"), "invalid command", "IANA"),
        (
            with("deviceId", json!("bad id")),
            "invalid command",
            "deviceId",
        ),
        (without("deviceId"), "invalid command", "deviceId"),
        (
            with("ttlSeconds", json!(0)),
            "invalid command",
            "ttlSeconds",
        ),
        (
            with("label", json!("x".repeat(257))),
            "invalid command",
            "label",
        ),
        (
            with("colour", json!("red")),
            "invalid request body",
            "unknown field",
        ),
        (
            with("enabled", json!("yes")),
            "invalid request body",
            "invalid type",
        ),
    ] {
        let (status, _, answer) =
            send(&app, Method::POST, "/schedules", OPS_TOKEN, Some(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let text = answer.to_string();
        assert!(
            answer["error"].as_str().unwrap().starts_with(error) && text.contains(culprit),
            "{body}: {answer}"
        );
    }
    let (_, _, list) = send(&app, Method::GET, "/schedules", OPS_TOKEN, None).await;
    assert_eq!(list, json!({"schedules": []}));
}

#[tokio::test]
async fn a_preview_refuses_a_bad_from_or_count() {
    let app = spawn_app(&[]).await;
    let s = create(
        &app,
        json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"}),
    )
    .await;
    for query in [
        "count=0",
        "count=101",
        "count=ten",
        "from=tomorrow",
        "from=2027-13-01T00:00:00Z",
    ] {
        let path = format!("/schedules/{}/occurrences?{query}", id(&s));
        let (status, _, answer) = send(&app, Method::GET, &path, OPS_TOKEN, None).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"], "invalid query parameter", "{query}");
        let culprit = query.split('=').next().unwrap();
        assert!(
            answer["detail"].as_str().unwrap().starts_with(culprit),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn another_tenants_schedule_is_not_found_and_not_listed() {
    let app = spawn_app(&[]).await;
    // `clocks` may address clock-* only.
    let kitchen = create(
        &app,
        json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"}),
    )
    .await;
    let mine = json!({"deviceId": "clock-1", "time": "07:00", "timeZone": "UTC"});
    let (status, _, clock) =
        send(&app, Method::POST, "/schedules", CLOCKS_TOKEN, Some(&mine)).await;
    assert_eq!(status, 201);
    let theirs = format!("/schedules/{}", id(&kitchen));
    for (method, path) in [
        (Method::GET, theirs.clone()),
        (Method::PATCH, theirs.clone()),
        (Method::DELETE, theirs.clone()),
        (Method::POST, format!("{theirs}/skip")),
        (Method::GET, format!("{theirs}/occurrences")),
        (Method::GET, "/schedules/not-a-uuid".to_owned()),
        (Method::GET, format!("/schedules/{}", uuid::Uuid::now_v7())),
    ] {
        let (status, _, answer) = send(
            &app,
            method.clone(),
            &path,
            CLOCKS_TOKEN,
            Some(&json!({"label": "x"})),
        )
        .await;
        assert_eq!(
            (status, answer),
            (404, json!({"error": "not found"})),
            "{method} {path}"
        );
    }
    let (_, _, list) = send(&app, Method::GET, "/schedules", CLOCKS_TOKEN, None).await;
    assert_eq!(list["schedules"], json!([clock]));
    let (_, _, list) = send(
        &app,
        Method::GET,
        "/schedules?deviceId=kitchen",
        CLOCKS_TOKEN,
        None,
    )
    .await;
    assert_eq!(list["schedules"], json!([]));
    let (status, _, answer) = send(
        &app,
        Method::POST,
        "/schedules",
        CLOCKS_TOKEN,
        Some(&json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"})),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    // Untouched.
    let (_, _, read) = send(&app, Method::GET, &theirs, OPS_TOKEN, None).await;
    assert_eq!(read, kitchen);
}

#[tokio::test]
async fn a_merge_patch_changes_what_it_names_and_revalidates_the_whole() {
    let app = spawn_app(&[]).await;
    let s = create(
        &app,
        json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC", "label": "work", "ttlSeconds": 60}),
    )
    .await;
    let path = format!("/schedules/{}", id(&s));
    let res = app
        .client
        .patch(app.url(&path))
        .bearer_auth(OPS_TOKEN)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"days":["sat","sun"],"ttlSeconds":null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let patched: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(
        (
            &patched["days"],
            &patched["ttlSeconds"],
            &patched["label"],
            &patched["time"]
        ),
        (
            &json!(["sat", "sun"]),
            &Value::Null,
            &json!("work"),
            &json!("06:30:00")
        )
    );
    let next =
        chrono::DateTime::parse_from_rfc3339(patched["nextFireAt"].as_str().unwrap()).unwrap();
    use chrono::Datelike;
    assert!(next.weekday().number_from_monday() >= 6, "{next}");
    for (patch, culprit) in [
        (json!({"deviceId": "hall"}), "deviceId cannot be changed"),
        (json!({"deviceId": null}), "deviceId cannot be changed"),
        (json!({"time": "25:00"}), "25:00"),
        (json!({"time": null}), "time is required"),
        (
            json!({"nextFireAt": "2030-01-01T00:00:00Z"}),
            "unknown field",
        ),
        // A null removes a key in a merge patch: an unknown one is still named.
        (json!({"": null}), "unknown field ``"),
        (json!({"colour": null}), "unknown field `colour`"),
        (json!(["time"]), "JSON object"),
    ] {
        let (status, _, answer) = send(&app, Method::PATCH, &path, OPS_TOKEN, Some(&patch)).await;
        assert_eq!(status, 400, "{patch}: {answer}");
        assert!(answer.to_string().contains(culprit), "{patch}: {answer}");
    }
    let (_, _, read) = send(&app, Method::GET, &path, OPS_TOKEN, None).await;
    assert_eq!(read, patched);
    // Disabled: no next occurrence, and a skip is refused; enabled again: computed anew.
    let (_, _, off) = send(
        &app,
        Method::PATCH,
        &path,
        OPS_TOKEN,
        Some(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(
        (&off["enabled"], &off["nextFireAt"]),
        (&json!(false), &Value::Null)
    );
    let (status, _, answer) =
        send(&app, Method::POST, &format!("{path}/skip"), OPS_TOKEN, None).await;
    assert_eq!(
        (status, answer),
        (409, json!({"error": "schedule is disabled"}))
    );
    let (_, _, on) = send(
        &app,
        Method::PATCH,
        &path,
        OPS_TOKEN,
        Some(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(on["nextFireAt"], patched["nextFireAt"]);
}

#[tokio::test]
async fn skip_moves_to_the_following_occurrence_and_delete_returns_the_schedule() {
    let app = spawn_app(&[]).await;
    let s = create(
        &app,
        json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"}),
    )
    .await;
    let path = format!("/schedules/{}", id(&s));
    let (status, _, skipped) =
        send(&app, Method::POST, &format!("{path}/skip"), OPS_TOKEN, None).await;
    assert_eq!(status, 200, "{skipped}");
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["nextFireAt"].as_str().unwrap()).unwrap()
    };
    assert_eq!(at(&skipped) - at(&s), chrono::TimeDelta::days(1));
    // A PATCH that leaves the rule alone keeps the skip.
    let (_, _, relabelled) = send(
        &app,
        Method::PATCH,
        &path,
        OPS_TOKEN,
        Some(&json!({"label": "gym"})),
    )
    .await;
    assert_eq!(relabelled["nextFireAt"], skipped["nextFireAt"]);
    let (status, _, deleted) = send(&app, Method::DELETE, &path, OPS_TOKEN, None).await;
    assert_eq!((status, &deleted), (200, &relabelled));
    let (status, _, _) = send(&app, Method::GET, &path, OPS_TOKEN, None).await;
    assert_eq!(status, 404);
    let (status, _, _) = send(&app, Method::DELETE, &path, OPS_TOKEN, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_list_is_by_next_occurrence_with_disabled_ones_last() {
    let app = spawn_app(&[]).await;
    let off = create(
        &app,
        json!({"deviceId": "kitchen", "time": "00:00:01", "timeZone": "UTC", "enabled": false}),
    )
    .await;
    let late = create(
        &app,
        json!({"deviceId": "kitchen", "time": "23:59:59", "timeZone": "Pacific/Kiritimati"}),
    )
    .await;
    let now = chrono::Utc::now();
    // One a minute from now (UTC) comes before anything later today or tomorrow.
    let soon = (now + chrono::TimeDelta::minutes(1))
        .format("%H:%M:%S")
        .to_string();
    let soon = create(
        &app,
        json!({"deviceId": "hall", "time": soon, "timeZone": "UTC"}),
    )
    .await;
    let (_, _, list) = send(&app, Method::GET, "/schedules", OPS_TOKEN, None).await;
    let ids: Vec<String> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    let mut expected = vec![
        (soon["nextFireAt"].as_str().unwrap().to_owned(), id(&soon)),
        (late["nextFireAt"].as_str().unwrap().to_owned(), id(&late)),
    ];
    expected.sort();
    let mut expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    expected.push(id(&off));
    assert_eq!(ids, expected);
    let (_, _, hall) = send(
        &app,
        Method::GET,
        "/schedules?deviceId=hall",
        OPS_TOKEN,
        None,
    )
    .await;
    assert_eq!(hall["schedules"], json!([soon]));
    let (status, _, answer) = send(
        &app,
        Method::GET,
        "/schedules?deviceId=bad%20id",
        OPS_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid query parameter"))
    );
}

#[tokio::test]
async fn a_device_gets_at_most_its_limit_of_schedules() {
    let app = spawn_app(&[("SCHEDULES_MAX_PER_DEVICE", "2")]).await;
    let body = json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"});
    create(&app, body.clone()).await;
    let second = create(&app, body.clone()).await;
    let (status, _, answer) = send(&app, Method::POST, "/schedules", OPS_TOKEN, Some(&body)).await;
    assert_eq!(
        (status, answer),
        (409, json!({"error": "too many schedules for this device"}))
    );
    create(
        &app,
        json!({"deviceId": "hall", "time": "06:30", "timeZone": "UTC"}),
    )
    .await;
    send(
        &app,
        Method::DELETE,
        &format!("/schedules/{}", id(&second)),
        OPS_TOKEN,
        None,
    )
    .await;
    create(&app, body).await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_201_and_stores_one_schedule() {
    let app = spawn_app(&[]).await;
    let body = json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"});
    let post = |body: Value| {
        app.client
            .post(app.url("/schedules"))
            .bearer_auth(OPS_TOKEN)
            .header("idempotency-key", "k-1")
            .json_body(&body)
            .send()
    };
    let first = post(body.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let location = first.headers()["location"].clone();
    let first = first.bytes().await.unwrap();
    let again = post(body.clone()).await.unwrap();
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.bytes().await.unwrap(), first);
    let mut other = body;
    other["time"] = json!("07:00");
    let res = post(other).await.unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let (_, _, list) = send(&app, Method::GET, "/schedules", OPS_TOKEN, None).await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
}

#[test]
fn every_schedules_operation_is_in_the_openapi_document() {
    let doc: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    for (path, method, codes) in [
        ("/schedules", "get", &["200", "400", "401"][..]),
        (
            "/schedules",
            "post",
            &["201", "400", "401", "403", "409", "422", "503"][..],
        ),
        ("/schedules/{scheduleId}", "get", &["200", "404"][..]),
        (
            "/schedules/{scheduleId}",
            "patch",
            &["200", "400", "404"][..],
        ),
        ("/schedules/{scheduleId}", "delete", &["200", "404"][..]),
        (
            "/schedules/{scheduleId}/skip",
            "post",
            &["200", "404", "409"][..],
        ),
        (
            "/schedules/{scheduleId}/occurrences",
            "get",
            &["200", "400", "404"][..],
        ),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for code in codes {
            assert!(responses[code].is_object(), "{method} {path} lacks {code}");
        }
    }
}

#[tokio::test]
async fn without_a_state_store_schedules_are_an_unknown_path_after_authentication() {
    let app = spawn_app(&[("STATE_STORE", "none")]).await;
    let body = json!({"deviceId": "kitchen", "time": "06:30", "timeZone": "UTC"});
    for (method, path) in [
        (Method::POST, "/schedules"),
        (Method::GET, "/schedules"),
        (Method::PUT, "/schedules"),
        (
            Method::GET,
            "/schedules/0190a5e0-0000-7000-8000-000000000001/occurrences",
        ),
    ] {
        let (status, _, answer) = send(&app, method.clone(), path, OPS_TOKEN, Some(&body)).await;
        assert_eq!(
            (status, answer),
            (404, json!({"error": "not found"})),
            "{method} {path}"
        );
        let res = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
}

/// `clockctl` with exactly `env` (and the app's URL and token), run off the runtime.
async fn clockctl(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clockctl"));
    cmd.args(args)
        .env_clear()
        .env("CLOCK_SERVER_BASE_URL", app.url(""))
        .env("CLOCK_SERVER_TOKEN", OPS_TOKEN)
        .envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clockctl_adds_lists_previews_pauses_resumes_skips_and_removes_a_schedule() {
    let app = spawn_app(&[]).await;
    let berlin = [("TZ", "Europe/Berlin")];
    let (code, out, err) = clockctl(
        &app,
        &[
            "schedule", "add", "--device", "kitchen", "--time", "02:30", "--days", "mon-fri",
            "--label", "work",
        ],
        &berlin,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    // schedule <id> added: next <local time> (Europe/Berlin)
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        out.starts_with("schedule ") && out.contains("added: next "),
        "{out}"
    );
    // ... in Berlin's wall time with its offset: `2026-12-07 02:30 +01:00 (Europe/Berlin)`.
    let next = out.trim_end().split_once("added: next ").unwrap().1;
    assert!(
        next.ends_with(" 02:30 +01:00 (Europe/Berlin)")
            || next.ends_with(" 02:30 +02:00 (Europe/Berlin)"),
        "{out}"
    );
    let (_, _, stored) = send(
        &app,
        Method::GET,
        &format!("/schedules/{id}"),
        OPS_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (&stored["days"], &stored["timeZone"], &stored["time"]),
        (
            &json!(["mon", "tue", "wed", "thu", "fri"]),
            &json!("Europe/Berlin"),
            &json!("02:30:00")
        )
    );

    let (code, out, _) = clockctl(&app, &["schedule", "list"], &[]).await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NEXT"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("weekdays"),
        "{out}"
    );
    // NEXT is the same wall time as add's, the zone in its own column.
    let local = next.trim_end_matches(" (Europe/Berlin)");
    assert!(
        lines[1].contains(&format!("Europe/Berlin  {local}  yes")),
        "{out}"
    );

    // Monday 2027-03-29 02:30 CEST after Friday 2027-03-26 02:30 CET.
    let (code, out, _) = clockctl(
        &app,
        &[
            "schedule",
            "next",
            &id,
            "--count",
            "2",
            "--from",
            "2027-03-26T00:00:00+00:00",
        ],
        &[],
    )
    .await;
    // In Berlin's wall time: the offset changes with the clocks (Sunday 2027-03-28).
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "2027-03-26 02:30 +01:00 (Europe/Berlin)\n2027-03-29 02:30 +02:00 (Europe/Berlin)\n"
        )
    );
    // --json: the server's instants, unchanged.
    let (code, out, _) = clockctl(
        &app,
        &[
            "--json",
            "schedule",
            "next",
            &id,
            "--count",
            "2",
            "--from",
            "2027-03-26T00:00:00+00:00",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"occurrences": ["2027-03-26T01:30:00.000Z", "2027-03-29T00:30:00.000Z"]})
    );
    // A schedule in another zone is shown in its own, whatever this machine's: 02:30 on
    // 2027-03-28 does not exist in Berlin and fires an hour later (SPEC 12.2); on
    // 2027-10-31 it exists twice and fires at the first.
    let (code, out, err) = clockctl(
        &app,
        &[
            "schedule",
            "add",
            "--device",
            "kitchen",
            "--time",
            "02:30",
            "--days",
            "sun",
            "--tz",
            "Europe/Berlin",
        ],
        &[("TZ", "America/New_York")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let sunday = out.split_whitespace().nth(1).unwrap().to_owned();
    for (from, expected) in [
        (
            "2027-03-27T00:00:00Z",
            "2027-03-28 03:30 +02:00 (Europe/Berlin)\n2027-04-04 02:30 +02:00 (Europe/Berlin)\n",
        ),
        (
            "2027-10-30T00:00:00Z",
            "2027-10-31 02:30 +02:00 (Europe/Berlin)\n2027-11-07 02:30 +01:00 (Europe/Berlin)\n",
        ),
    ] {
        let (code, out, err) = clockctl(
            &app,
            &["schedule", "next", &sunday, "--count", "2", "--from", from],
            &[("TZ", "America/New_York")],
        )
        .await;
        assert_eq!((code, out.as_str()), (0, expected), "{err}");
    }
    let (code, _, _) = clockctl(&app, &["schedule", "rm", &sunday], &[]).await;
    assert_eq!(code, 0);

    let (code, out, _) = clockctl(&app, &["schedule", "pause", &id], &[]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("schedule {id} paused").as_str())
    );
    let (code, _, err) = clockctl(&app, &["schedule", "skip", &id], &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("409") && err.contains("schedule is disabled"),
        "{err}"
    );
    let (code, out, _) = clockctl(&app, &["schedule", "resume", &id], &[]).await;
    assert!(code == 0 && out.contains("resumed: next"), "{out}");
    let (code, out, _) = clockctl(&app, &["schedule", "skip", &id], &[]).await;
    assert!(code == 0 && out.contains("skipped one: next"), "{out}");
    let (code, out, _) = clockctl(&app, &["--json", "schedule", "show", &id], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["scheduleId"],
        json!(id)
    );
    let (code, out, _) = clockctl(&app, &["schedule", "rm", &id], &[]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("schedule {id} removed").as_str())
    );
    let (code, _, err) = clockctl(&app, &["schedule", "show", &id], &[]).await;
    assert!(code == 1 && err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clockctl_refuses_bad_schedule_input_with_exit_2_and_sends_nothing() {
    let app = spawn_app(&[]).await;
    let add = |extra: &'static [&'static str]| {
        let mut args = vec!["schedule", "add", "--device", "kitchen", "--time", "06:30"];
        args.extend_from_slice(extra);
        args
    };
    for (args, env, culprit) in [
        (add(&["--tz", "Mars/Olympus"]), vec![], "IANA"),
        (add(&["--tz", "+01:00"]), vec![], "IANA"),
        (
            add(&["--days", "mon-mon-tue", "--tz", "UTC"]),
            vec![],
            "--days",
        ),
        (add(&["--ttl", "0", "--tz", "UTC"]), vec![], "--ttl"),
        // A POSIX TZ rule names no IANA zone: ask for --tz rather than guess.
        (add(&[]), vec![("TZ", "CET-1CEST")], "--tz"),
        (
            vec![
                "schedule", "add", "--device", "kitchen", "--time", "25:00", "--tz", "UTC",
            ],
            vec![],
            "--time",
        ),
        (vec!["schedule", "next", "not-an-id"], vec![], "SCHEDULE_ID"),
        (
            vec![
                "schedule",
                "next",
                "0190a5e0-0000-7000-8000-000000000001",
                "--count",
                "0",
            ],
            vec![],
            "--count",
        ),
    ] {
        let (code, _, err) = clockctl(&app, &args, &env).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(culprit), "{args:?}: {err}");
    }
    let (_, _, list) = send(&app, Method::GET, "/schedules", OPS_TOKEN, None).await;
    assert_eq!(list, json!({"schedules": []}));
}

#[tokio::test]
async fn a_credential_that_fills_its_share_of_schedules_gets_503_state_store_full_and_the_other_still_creates()
 {
    // Two credentials share STATE_MAX_COMMANDS=1000: 500 schedules each, however many
    // devices `*` can name.
    let app = spawn_app(&[("STATE_MAX_COMMANDS", "1000")]).await;
    for n in 0..500 {
        let body = json!({"deviceId": format!("d{}", n / 32), "time": "06:30", "timeZone": "UTC"});
        let (status, _, answer) =
            send(&app, Method::POST, "/schedules", OPS_TOKEN, Some(&body)).await;
        assert_eq!(status, 201, "schedule {n}: {answer}");
    }
    let body = json!({"deviceId": "d99", "time": "06:30", "timeZone": "UTC"});
    let (status, headers, answer) =
        send(&app, Method::POST, "/schedules", OPS_TOKEN, Some(&body)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer, json!({"error": "state store full"}));
    assert_eq!(headers["retry-after"], "1");
    let theirs = json!({"deviceId": "clock-1", "time": "07:00", "timeZone": "UTC"});
    let (status, _, answer) = send(
        &app,
        Method::POST,
        "/schedules",
        CLOCKS_TOKEN,
        Some(&theirs),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}
