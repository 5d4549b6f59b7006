//! TLS on both services: nothing but TLS 1.3 is spoken, the certificate is kept (or taken from
//! the operator's files) and its fingerprint is the one clients see, `sbfp=` names the
//! switchboard's real key, and the SCRAM login is bound to the TLS session.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod rendezvous_support;
mod server_process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2p_servers::rendezvous::RendezvousOptions;
use p2p_servers::services::{self, Services, ServicesOptions};
use p2p_servers::switchboard::SwitchboardOptions;
use p2p_servers::tls::{CERT_FILE, KEY_FILE, PinnedServerKey, ServerTls};
use rendezvous_support::{CHEAP, Client, TempDir, WAIT, tls_handshake};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use shared::identity::Fingerprint;
use shared::rendezvous::RendezvousConfig;
use shared::rendezvous::scram::ChannelBinding;

/// Both services on free ports with `tls`.
fn start(dir: &TempDir, tls: ServerTls) -> Services {
    services::start(ServicesOptions {
        rendezvous: RendezvousOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            db_path: dir.path("rendezvous.db"),
            config: RendezvousConfig {
                min_kdf: CHEAP,
                ..RendezvousConfig::default()
            },
            tls,
            ..RendezvousOptions::default()
        },
        switchboard: Some(SwitchboardOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..SwitchboardOptions::default()
        }),
        advertise_switchboard: None,
    })
    .unwrap()
}

/// Writes `bytes` on a plain TCP connection and returns everything that comes back before the
/// server closes (panics if it stays open for 5 s).
fn plaintext_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(bytes).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tcp.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {WAIT:?}; read {got:?}")
            }
            Err(_) => return got,
        }
    }
}

/// Waits (5 s at most) until `count()` is at least `want`.
fn eventually(what: &str, want: u64, count: impl Fn() -> u64) {
    let deadline = Instant::now() + WAIT;
    while count() < want {
        assert!(Instant::now() < deadline, "{what}: {} < {want}", count());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn plaintext_gets_no_protocol_line_and_a_silent_client_blocks_nobody() {
    let dir = TempDir::new("plain");
    let services = start(&dir, ServerTls::ephemeral().unwrap());
    let rendezvous = services.rendezvous().local_addr();
    let sb = services.switchboard().unwrap();
    // A client that connects and says nothing holds a handshake task, nothing else.
    let _silent = TcpStream::connect(rendezvous).unwrap();
    let _silent_sb = TcpStream::connect(sb.local_addr()).unwrap();

    for addr in [rendezvous, sb.local_addr()] {
        let got = plaintext_exchange(addr, b"VER 1 P2P1\r\n");
        // At most a TLS alert record (content type 21), never a line of the protocol.
        assert!(got.is_empty() || got[0] == 21, "{addr}: {got:?}");
        assert!(!got.windows(3).any(|w| w == b"VER"), "{addr}: {got:?}");
    }
    let got = plaintext_exchange(sb.local_addr(), &[0, 20, 1, 0, 0, 0, 0]);
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    eventually("rendezvous failed handshakes", 1, || {
        services.rendezvous().failed_handshakes()
    });
    eventually("switchboard failed handshakes", 2, || {
        sb.stats().failed_handshakes
    });

    // Meanwhile TLS clients are served at once.
    let started = Instant::now();
    let mut alice = Client::connect(rendezvous, services.fingerprint());
    alice.register("alice", "pw");
    alice.login("alice", "pw").unwrap();
    assert_eq!(alice.request("PNG", &[]).command.as_str(), "QNG");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    services.shutdown();
}

#[test]
#[allow(deprecated)] // rustls::crypto::ring::default_provider: see p2p_servers::tls
fn a_tls_1_2_client_is_refused() {
    let dir = TempDir::new("tls12");
    let services = start(&dir, ServerTls::ephemeral().unwrap());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerKey::new(services.fingerprint())))
        .with_no_client_auth();
    let addrs = [
        services.rendezvous().local_addr(),
        services.switchboard().unwrap().local_addr(),
    ];
    for addr in addrs {
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config.clone()),
            p2p_servers::tls::any_server_name(),
        )
        .unwrap();
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut result = Ok((0, 0));
        while conn.is_handshaking() {
            result = conn.complete_io(&mut tcp);
            if result.is_err() {
                break;
            }
        }
        let err = result.unwrap_err();
        assert!(err.to_string().contains("ProtocolVersion"), "{addr}: {err}");
    }
    eventually("rendezvous failed handshakes", 1, || {
        services.rendezvous().failed_handshakes()
    });
    services.shutdown();
}

