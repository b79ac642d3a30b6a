//! A real, private PostgreSQL server for a test: its own cluster in a
//! temporary folder, on its own loopback port, with the role `plant`
//! trusted. Debian's `postgresql` package provides the programs (in
//! `/usr/lib/postgresql/<version>/bin`, not on PATH); `scripts/test.sh`
//! installs it. initdb refuses to run as root, so when the tests run as
//! root the server's programs run as the `postgres` system user.
//!
//! Dropping a [`Pg`] stops the server (even when the test panics) and
//! removes its folder.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The PostgreSQL client (from `postgresql-client`).
const PSQL: &str = "/usr/bin/psql";

pub struct Pg {
    /// PostgreSQL's programs (initdb, pg_ctl).
    bin: PathBuf,
    port: u16,
    /// Whether the server's programs run as `postgres` (we are root).
    as_postgres: bool,
    /// Holds `data/` (the cluster), `log` and the Unix socket.
    dir: tempfile::TempDir,
}

impl Pg {
    /// Creates a fresh cluster and starts it on a free loopback port.
    pub fn start() -> Pg {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pg-test-")
            .tempdir()
            .expect("a temporary folder for PostgreSQL");
        // The folder's owner is who we are: root must hand it to postgres.
        let as_postgres = dir.path().metadata().expect("temp folder").uid() == 0;
        if as_postgres {
            let uid = id("-u");
            let gid = id("-g");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the test folder to postgres");
        }
        let mut pg = Pg {
            bin,
            port: 0,
            as_postgres,
            dir,
        };
        let data = pg.data();
        pg.run_ok(pg.server_cmd("initdb").args([
            "-D".as_ref(),
            data.as_os_str(),
            "-A".as_ref(),
            "trust".as_ref(),
            "-U".as_ref(),
            "plant".as_ref(),
            "--no-sync".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
        ]));
        // A port the OS called free may be taken before the server binds
        // it: try a few.
        for _ in 0..5 {
            pg.port = free_port();
            if pg.try_start() {
                return pg;
            }
        }
        pg.fail("PostgreSQL would not start on a free port");
    }

    /// The URL of database `db` as the trusted role `plant`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://plant@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (`data/` inside the test's folder).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates database `name` (owned by `plant`).
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {}", ident(name)));
    }

    /// Runs `sql` in database `db` with psql; returns its output (unaligned,
    /// tuples only) trimmed. Panics with psql's complaint if it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.run(
            Command::new(PSQL)
                .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.url(db))
                .args(["-c", sql]),
        );
        if !out.status.success() {
            self.fail(&format!(
                "psql on {db} failed: {sql}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server cleanly (`-m fast`) and waits for it.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"]);
    }

    /// Starts the stopped server again on the same port; waits until it
    /// accepts connections.
    pub fn start_again(&self) {
        if !self.try_start() {
            self.fail("PostgreSQL would not start again");
        }
    }

    /// Kills the server (`-m immediate`: no shutdown checkpoint; the next
    /// start replays the WAL, as after a crash).
    pub fn kill(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "immediate"]);
    }

    /// Adds a LOGIN SUPERUSER role `name` with `password`; TCP connections
    /// from 127.0.0.1 as that role must then give the password
    /// (scram-sha-256). Every other role stays trusted.
    pub fn add_password_role(&self, name: &str, password: &str) {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}",
                ident(name),
                literal(password)
            ),
        );
        // pg_hba.conf is read top-down, first match wins: the rule for this
        // role goes before initdb's `trust` rules. Writing over the file
        // keeps its owner (postgres).
        let hba = self.data().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let rule = format!("host all {} 127.0.0.1/32 scram-sha-256\n", ident(name));
        std::fs::write(&hba, rule + &old).expect("write pg_hba.conf");
        self.pg_ctl(&["reload"]);
        // The reload is a signal: wait until a connection as the role
        // without a password is refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("postgres://{name}@127.0.0.1:{}/postgres", self.port);
        loop {
            let out = self.run(
                Command::new(PSQL)
                    .args(["-X", "-w", "-At", "-d", &url, "-c", "SELECT 1"])
                    .env_remove("PGPASSWORD"),
            );
            if String::from_utf8_lossy(&out.stderr).contains("password") {
                return;
            }
            if Instant::now() > deadline {
                self.fail("the pg_hba.conf rule is not in force after reload");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// `pg_ctl start` on `self.port`; false if the server did not come up.
    fn try_start(&self) -> bool {
        let dir = self.dir.path().display();
        let opts = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=200 -c shared_buffers=64MB",
            self.port
        );
        let data = self.data();
        let out = self.run(self.server_cmd("pg_ctl").args([
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-o".as_ref(),
            opts.as_ref(),
            "-l".as_ref(),
            self.log().as_os_str(),
            "start".as_ref(),
        ]));
        // pg_ctl -w waits for the server to accept connections; check TCP.
        out.status.success() && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.arg("-D").arg(&data).args(args);
        self.run_ok(&mut cmd);
    }

    /// One of the server's programs, as `postgres` when we are root.
    fn server_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // postgres may not be allowed into the tests' working folder.
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, cmd: &mut Command) -> Output {
        match cmd.output() {
            Ok(out) => out,
            Err(e) => self.fail(&format!("could not run {cmd:?}: {e}")),
        }
    }

    fn run_ok(&self, cmd: &mut Command) -> Output {
        let out = self.run(cmd);
        if !out.status.success() {
            self.fail(&format!(
                "{cmd:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        out
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- PostgreSQL log ({}) ---\n{}",
            self.log().display(),
            self.log_tail()
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Stop the server before the folder goes; it may already be down.
        let data = self.data();
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["stop", "-w", "-m", "immediate"])
            .output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an initdb.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) if Path::new(PSQL).exists() => bin,
        _ => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb or {PSQL}): \
             run scripts/test.sh, which installs Debian's postgresql package"
        ),
    }
}

/// `id -u postgres` or `id -g postgres`.
fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no `postgres` system user (installed with Debian's postgresql package; see scripts/test.sh)"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Pg {
    /// Turns TLS on with this certificate and key (PEM), and refuses TCP
    /// connections from 127.0.0.1 that do not use it.
    pub fn require_ssl(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data();
        let meta = data.metadata().expect("the cluster's folder");
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let p = data.join(name);
            std::fs::write(&p, text).expect("write a TLS file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())).unwrap();
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("hostnossl all all 127.0.0.1/32 reject\n{old}"),
        )
        .expect("write pg_hba.conf");
        self.pg_ctl(&["reload"]);
        // Wait until a plain connection is refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("{}?sslmode=disable", self.url("postgres"));
        loop {
            let out = self
                .run(Command::new(PSQL).args(["-X", "-w", "-At", "-d", &url, "-c", "SELECT 1"]));
            if String::from_utf8_lossy(&out.stderr).contains("no encryption") {
                return;
            }
            if Instant::now() > deadline {
                self.fail("TLS is not required after reload");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
