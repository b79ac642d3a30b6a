//! The `station` binary: parses the command line, sets up logging and runs
//! the chosen command.

use clap::Parser;
use station::cli::{
    AuditCommand, BoardCommand, CaCommand, Cli, Command, OutboxCommand, PlantCommand,
    PlantExportCommand, SymkeyCommand, TlsCommand,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            demo,
        } => serve(config, listen, demo).await,
        Command::Ca {
            command: CaCommand::Init { config, force },
        } => station::cli::ca_init(&config, force).await,
        Command::Ca {
            command: CaCommand::Request { config, out },
        } => station::cli::ca_request(&config, out.as_deref()),
        Command::Ca {
            command: CaCommand::Install { config, cert, root },
        } => station::cli::ca_install(&config, &cert, root.as_deref()),
        Command::Ca {
            command: CaCommand::Show { config },
        } => station::cli::ca_show(&config),
        Command::Ca {
            command: CaCommand::Crl { config, out },
        } => station::cli::ca_crl(&config, &out),
        Command::Tls {
            command:
                TlsCommand::Request {
                    config,
                    dns,
                    ips,
                    out,
                },
        } => station::cli::tls_request(&config, &dns, &ips, out.as_deref()),
        Command::Symkey {
            command: SymkeyCommand::Init { config },
        } => station::cli::symkey_init(&config),
        Command::Symkey {
            command: SymkeyCommand::Show { config },
        } => station::cli::symkey_show(&config),
        Command::Simulate(a) => station::cli::simulate(&a).await,
        Command::Report {
            config,
            range,
            format,
            out,
        } => station::cli::report_cmd::report(&config, &range, &format, out.as_ref()),
        Command::Export {
            command:
                station::cli::ExportCommand::Units {
                    config,
                    range,
                    format,
                    out,
                },
        } => station::cli::report_cmd::export_units(&config, &range, &format, out.as_ref()),
        Command::Check { config } => {
            return if station::cli::check(&config).await {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            };
        }
        Command::Device { command } => station::cli::device(command),
        Command::Board {
            command:
                BoardCommand::Override {
                    guid,
                    reason,
                    by,
                    config,
                },
        } => station::cli::board_override(&guid, &reason, &by, &config).await,
        Command::Outbox {
            command:
                OutboxCommand::List {
                    state,
                    limit,
                    config,
                },
        } => station::cli::outbox_list(state.as_deref(), limit, &config),
        Command::Outbox {
            command: OutboxCommand::Retry { guid, config },
        } => station::cli::outbox_retry(guid.as_deref(), &config),
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            return match station::cli::audit_verify(&config) {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("station: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Command::Audit {
            command: AuditCommand::Export { out, config },
        } => station::cli::audit_export(out.as_deref(), &config),
        Command::User { command } => station::cli::user_command(&command),
        Command::Token { command } => station::cli::token_command(&command),
        Command::Plant { command } => return plant(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("station: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `station plant ...`; `verify` exits non-zero when a chain is broken.
async fn plant(command: PlantCommand) -> std::process::ExitCode {
    let result = match command {
        PlantCommand::Migrate { config } => station::cli::plant_migrate(&config).await,
        PlantCommand::Report {
            config,
            range,
            scope,
            format,
            out,
        } => station::cli::plant_report(&config, &range, &scope, &format, out.as_ref()).await,
        PlantCommand::Export {
            command:
                PlantExportCommand::Units {
                    config,
                    range,
                    scope,
                    format,
                    out,
                },
        } => station::cli::plant_export_units(&config, &range, &scope, &format, out.as_ref()).await,
        PlantCommand::Conflicts { config, format } => {
            station::cli::plant_conflicts(&config, &format).await
        }
        PlantCommand::Verify { config } => match station::cli::plant_verify(&config).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("station: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: station::cli::ConfigArgs,
    listen: Option<std::net::SocketAddr>,
    demo: Option<u16>,
) -> anyhow::Result<()> {
    let mut cfg = config.load()?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(n) = demo {
        if n == 0 || n > 64 {
            anyhow::bail!("--demo {n}: choose 1 to 64 simulated boards");
        }
        cfg.use_demo_slots(n);
    }
    let mut app = station::app::start(&cfg, demo.is_some()).await?;
    println!(
        "station {} listening on {}://{}",
        cfg.station_id,
        if app.https { "https" } else { "http" },
        app.addr
    );
    if let Some((user, password, token)) = &app.demo_access {
        println!("demo sign-in: user name {user}, password {password}");
        println!("demo API token: {token}");
    }
    // Ctrl-C or a service manager's SIGTERM: stop cleanly, so that the
    // simulated boards' swtpm processes go with the station.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(anyhow::Error::from),
        _ = term.recv() => Ok(()),
        r = app.wait() => r,
    };
    tracing::info!("stopping");
    app.stop();
    drop(app);
    result
}
