//! The PostgreSQL test harness itself, against a real server: private
//! clusters, restarts, password roles, and the proxy that loses a COMMIT's
//! answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/pg.rs"]
mod pg;
#[path = "common/pg_proxy.rs"]
mod pg_proxy;

use std::process::Command;

use pg::Pg;
use pg_proxy::{Frontend, LostCommitProxy};

#[test]
fn a_cluster_runs_sql_and_keeps_data_across_restarts() {
    let pg = Pg::start();
    pg.create_db("plant_test");
    pg.psql("plant_test", "CREATE TABLE t (x int)");
    pg.psql("plant_test", "INSERT INTO t VALUES (1), (2)");
    assert_eq!(pg.psql("plant_test", "SELECT sum(x) FROM t"), "3");
    assert_eq!(pg.psql("plant_test", "SELECT current_user"), "plant");

    pg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
    pg.start_again();
    assert_eq!(pg.psql("plant_test", "SELECT sum(x) FROM t"), "3");

    // A crash (no shutdown checkpoint) keeps committed rows too.
    pg.psql("plant_test", "INSERT INTO t VALUES (3)");
    pg.kill();
    pg.start_again();
    assert_eq!(pg.psql("plant_test", "SELECT sum(x) FROM t"), "6");
}

#[test]
fn a_failing_statement_panics_with_the_reason() {
    let pg = Pg::start();
    let err = std::panic::catch_unwind(|| pg.psql("postgres", "SELECT * FROM nowhere"))
        .expect_err("psql should fail");
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("nowhere") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn parallel_tests_get_their_own_clusters() {
    let a = std::thread::spawn(Pg::start);
    let b = std::thread::spawn(Pg::start);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data(), b.data());
    a.psql("postgres", "CREATE TABLE only_in_a (x int)");
    assert_eq!(
        b.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"
        ),
        "0"
    );
    let data = a.data();
    drop(a);
    assert!(!data.exists(), "the cluster's folder is removed on drop");
    assert!(b.psql("postgres", "SELECT 1") == "1", "b lives on");
}

#[test]
fn a_password_role_needs_its_password() {
    let pg = Pg::start();
    pg.add_password_role("station", "s3cret'pw");
    let url = format!("postgres://station@127.0.0.1:{}/postgres", pg.port());
    let connect = |password: Option<&str>| {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-w", "-At", "-d", &url, "-c", "SELECT current_user"]);
        match password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
        cmd.output().unwrap()
    };
    let out = connect(Some("s3cret'pw"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "station");
    let out = connect(Some("wrong"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
    assert!(!connect(None).status.success());
    // plant stays trusted.
    assert_eq!(pg.psql("postgres", "SELECT current_user"), "plant");
}

#[test]
fn the_frontend_parser_finds_commit_split_or_coalesced() {
    fn query(text: &str) -> Vec<u8> {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&(4 + text.len() as u32 + 1).to_be_bytes());
        m.extend_from_slice(text.as_bytes());
        m.push(0);
        m
    }
    let ssl_request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0plant\0\0");
    let len = startup.len() as u32;
    startup[..4].copy_from_slice(&len.to_be_bytes());

    let mut stream = Vec::new();
    stream.extend_from_slice(&ssl_request);
    stream.extend_from_slice(&startup);
    stream.extend(query("BEGIN"));
    // A startup-like payload inside a query must not confuse it.
    stream.extend(query("SELECT 'COMMIT'"));
    stream.extend(query("COMMIT"));
    stream.extend(query("commit;"));
    // All at once.
    assert_eq!(Frontend::default().feed(&stream), 2);
    // Byte by byte: each COMMIT is seen when its last byte arrives.
    let mut f = Frontend::default();
    let seen: usize = stream.iter().map(|b| f.feed(&[*b])).sum();
    assert_eq!(seen, 2);
    // Split right inside the first COMMIT.
    let cut = stream.len() - query("commit;").len() - 3;
    let mut f = Frontend::default();
    assert_eq!(f.feed(&stream[..cut]), 0);
    assert_eq!(f.feed(&stream[cut..]), 2);
    // Without the startup message, "COMMIT" bytes are not a message.
    assert_eq!(Frontend::default().feed(&query("COMMIT")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_loses_a_commits_answer_from_psql() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE TABLE t (x int)");
    let proxy = LostCommitProxy::start(pg.port()).await;
    let url = format!("postgres://plant@127.0.0.1:{}/postgres", proxy.port());

    // Unarmed, the proxy just relays.
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", &url])
        .args([
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO t VALUES (1)",
            "-c",
            "COMMIT",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(proxy.fired(), 0);

    // Armed: each -c is its own simple query, so COMMIT is one 'Q'.
    proxy.arm();
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", &url])
        .args([
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO t VALUES (2)",
            "-c",
            "COMMIT",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "psql should lose its connection");
    assert_eq!(proxy.fired(), 1);
    assert_eq!(
        pg.psql("postgres", "SELECT sum(x) FROM t"),
        "3",
        "the commit happened"
    );

    // Disarmed after once.
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-d", &url, "-c", "BEGIN", "-c", "COMMIT"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(proxy.fired(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_loses_a_commits_answer_from_tokio_postgres() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE TABLE t (x int)");
    let proxy = LostCommitProxy::start(pg.port()).await;
    let url = format!("postgres://plant@127.0.0.1:{}/postgres", proxy.port());

    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (7)", &[]).await.unwrap();
    proxy.arm();
    let err = tx.commit().await.expect_err("the answer to COMMIT is lost");
    assert!(
        err.is_closed() || err.to_string().contains("closed"),
        "{err}"
    );
    assert_eq!(proxy.fired(), 1);
    let _ = conn.await;
    assert_eq!(
        pg.psql("postgres", "SELECT sum(x) FROM t"),
        "7",
        "yet it committed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_all_drops_every_connection() {
    let pg = Pg::start();
    let proxy = LostCommitProxy::start(pg.port()).await;
    let url = format!("postgres://plant@127.0.0.1:{}/postgres", proxy.port());
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.simple_query("SELECT 1").await.unwrap();
        clients.push(client);
    }
    proxy.cut_all();
    for client in &clients {
        assert!(client.simple_query("SELECT 1").await.is_err());
    }
    // New connections still work.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(proxy.fired(), 0);
}