#[test]
fn cfg_names_the_switchboards_real_key_and_only_that_key_is_accepted() {
    let dir = TempDir::new("sbfp");
    let tls = ServerTls::self_signed_in(dir.root(), &[]).unwrap();
    let services = start(&dir, tls.clone());
    let sb = services.switchboard().unwrap();
    assert_eq!(sb.fingerprint(), tls.fingerprint());
    let mut alice = Client::connect(services.rendezvous().local_addr(), tls.fingerprint());
    alice.register("alice", "pw");
    alice.login("alice", "pw").unwrap();
    let cfg = alice.wait_for("CFG", |l| l.command.as_str() == "CFG");
    let sbfp: Fingerprint = cfg
        .keyed("sbfp")
        .unwrap_or_else(|| panic!("no sbfp= in {cfg:?}"))
        .parse()
        .unwrap();
    assert_eq!(sbfp, sb.fingerprint());
    // sbfp= comes right after sb=.
    let at = |key: &str| cfg.params.iter().position(|p| p.starts_with(key)).unwrap();
    assert_eq!(at("sbfp="), at("sb=") + 1, "{cfg:?}");
    // The switchboard presents exactly that key: a client pinned to it gets through, one
    // pinned to any other key is refused by its own verifier.
    let tcp = TcpStream::connect(sb.local_addr()).unwrap();
    assert!(tls_handshake(tcp, sbfp).is_ok());
    let other = ServerTls::ephemeral().unwrap().fingerprint();
    let tcp = TcpStream::connect(sb.local_addr()).unwrap();
    let err = tls_handshake(tcp, other).unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
    services.shutdown();
}

#[test]
fn a_login_with_another_sessions_channel_binding_fails_like_a_wrong_password() {
    let dir = TempDir::new("binding");
    let services = start(&dir, ServerTls::ephemeral().unwrap());
    let addr = services.rendezvous().local_addr();
    let fp = services.fingerprint();
    let mut setup = Client::connect(addr, fp);
    setup.register("alice", "pw");
    // What a man in the middle who terminates TLS would have: the binding of its own session
    // with the server, not the client's.
    let mut relayed = Client::connect(addr, fp);
    let elsewhere = Client::connect(addr, fp).binding;
    assert_ne!(elsewhere, relayed.binding);
    let refused = relayed.login_bound("alice", "pw", &elsewhere).unwrap_err();
    assert_eq!(refused.command.error_code(), Some(911), "{refused:?}");
    let refused = relayed
        .login_bound("alice", "pw", &ChannelBinding([0; 32]))
        .unwrap_err();
    assert_eq!(refused.command.error_code(), Some(911), "{refused:?}");
    // The same connection with its real binding: the server computed the same value.
    relayed.login("alice", "pw").unwrap();
    assert_eq!(services.rendezvous().online_count(), 1);
    services.shutdown();
}

// ---------------------------------------------------------------------------------------------
// The binary

/// Starts the binary (rendezvous and switchboard on free ports, no STUN) with `extra` flags;
/// returns the child, the log and the rendezvous address.
fn spawn(db: &str, extra: &[&str]) -> (server_process::Running, String, SocketAddr) {
    let mut args = server_process::rendezvous_args(db, true);
    args.extend_from_slice(extra);
    server_process::start_rendezvous(&args)
}

