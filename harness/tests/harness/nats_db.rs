//! nats-server killed and restarted; test databases created, dropped and kept.

use super::*;

#[tokio::test]
async fn nats_stream_survives_kill_and_restart() {
    let mut nats = NatsServer::start().expect("start nats-server");
    assert!(nats.is_running());
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
    let store = nats.store_dir().to_path_buf();
    assert!(store.is_dir());

    let client = nats.admin_client().await.expect("connect");
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "ORDERS".to_owned(),
        subjects: vec!["orders.>".to_owned()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.publish("orders.1", "hello".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    drop(js);
    drop(client);
    // No pause before the kill: an acknowledged message must already be in the store files
    // (the page cache survives SIGKILL), which is exactly what crash tests rely on.

    let port = nats.port();
    nats.kill();
    assert!(!nats.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "port must be closed after kill"
    );

    nats.restart().expect("restart nats-server");
    assert!(nats.is_running());
    assert_eq!(nats.port(), port, "restart keeps the port");
    assert_eq!(nats.store_dir(), store, "restart keeps the store");

    let js = jetstream::new(nats.admin_client().await.expect("reconnect"));
    let mut stream = js
        .get_stream("ORDERS")
        .await
        .expect("stream recovered from store");
    assert_eq!(stream.info().await.expect("stream info").state.messages, 1);
    let message = stream.get_raw_message(1).await.expect("message 1");
    assert_eq!(&message.payload[..], b"hello");
    assert_eq!(message.subject.as_str(), "orders.1");

    drop(nats);
    assert!(!store.exists(), "dropping the server removes its store");
}

#[tokio::test]
async fn nats_async_start_and_restart() {
    let mut nats = NatsServer::start_async().await.expect("start nats-server");
    let log = nats.log_path().to_path_buf();
    nats.restart_async().await.expect("restart while running");
    assert!(nats.is_running());
    // Authentication is on by default, and a restart keeps it (same file, same passwords).
    assert!(
        async_nats::connect(nats.url()).await.is_err(),
        "an unauthenticated connection is refused after a restart"
    );
    nats.admin_client().await.expect("connect after restart");
    assert!(log.is_file(), "server output goes to the log file");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn admin_url() -> String {
    std::env::var(checkout_harness::db::DATABASE_ADMIN_URL_ENV)
        .unwrap_or_else(|_| checkout_harness::db::DEFAULT_ADMIN_URL.to_owned())
}

async fn database_exists(name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query pg_database");
    count == 1
}

#[tokio::test]
async fn test_db_create_and_drop() {
    let db = TestDb::create().await.expect("create database");
    let name = db.name().to_owned();
    assert!(
        name.starts_with("checkout_") && name.len() == "checkout_".len() + 12,
        "{name}"
    );
    // The database is the URL's path; the admin URL's query (sslmode) is kept after it.
    let path = db.url().split('?').next().unwrap_or_default().to_owned();
    assert!(path.ends_with(&format!("/{name}")), "{}", db.url());
    assert!(database_exists(&name).await);

    // The URL must point at the new database, and an open session must not block the drop.
    let mut conn = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect to test db");
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("current_database");
    assert_eq!(current, name);

    db.drop_db().await.expect("drop database");
    assert!(
        !database_exists(&name).await,
        "{name} still exists after drop_db"
    );
}

#[tokio::test]
async fn test_db_is_dropped_on_drop_and_kept_on_keep() {
    let dropped = TestDb::create().await.expect("create database");
    let dropped_name = dropped.name().to_owned();
    drop(dropped);
    assert!(
        !database_exists(&dropped_name).await,
        "Drop must remove {dropped_name}"
    );

    let kept = TestDb::create().await.expect("create database");
    let kept_name = kept.name().to_owned();
    kept.keep();
    assert!(
        database_exists(&kept_name).await,
        "keep must leave {kept_name}"
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{kept_name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("clean up kept database");
}

// ---------------------------------------------------------------------------------------------
// OTLP receiver
