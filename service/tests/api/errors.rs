//! Every error of the contract: a JSON body `{"error": "..."}` naming what to fix, with the
//! right status, and never a 500 for bad input.

use crate::common::{Backend, assert_error, spawn_app};

/// Usernames that are not 1 to 64 ASCII letters, as they appear in the path.
const BAD_USERNAMES: &[&str] = &[
    "Ann1",
    "ann-smith",
    "ann_smith",
    "ann.smith",
    "ann%20smith",
    "Zo%C3%AB",
    "%FF",
    "12345",
    // 65 letters
    "Abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklm",
];

async fn bad_usernames_are_400_on_put_and_get(backend: Backend) {
    let app = spawn_app(backend).await;
    for name in BAD_USERNAMES {
        assert_error(
            app.put_birthday(name, "1990-05-17").await,
            400,
            &["username"],
        )
        .await;
        assert_error(app.get_hello(name).await, 400, &["username"]).await;
    }
}

async fn an_empty_username_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_error(
        app.put_birthday("", "1990-05-17").await,
        400,
        &["username", "empty"],
    )
    .await;
    assert_error(app.get_hello("").await, 400, &["username", "empty"]).await;
}

async fn a_name_never_saved_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_error(
        app.get_hello("Nobody").await,
        404,
        &["Nobody", "PUT /hello/Nobody"],
    )
    .await;
}

async fn bad_dates_are_400(backend: Backend) {
    let app = spawn_app(backend).await;
    // Today is 2024-06-15.
    let cases = [
        ("17/05/1990", &["dateOfBirth", "YYYY-MM-DD"][..]),
        ("1990-5-17", &["dateOfBirth", "YYYY-MM-DD"]),
        ("1990-05-17T00:00:00Z", &["dateOfBirth", "YYYY-MM-DD"]),
        ("", &["dateOfBirth", "YYYY-MM-DD"]),
        ("yesterday", &["dateOfBirth", "YYYY-MM-DD"]),
        ("2023-02-29", &["dateOfBirth", "not a real calendar date"]),
        ("1990-13-01", &["dateOfBirth", "not a real calendar date"]),
        ("1990-04-31", &["dateOfBirth", "not a real calendar date"]),
        ("2024-06-15", &["dateOfBirth", "before today"]),
        ("2024-06-16", &["dateOfBirth", "before today"]),
        ("3000-01-01", &["dateOfBirth", "before today"]),
    ];
    for (date_of_birth, needles) in cases {
        assert_error(app.put_birthday("Ann", date_of_birth).await, 400, needles).await;
    }
    assert_eq!(
        app.get_hello("Ann").await.status(),
        404,
        "nothing was saved"
    );
}

async fn bad_bodies_are_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        ("", &["not valid JSON"][..]),
        ("{", &["not valid JSON"]),
        ("dateOfBirth=1990-05-17", &["not valid JSON"]),
        (r#"{"dateOfBirth": "1990-05-17",}"#, &["not valid JSON"]),
        ("null", &["JSON object"]),
        (r#"["1990-05-17"]"#, &["JSON object"]),
        ("{}", &["dateOfBirth", "missing"]),
        (
            r#"{"date_of_birth": "1990-05-17"}"#,
            &["unknown field", "date_of_birth", "dateOfBirth"],
        ),
        (
            r#"{"dateOfBirth": "1990-05-17", "admin": true}"#,
            &["unknown field", "admin"],
        ),
        (r#"{"dateOfBirth": 19900517}"#, &["dateOfBirth", "string"]),
        (r#"{"dateOfBirth": null}"#, &["dateOfBirth", "string"]),
        (
            r#"{"dateOfBirth": {"year": 1990}}"#,
            &["dateOfBirth", "string"],
        ),
    ];
    for (body, needles) in cases {
        assert_error(app.put_json("Ann", body).await, 400, needles).await;
    }
    assert_eq!(
        app.get_hello("Ann").await.status(),
        404,
        "nothing was saved"
    );
}

async fn a_missing_content_type_is_read_as_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = r#"{"dateOfBirth": "1990-06-16"}"#;
    assert_eq!(app.put_raw("Ann", body, None).await.status(), 204);
    assert_eq!(
        app.put_raw("Bob", body, Some("application/json; charset=utf-8"))
            .await
            .status(),
        204
    );
    assert_eq!(
        app.greeting("Ann").await,
        "Hello, Ann! Your birthday is in 1 day(s)"
    );
}

async fn a_content_type_other_than_json_is_415(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = r#"{"dateOfBirth": "1990-06-16"}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/json",
    ] {
        assert_error(
            app.put_raw("Ann", body, Some(content_type)).await,
            415,
            &["Content-Type", content_type],
        )
        .await;
    }
    assert_eq!(
        app.get_hello("Ann").await.status(),
        404,
        "nothing was saved"
    );
}

/// 16 KiB is the limit: exactly 16384 bytes pass, one more is refused.
async fn a_body_over_16_kib_is_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let sized = |len: usize| {
        let body = r#"{"dateOfBirth": "1990-06-16"}"#;
        format!("{body}{}", " ".repeat(len - body.len()))
    };
    assert_eq!(app.put_json("Ann", &sized(16 * 1024)).await.status(), 204);
    assert_error(
        app.put_json("Bob", &sized(16 * 1024 + 1)).await,
        413,
        &["16 KiB"],
    )
    .await;
    assert_error(
        app.put_json("Bob", &sized(1024 * 1024)).await,
        413,
        &["16 KiB"],
    )
    .await;
}

async fn a_wrong_method_is_405(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (reqwest::Method::POST, "/hello/Ann"),
        (reqwest::Method::DELETE, "/hello/Ann"),
        (reqwest::Method::PATCH, "/hello/Ann"),
        (reqwest::Method::PUT, "/healthz"),
        (reqwest::Method::POST, "/readyz"),
        (reqwest::Method::DELETE, "/openapi.json"),
    ];
    for (method, path) in cases {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_error(response, 405, &[method.as_str(), path]).await;
        let allow = allow.unwrap_or_else(|| panic!("{method} {path}: an Allow header"));
        assert!(allow.contains("GET"), "{method} {path}: Allow: {allow}");
    }
}

async fn an_unknown_path_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/", "/hello", "/hello/Ann/extra", "/users/Ann"] {
        assert_error(app.get(path).await, 404, &["no such path", "/openapi.json"]).await;
    }
}

crate::on_both_backends!(
    bad_usernames_are_400_on_put_and_get,
    an_empty_username_is_400,
    a_name_never_saved_is_404,
    bad_dates_are_400,
    bad_bodies_are_400,
    a_missing_content_type_is_read_as_json,
    a_content_type_other_than_json_is_415,
    a_body_over_16_kib_is_413,
    a_wrong_method_is_405,
    an_unknown_path_is_404,
);
