//! Saving dates of birth and greeting: the happy paths of the contract.

use std::time::Duration;

use crate::common::{Backend, TODAY, date, spawn_app, spawn_app_with};

async fn put_answers_204_with_an_empty_body(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.put_birthday("Ann", "1990-06-20").await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.unwrap(), "");
}

async fn get_counts_the_days_to_the_birthday(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(TODAY, (2024, 6, 15));
    app.put_birthday("Ann", "1990-06-20")
        .await
        .error_for_status()
        .unwrap();
    assert_eq!(
        app.greeting("Ann").await,
        "Hello, Ann! Your birthday is in 5 day(s)"
    );
}

async fn get_answers_exactly_one_message_field(backend: Backend) {
    let app = spawn_app(backend).await;
    app.put_birthday("Ann", "1990-06-16")
        .await
        .error_for_status()
        .unwrap();
    let response = app.get_hello("Ann").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "Hello, Ann! Your birthday is in 1 day(s)"})
    );
}

async fn get_wishes_happy_birthday_on_the_day(backend: Backend) {
    let app = spawn_app(backend).await;
    app.put_birthday("Ann", "1990-06-15")
        .await
        .error_for_status()
        .unwrap();
    assert_eq!(app.greeting("Ann").await, "Hello, Ann! Happy birthday!");
}

async fn yesterday_is_a_valid_date_of_birth(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.put_birthday("Baby", "2024-06-14").await.status(), 204);
    assert_eq!(
        app.greeting("Baby").await,
        "Hello, Baby! Your birthday is in 364 day(s)"
    );
}

async fn put_replaces_the_saved_date(backend: Backend) {
    let app = spawn_app(backend).await;
    app.put_birthday("Ann", "1990-06-20")
        .await
        .error_for_status()
        .unwrap();
    assert_eq!(app.put_birthday("Ann", "1985-06-15").await.status(), 204);
    assert_eq!(app.greeting("Ann").await, "Hello, Ann! Happy birthday!");
}

async fn usernames_are_case_sensitive(backend: Backend) {
    let app = spawn_app(backend).await;
    app.put_birthday("Ann", "1990-06-16")
        .await
        .error_for_status()
        .unwrap();
    app.put_birthday("ann", "1990-06-17")
        .await
        .error_for_status()
        .unwrap();
    assert_eq!(
        app.greeting("Ann").await,
        "Hello, Ann! Your birthday is in 1 day(s)"
    );
    assert_eq!(
        app.greeting("ann").await,
        "Hello, ann! Your birthday is in 2 day(s)"
    );
    assert_eq!(app.get_hello("ANN").await.status(), 404);
}

async fn the_longest_username_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let name = "Abcdefgh".repeat(8);
    assert_eq!(name.len(), 64);
    assert_eq!(app.put_birthday(&name, "1990-06-16").await.status(), 204);
    assert_eq!(
        app.greeting(&name).await,
        format!("Hello, {name}! Your birthday is in 1 day(s)")
    );
}

/// "Today" is the current UTC date, read per request: at 23:59:59 the same day is refused, a
/// second later it is yesterday.
async fn today_is_the_utc_date_of_each_request(backend: Backend) {
    use chrono::{TimeZone, Utc};
    let app = spawn_app(backend).await;
    app.clock
        .set(Utc.with_ymd_and_hms(2024, 6, 15, 23, 59, 59).unwrap());
    assert_eq!(app.put_birthday("Ann", "2024-06-15").await.status(), 400);
    app.clock
        .set(Utc.with_ymd_and_hms(2024, 6, 16, 0, 0, 0).unwrap());
    assert_eq!(app.put_birthday("Ann", "2024-06-15").await.status(), 204);
}

/// Someone born on 29 February is greeted on 28 February in common years and on 29 February
/// in leap years, as the days go by.
async fn leap_day_birthdays_follow_the_calendar(backend: Backend) {
    let app = spawn_app(backend).await;
    app.put_birthday("Leap", "2000-02-29")
        .await
        .error_for_status()
        .unwrap();
    let cases = [
        (
            date(2023, 2, 27),
            "Hello, Leap! Your birthday is in 1 day(s)",
        ),
        (date(2023, 2, 28), "Hello, Leap! Happy birthday!"),
        (
            date(2023, 3, 1),
            "Hello, Leap! Your birthday is in 365 day(s)",
        ),
        (
            date(2024, 2, 28),
            "Hello, Leap! Your birthday is in 1 day(s)",
        ),
        (date(2024, 2, 29), "Hello, Leap! Happy birthday!"),
        (
            date(2024, 3, 1),
            "Hello, Leap! Your birthday is in 364 day(s)",
        ),
        (
            date(2024, 12, 31),
            "Hello, Leap! Your birthday is in 59 day(s)",
        ),
    ];
    for (today, expected) in cases {
        app.set_today(today);
        assert_eq!(app.greeting("Leap").await, expected, "on {today}");
    }
}

async fn new_year_birthdays_cross_the_year(backend: Backend) {
    let app = spawn_app(backend).await;
    app.put_birthday("Eve", "1990-12-31")
        .await
        .error_for_status()
        .unwrap();
    app.put_birthday("Jan", "1990-01-01")
        .await
        .error_for_status()
        .unwrap();
    app.set_today(date(2023, 12, 31));
    assert_eq!(app.greeting("Eve").await, "Hello, Eve! Happy birthday!");
    assert_eq!(
        app.greeting("Jan").await,
        "Hello, Jan! Your birthday is in 1 day(s)"
    );
    app.set_today(date(2024, 1, 1));
    assert_eq!(
        app.greeting("Eve").await,
        "Hello, Eve! Your birthday is in 365 day(s)"
    );
    assert_eq!(app.greeting("Jan").await, "Hello, Jan! Happy birthday!");
}

/// One upsert statement: many simultaneous saves for one name all succeed. (More requests
/// than pooled connections wait for one; the bounds are wide so that a slow machine does not
/// turn waiting into a timeout.)
async fn concurrent_puts_for_one_name_never_fail(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.database_acquire_timeout = Duration::from_secs(30);
        settings.request_timeout = Duration::from_secs(30);
    })
    .await;
    let mut saves = tokio::task::JoinSet::new();
    for day in 1..=28 {
        let request = app
            .client
            .put(app.url("/hello/Race"))
            .json(&serde_json::json!({ "dateOfBirth": format!("1990-02-{day:02}") }));
        saves.spawn(async move {
            request
                .send()
                .await
                .map(|response| response.status().as_u16())
        });
    }
    let statuses: Vec<u16> = saves
        .join_all()
        .await
        .into_iter()
        .map(|status| status.unwrap())
        .collect();
    assert_eq!(statuses.len(), 28);
    assert!(statuses.iter().all(|&status| status == 204), "{statuses:?}");
    let message = app.greeting("Race").await;
    assert!(
        message.starts_with("Hello, Race! Your birthday is in "),
        "{message}"
    );
}

crate::on_both_backends!(
    put_answers_204_with_an_empty_body,
    get_counts_the_days_to_the_birthday,
    get_answers_exactly_one_message_field,
    get_wishes_happy_birthday_on_the_day,
    yesterday_is_a_valid_date_of_birth,
    put_replaces_the_saved_date,
    usernames_are_case_sensitive,
    the_longest_username_is_accepted,
    today_is_the_utc_date_of_each_request,
    leap_day_birthdays_follow_the_calendar,
    new_year_birthdays_cross_the_year,
    concurrent_puts_for_one_name_never_fail,
);