/// `stun-server --print-fingerprint` with `args`: its stdout (trimmed) or its stderr.
fn print_fingerprint(args: &[&str]) -> Result<String, String> {
    let out = Command::new(server_process::BIN)
        .args(args)
        .arg("--print-fingerprint")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

fn fingerprint_of_pem(path: &Path) -> Fingerprint {
    let der = CertificateDer::from_pem_file(path).unwrap();
    Fingerprint::of_certificate(&der).unwrap()
}

#[test]
fn the_generated_certificate_is_kept_across_restarts_and_is_what_clients_see() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("persist");
    let db = dir.db();
    // --print-fingerprint first: it creates the certificate the server will use.
    let printed = print_fingerprint(&["--db", &db]).unwrap();
    let (running, log, addr) = spawn(&db, &[]);
    let logged = server_process::logged_fingerprint(&log);
    assert_eq!(printed, logged.to_string());
    assert_eq!(fingerprint_of_pem(&dir.path(CERT_FILE)), logged);
    let mode = std::fs::metadata(dir.path(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // What a client sees is what was logged: pinned to it, the handshake succeeds.
    let mut client = Client::connect(addr, logged);
    assert_eq!(client.request("PNG", &[]).command.as_str(), "QNG");
    assert!(server_process::interrupt_and_wait(running).success());

    let (running, log, addr) = spawn(&db, &[]);
    assert_eq!(server_process::logged_fingerprint(&log), logged);
    let mut client = Client::connect(addr, logged);
    assert_eq!(client.request("PNG", &[]).command.as_str(), "QNG");
    assert!(server_process::interrupt_and_wait(running).success());
    assert_eq!(print_fingerprint(&["--db", &db]).unwrap(), printed);
}

#[test]
fn certificate_files_given_on_the_command_line_are_used_and_checked() {
    let dir = TempDir::new("files");
    let db = dir.db();
    let write_pair = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["rendezvous.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.path(&format!("{name}.crt")),
            dir.path(&format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (
            c.to_str().unwrap().to_owned(),
            k.to_str().unwrap().to_owned(),
        )
    };
    let (cert, key) = write_pair("a");
    let expected = fingerprint_of_pem(Path::new(&cert));
    let files = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let (running, log, addr) = spawn(&db, &files);
    assert_eq!(server_process::logged_fingerprint(&log), expected);
    assert!(
        log.contains(&cert),
        "the log does not name the certificate:\n{log}"
    );
    let mut alice = Client::connect(addr, expected);
    alice.register("alice", "pw");
    alice.login("alice", "pw").unwrap();
    let cfg = alice.wait_for("CFG", |l| l.command.as_str() == "CFG");
    assert_eq!(cfg.keyed("sbfp"), Some(expected.to_string().as_str()));
    assert!(server_process::interrupt_and_wait(running).success());
    // Nothing was generated next to the database.
    assert!(!dir.path(CERT_FILE).exists() && !dir.path(KEY_FILE).exists());
    let mut with_db = vec!["--db", db.as_str()];
    with_db.extend_from_slice(&files);
    assert_eq!(print_fingerprint(&with_db).unwrap(), expected.to_string());

    // A key that is not the certificate's, a missing file, half a pair: one-line errors.
    let (_, other_key) = write_pair("b");
    let err = print_fingerprint(&["--tls-cert", &cert, "--tls-key", &other_key]).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not belong"), "{err}");
    let missing = dir.path("missing.crt");
    let missing = missing.to_str().unwrap();
    let err = print_fingerprint(&["--tls-cert", missing, "--tls-key", &key]).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(missing), "{err}");
    let err = print_fingerprint(&["--tls-cert", &cert]).unwrap_err();
    assert!(err.contains("--tls-key"), "{err}");
    let help = Command::new(server_process::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in ["--tls-cert", "--tls-key", "--print-fingerprint"] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}
