//! Entry point: parses the command line, sets up logging, runs one command
//! and maps its result to an exit code (0 ok, 1 check found the file
//! invalid, 2 error).

use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use ip_masq::{
    agent,
    cli::{Cli, Command, LogFormat, RunArgs},
    commands,
    error::error_chain,
    kernel::{
        iptables::{self, RuleSet},
        netlink::Selector,
    },
    model::Family,
    options::AgentOptions,
};
use tracing::warn;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbosity, cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) if args.diff.is_some() || args.against_running.is_some() => {
            let comparison = match (&args.diff, &args.against_running) {
                (Some(files), _) => commands::preview::Comparison::Files {
                    old: &files[0],
                    new: &files[1],
                },
                (None, Some(new)) => commands::preview::Comparison::Running {
                    new,
                    pin_path: &args.pin_path,
                },
                (None, None) => unreachable!("guarded above"),
            };
            match commands::preview::preview(&(&args).into(), &comparison) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("error: {}", error_chain(&err));
                    return ExitCode::from(if err.is_invalid_config() { 1 } else { 2 });
                }
            }
        }
        Command::Check(args) => match commands::check(&(&args).into()) {
            Ok(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                if args.json && err.is_invalid_config() {
                    print!("{}", commands::check_rejection_json(&(&args).into(), &err));
                }
                eprintln!("error: {}", error_chain(&err));
                // 1 means "the file is invalid"; not being able to read it
                // is an error like any other.
                return ExitCode::from(if err.is_invalid_config() { 1 } else { 2 });
            }
        },
        Command::Snat(args) => commands::snat::run(args.to_ports.as_ref(), args.top, args.json)
            .map(|text| print!("{text}"))
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Dump(args) => commands::dump(&(&args).into())
            .map(|text| print!("{text}"))
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Cleanup(args) => commands::cleanup::cleanup(&(&args).into())
            .map(|text| print!("{text}"))
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Status(args) => commands::status::run(&(&args.installed).into())
            .map(ip_masq::commands::installed::Report::print)
            .map_err(Into::into),
        Command::Doctor(args) => commands::doctor::run(&(&args.installed).into())
            .map(ip_masq::commands::installed::Report::print)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let selector = Selector::parse(args.interfaces.as_deref())?;
    let random_fully = args.random_fully && {
        let version = iptables::iptables_version(Family::V4)?;
        let supported = iptables::supports_random_fully(&version);
        if !supported {
            warn!(%version, "iptables older than 1.6.2: MASQUERADE without --random-fully");
        }
        supported
    };
    let options = AgentOptions {
        config_path: args.config.config.clone(),
        parse: ip_masq::options::ConfigOptions::from(&args.config).parse_options(),
        rules: RuleSet {
            chain: args.masq_chain,
            mark: args.mark,
            random_fully,
            datapath: args.datapath,
            pin_dir: args.pin_path.clone(),
            to_ports: args.to_ports.unwrap_or_default(),
        },
        selector,
        pin_dir: args.pin_path,
        max_entries: args.config.max_cidrs,
        metrics_address: args.metrics_address,
        state_dir: args.state_dir,
        max_config_bytes: args.config.max_config_bytes as usize,
        flush: args.flush_conntrack,
        config_dir: ip_masq::options::ConfigOptions::from(&args.config).config_dir,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(agent::run(options))?;
    Ok(())
}

fn init_logging(verbosity: u8, format: LogFormat) {
    let level = match verbosity {
        0 => "warn",
        1 | 2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    // netlink-packet-route warns about every attribute newer than itself;
    // that is noise for operators, so it only speaks up for errors.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},netlink_packet_route=error")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
