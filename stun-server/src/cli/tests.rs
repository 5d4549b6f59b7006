//! Unit tests of the flags, the config file and their merge.

use super::*;

fn settings(args: &[&str]) -> Settings {
    let mut argv = vec!["stun-server"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap().settings().unwrap()
}

#[test]
fn no_arguments_is_the_loopback_pair() {
    let o = settings(&[]).server_options();
    assert_eq!(o.primary, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(o.alternate, Some(IpAddr::from([127, 0, 0, 2])));
    assert_eq!((o.port, o.alt_port), (3478, 3479));
    assert!(o.tcp);
}

#[test]
fn primary_alone_means_single_address() {
    let o = settings(&["--primary", "192.0.2.1"]).server_options();
    assert_eq!(o.alternate, None);
    let o = settings(&["--single-address"]).server_options();
    assert_eq!(o.alternate, None);
}

#[test]
fn flags_override_the_file_and_print_config_round_trips() {
    let file = "primary = \"10.0.0.1\"\nalternate = \"10.0.0.2\"\nport = 4000\n\
                alt_port = 4001\nrate_limit = 5\nstats_interval = 7\n";
    let mut s = parse_file(file).unwrap();
    s.resolve();
    assert_eq!(s.stats_interval(), 7);
    let reparsed = {
        let mut r = parse_file(&s.to_toml().unwrap()).unwrap();
        r.resolve();
        r
    };
    assert_eq!(reparsed, s);
    let dir = std::env::temp_dir().join(format!("stun-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, file).unwrap();
    let path = path.to_str().unwrap();
    let o = settings(&["-c", path, "--port", "5000", "--no-tcp"]).server_options();
    assert_eq!(o.port, 5000);
    assert_eq!(o.alt_port, 4001);
    assert_eq!(o.rate_limit.per_second, 5);
    assert!(!o.tcp);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rendezvous_keys_resolve_round_trip_and_are_checked() {
    let s = settings(&[]);
    assert!(s.stun_enabled());
    assert_eq!(
        s.rendezvous_listen(),
        Some("127.0.0.1:1863".parse().unwrap())
    );
    let o = s.rendezvous_options(None).unwrap().unwrap();
    assert!(o.config.registration_open);
    assert_eq!(o.config.switchboard_addr, None);
    let s = settings(&[
        "--no-rendezvous",
        "--registration",
        "closed",
        "--min-kdf",
        "argon2id:m=8:t=1:p=1",
        "--ping-interval",
        "5",
        "--idle-timeout",
        "12",
        "--db",
        "/tmp/x/r.db",
    ]);
    assert_eq!(s.rendezvous_listen(), None);
    let text = s.to_toml().unwrap();
    assert!(text.contains("rendezvous = false"), "{text}");
    assert!(text.contains("switchboard = false"), "{text}");
    let mut again = parse_file(&text).unwrap();
    again.resolve();
    assert_eq!(again.to_toml().unwrap(), text);
    let s = settings(&["--no-stun", "--rendezvous", "127.0.0.1:0"]);
    let stun = Some("127.0.0.1:3478".parse().unwrap());
    let o = s.rendezvous_options(stun).unwrap().unwrap();
    assert!(!s.stun_enabled());
    assert_eq!(o.listen.port(), 0);
    assert_eq!(o.config.stun_addr, stun);
    let mut file = parse_file(
        "rendezvous = \"127.0.0.1:4000\"\nregistration = \"closed\"\n\
                               ping_interval = 5\nidle_timeout = 9\n",
    )
    .unwrap();
    file.resolve();
    let o = file.rendezvous_options(None).unwrap().unwrap();
    assert_eq!(o.listen.port(), 4000);
    assert!(!o.config.registration_open);
    assert_eq!(o.config.idle_timeout, Duration::from_secs(9));
    let bad = |args: &[&str]| {
        let mut argv = vec!["stun-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.settings().is_err())
            .unwrap_or(true)
    };
    assert!(bad(&["--min-kdf", "md5"]));
    assert!(bad(&["--ping-interval", "30", "--idle-timeout", "30"]));
    assert!(bad(&["--ping-interval", "0"]));
    assert!(bad(&["--registration", "maybe"]));
    assert!(bad(&["--rendezvous", "127.0.0.1:1", "--no-rendezvous"]));
    let mut file = parse_file("min_kdf = \"argon2id:m=1\"\n").unwrap();
    file.resolve();
    assert!(file.validate().is_err());
}

#[test]
fn switchboard_keys_resolve_round_trip_and_are_checked() {
    let sb = |s: &Settings| {
        s.services_options(None, ServerTls::ephemeral().unwrap())
            .unwrap()
            .unwrap()
    };
    // On by default, next to the rendezvous.
    let s = settings(&[]);
    assert_eq!(
        s.switchboard_listen(),
        Some("127.0.0.1:1865".parse().unwrap())
    );
    let o = sb(&s);
    assert_eq!(o.switchboard.unwrap().listen.port(), 1865);
    assert_eq!(o.advertise_switchboard, None);
    assert_eq!(o.rendezvous.listen.port(), 1863);
    assert!(
        s.to_toml()
            .unwrap()
            .contains("switchboard = \"127.0.0.1:1865\"")
    );
    // A free port and a public address to advertise; they survive --print-config.
    let s = settings(&[
        "--switchboard",
        "127.0.0.1:0",
        "--advertise-switchboard",
        "203.0.113.5:1865",
    ]);
    let o = sb(&s);
    assert_eq!(
        o.switchboard.unwrap().listen,
        "127.0.0.1:0".parse().unwrap()
    );
    assert_eq!(
        o.advertise_switchboard,
        Some("203.0.113.5:1865".parse().unwrap())
    );
    let text = s.to_toml().unwrap();
    assert!(text.contains("switchboard = \"127.0.0.1:0\""), "{text}");
    assert!(
        text.contains("advertise_switchboard = \"203.0.113.5:1865\""),
        "{text}"
    );
    let mut again = parse_file(&text).unwrap();
    again.resolve();
    assert_eq!(again.to_toml().unwrap(), text);
    // Off.
    let s = settings(&["--no-switchboard"]);
    assert_eq!(s.switchboard_listen(), None);
    assert!(sb(&s).switchboard.is_none());
    assert!(s.to_toml().unwrap().contains("switchboard = false"));
    // The file: `false`, `true`, an address; flags win.
    let file = |text: &str| {
        let mut f = parse_file(text).unwrap();
        f.resolve();
        f.validate().map(|()| f.switchboard_listen())
    };
    assert_eq!(file("switchboard = false\n").unwrap(), None);
    assert_eq!(
        file("switchboard = true\n").unwrap(),
        Some("127.0.0.1:1865".parse().unwrap())
    );
    assert_eq!(
        file("switchboard = \"127.0.0.1:4001\"\n").unwrap(),
        Some("127.0.0.1:4001".parse().unwrap())
    );
    assert!(parse_file("switchboard = \"x\"\n").is_err());
    // No rendezvous, no switchboard (nothing would issue its tickets).
    assert_eq!(settings(&["--no-rendezvous"]).switchboard_listen(), None);
    let bad = |args: &[&str]| {
        let mut argv = vec!["stun-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.settings().is_err())
            .unwrap_or(true)
    };
    assert!(bad(&["--no-rendezvous", "--switchboard", "127.0.0.1:1865"]));
    assert!(bad(&[
        "--no-switchboard",
        "--switchboard",
        "127.0.0.1:1865"
    ]));
    assert!(bad(&[
        "--no-switchboard",
        "--advertise-switchboard",
        "192.0.2.1:1865"
    ]));
    assert!(file("rendezvous = false\nswitchboard = true\n").is_err());
    assert!(file("switchboard = false\nadvertise_switchboard = \"192.0.2.1:1\"\n").is_err());
}

#[test]
fn tls_files_go_together_and_round_trip() {
    let bad = |args: &[&str]| {
        let mut argv = vec!["stun-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())
            .and_then(|c| c.settings().map_err(|e| e.to_string()))
            .unwrap_err()
    };
    let err = bad(&["--tls-cert", "/etc/c.pem"]);
    assert!(err.contains("--tls-key"), "{err}");
    let err = bad(&["--tls-key", "/etc/k.pem"]);
    assert!(err.contains("--tls-cert"), "{err}");
    let mut half = parse_file("tls_cert = \"/etc/c.pem\"\n").unwrap();
    half.resolve();
    let err = half.validate().unwrap_err().to_string();
    assert!(err.contains("go together"), "{err}");
    let s = settings(&["--tls-cert", "/etc/c.pem", "--tls-key", "/etc/k.pem"]);
    let text = s.to_toml().unwrap();
    assert!(text.contains("tls_cert = \"/etc/c.pem\""), "{text}");
    assert!(text.contains("tls_key = \"/etc/k.pem\""), "{text}");
    let mut again = parse_file(&text).unwrap();
    again.resolve();
    assert_eq!(again.to_toml().unwrap(), text);
    // A missing file is a clear error naming it.
    let err = s.server_tls().unwrap_err().to_string();
    assert!(err.contains("/etc/c.pem"), "{err}");
}

#[test]
fn unknown_keys_in_the_file_are_errors_that_list_the_real_keys() {
    let err = parse_file("primray = \"10.0.0.1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("primray"), "{err}");
    for key in [
        "primary",
        "alt_port",
        "stats_interval",
        "rendezvous",
        "tls_key",
    ] {
        assert!(err.contains(&format!("`{key}`")), "{key} not listed: {err}");
    }
    assert!(!err.contains("_opt"), "{err}");
    // Every key --print-config writes is accepted.
    let printed = settings(&[]).to_toml().unwrap();
    let listed: Vec<&str> = err.split('`').skip(3).step_by(2).collect();
    for line in printed.lines() {
        let key = line.split(" = ").next().unwrap();
        assert!(listed.contains(&key), "{key} is not accepted: {err}");
    }
    assert!(parse_file("stats_interval_opt = 5\n").is_err());
    assert!(parse_file("stats_interval = -1\n").is_err());
    let mut s = parse_file("stats_interval = 5\n").unwrap();
    s.resolve();
    assert_eq!(s.stats_interval(), 5);
}

#[test]
fn a_public_primary_moves_the_rendezvous_and_the_switchboard_there() {
    let s = settings(&["--primary", "198.51.100.1", "--alternate", "198.51.100.2"]);
    assert_eq!(
        s.rendezvous_listen(),
        Some("198.51.100.1:1863".parse().unwrap())
    );
    assert_eq!(
        s.switchboard_listen(),
        Some("198.51.100.1:1865".parse().unwrap())
    );
    let text = s.to_toml().unwrap();
    assert!(
        text.contains("rendezvous = \"198.51.100.1:1863\""),
        "{text}"
    );
    // Explicit addresses win; a loopback primary keeps 127.0.0.1.
    let s = settings(&[
        "--primary",
        "198.51.100.1",
        "--rendezvous",
        "127.0.0.1:4000",
        "--switchboard",
        "0.0.0.0:4001",
    ]);
    assert_eq!(
        s.rendezvous_listen(),
        Some("127.0.0.1:4000".parse().unwrap())
    );
    assert_eq!(
        s.switchboard_listen(),
        Some("0.0.0.0:4001".parse().unwrap())
    );
    let s = settings(&["--primary", "127.0.0.5", "--alternate", "127.0.0.6"]);
    assert_eq!(
        s.rendezvous_listen(),
        Some("127.0.0.1:1863".parse().unwrap())
    );
    let s = settings(&["--primary", "2001:db8::1"]);
    assert_eq!(
        s.switchboard_listen(),
        Some("[2001:db8::1]:1865".parse().unwrap())
    );
    // From the file too.
    let mut f = parse_file("primary = \"203.0.113.9\"\n").unwrap();
    f.resolve();
    assert_eq!(
        f.rendezvous_listen(),
        Some("203.0.113.9:1863".parse().unwrap())
    );
}

#[test]
fn help_lists_the_flags_in_their_order_and_every_key_has_a_flag() {
    use clap::CommandFactory;
    // `display_order` (STUN_ORDER) keeps --stats-interval where --help has always shown it
    // although it is the last key of the file; this catches a flag added before it.
    let help = Cli::command().render_help().to_string();
    // The first long flag of each line that starts with a flag: the argument list itself.
    let flags: Vec<&str> = help
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with("--")))
        .collect();
    let position = |flag: &str| flags.iter().position(|f| *f == flag).unwrap();
    for pair in [
        ["--socket-buffer", "--stats-interval"],
        ["--stats-interval", "--no-stun"],
        ["--no-stun", "--rendezvous"],
        ["--tls-key", "--metrics"],
        ["--metrics", "--peer-node"],
        ["--drain-timeout", "--cluster"],
        ["--cluster", "--cluster-ca"],
        ["--cluster-user", "--cluster-password-file"],
        ["--cluster-password-file", "--print-fingerprint"],
    ] {
        assert_eq!(
            position(pair[0]) + 1,
            position(pair[1]),
            "{pair:?} in {flags:?}"
        );
    }
    // Every key of the file is also a flag (under its own name or as --no-KEY).
    for line in settings(&[]).to_toml().unwrap().lines() {
        let key = line.split(" = ").next().unwrap().replace('_', "-");
        let named = flags.contains(&format!("--{key}").as_str());
        let negated = flags.contains(&format!("--no-{key}").as_str());
        assert!(named || negated, "key {key} has no flag");
    }
}

#[test]
fn metrics_are_off_unless_given_by_flag_or_file() {
    assert_eq!(settings(&[]).metrics(), None);
    assert!(!settings(&[]).to_toml().unwrap().contains("metrics"));
    let s = settings(&["--metrics", "127.0.0.1:9100"]);
    assert_eq!(s.metrics(), Some("127.0.0.1:9100".parse().unwrap()));
    let text = s.to_toml().unwrap();
    assert!(text.contains("metrics = \"127.0.0.1:9100\""), "{text}");
    let mut again = parse_file(&text).unwrap();
    again.resolve();
    assert_eq!(again.metrics(), s.metrics());
    assert!(parse_file("metrics = \"not an address\"\n").is_err());
}

#[test]
fn relay_limits_take_byte_counts_and_reach_the_switchboard() {
    let config = |args: &[&str]| {
        settings(args)
            .services_options(None, ServerTls::ephemeral().unwrap())
            .unwrap()
            .unwrap()
            .switchboard
            .unwrap()
            .config
    };
    let default = config(&[]);
    assert_eq!((default.rate, default.byte_cap), (1 << 20, 1 << 30));
    let raised = config(&["--relay-rate", "50M", "--relay-session-cap", "2G"]);
    assert_eq!((raised.rate, raised.byte_cap), (50 << 20, 2 << 30));
    assert!(raised.burst >= raised.rate, "a second's worth may burst");
    let unlimited = config(&["--relay-rate", "0", "--relay-session-cap", "0"]);
    assert_eq!((unlimited.rate, unlimited.byte_cap), (0, u64::MAX));
    assert_eq!(byte_count("512k"), Ok(512 << 10));
    assert_eq!(byte_count("1048576"), Ok(1 << 20));
    for bad in ["", "M", "1.5M", "-1", "5X", "99999999999T"] {
        assert!(byte_count(bad).is_err(), "{bad:?}");
    }
    // They survive --print-config.
    let toml = settings(&["--relay-rate", "1K"]).to_toml().unwrap();
    assert!(toml.contains("relay_rate = 1024"), "{toml}");
}

#[test]
fn peer_nodes_come_from_repeated_flags_or_a_list_in_the_file() {
    let s = settings(&[
        "--peer-node",
        "127.0.0.1:1901",
        "--peer-node",
        "127.0.0.2:1902",
        "--max-sessions",
        "5",
    ]);
    let peers: Vec<SocketAddr> = vec![
        "127.0.0.1:1901".parse().unwrap(),
        "127.0.0.2:1902".parse().unwrap(),
    ];
    assert_eq!(s.peer_nodes(), peers);
    let options = s.rendezvous_options(None).unwrap().unwrap();
    assert_eq!(options.peer_nodes, peers);
    assert_eq!(options.config.max_sessions, Some(5));
    assert_eq!(s.drain_timeout(), Duration::from_secs(30));
    let mut f = parse_file("peer_node = [\"127.0.0.1:1901\"]\ndrain_timeout = 5\n").unwrap();
    f.resolve();
    assert_eq!(f.peer_nodes(), peers[..1]);
    assert_eq!(f.drain_timeout(), Duration::from_secs(5));
    // Unlimited by default, and the defaults print as valid keys.
    let d = settings(&[]);
    assert_eq!(d.max_sessions(), None);
    assert!(d.to_toml().unwrap().contains("peer_node = []"));
}

#[test]
fn a_node_is_not_its_own_peer() {
    let cli = Cli::try_parse_from([
        "stun-server",
        "--rendezvous",
        "127.0.0.1:1999",
        "--peer-node",
        "127.0.0.1:1999",
    ])
    .unwrap();
    let e = cli.settings().unwrap_err().to_string();
    assert!(e.contains("own rendezvous address"), "{e}");
}

#[test]
fn a_cluster_needs_nats_postgres_and_a_reachable_address() {
    let error = |args: &[&str]| {
        let mut argv = vec!["stun-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap()
            .settings()
            .unwrap_err()
            .to_string()
    };
    let pg = "postgres://rdv@127.0.0.1:5432/rdv";
    let e = error(&["--cluster", "127.0.0.1:4222", "--store", pg]);
    assert!(e.contains("nats://HOST:PORT"), "{e}");
    let e = error(&["--cluster", "nats://127.0.0.1:4222"]);
    assert!(e.contains("--store postgres://"), "{e}");
    let e = error(&[
        "--cluster",
        "nats://127.0.0.1:4222",
        "--store",
        pg,
        "--rendezvous",
        "0.0.0.0:1863",
    ]);
    assert!(e.contains("not an unspecified one"), "{e}");
    // Given right, by flag or by file, it reaches the rendezvous options.
    let s = settings(&["--cluster", "nats://127.0.0.1:4222", "--store", pg]);
    let options = s.rendezvous_options(None).unwrap().unwrap();
    assert_eq!(
        options.cluster,
        Some(p2p_servers::rendezvous::ClusterConnect::plain(
            "nats://127.0.0.1:4222"
        ))
    );
    let mut f = parse_file(&format!(
        "cluster = \"nats://127.0.0.1:4222\"\nstore = \"{pg}\"\n"
    ))
    .unwrap();
    f.resolve();
    assert_eq!(f.cluster_url(), Some("nats://127.0.0.1:4222"));
    // Off by default.
    assert_eq!(settings(&[]).cluster_url(), None);
}
