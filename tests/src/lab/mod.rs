//! A lab of real kernel NATs: network namespaces, veth pairs and nftables, as root.
//!
//! # Design
//!
//! Every node (STUN server host, "internet core" router, NAT routers, client hosts) is a named
//! network namespace created with `ip netns add`, wired with veth pairs
//! (`ip -n NS link add NAME type veth peer name NAME2 netns NS2`), addressed with
//! `ip -n NS addr/route`, tuned with `ip netns exec NS sysctl -w` and given its NAT behaviour
//! with `ip netns exec NS nft -f -` (the ruleset on stdin, see `nft.rs`). Everything is
//! driven from Rust with [`std::process::Command`]; a failing command is reported with its
//! stderr ([`LabError::Command`]).
//!
//! We deliberately do **not** use the `patchbay` crate (0.7), although it builds here and has
//! NAT presets on RFC 4787's axes. An evaluation found:
//! - its hairpin rule (`ct status dnat masquerade` with no interface match) also rewrites
//!   inbound full-cone traffic;
//! - its full-cone map has a hard-coded 300 s timeout that ignores the configured one, and is
//!   keyed on the pre-translation port, so two hosts behind one NAT using the same port break;
//! - its loss uses `tc netem`, which this kernel lacks, and silently does nothing;
//! - it has no option for a router input chain, which the conntrack race (docs/DESIGN.md section 5)
//!   needs to switch on and off;
//! - it pulls in ~145 crates and takes 2-3 minutes to build.
//!
//! The rules follow a recipe verified by hand on this kernel (see `nft.rs`), with these
//! changes, each covered by a test in `tests/tests/lab_shapes.rs`:
//! - the full-cone map `ext` is refreshed by traffic in both directions (chains `learn` and
//!   `keep`), as conntrack entries are and as the simulator's bindings are; learning from
//!   outbound packets only let a mapping with only inbound traffic expire for third parties
//!   while its flow was still alive (the simulator kept it);
//! - the inside endpoint of an inbound-initiated flow is taken from its reply tuple, so a
//!   re-learnt entry never points at the remote;
//! - routers send no ICMP redirects (a hairpinned packet leaves on the interface it came in
//!   on, and a redirect would teach the host a wrong next hop);
//! - the input chain is named `guard`.
//!
//! # Names and cleanup
//!
//! Namespaces are named `p2pl<pid>-<n>-<role>` (`n` counts labs within the process), so
//! parallel labs and parallel test processes never clash. [`Lab::new`] first deletes stale
//! `p2pl` namespaces whose pid is no longer alive; [`Drop`] kills whatever still runs inside
//! the lab's namespaces and deletes them (also when a test panics).
//!
//! # Address plan (inside our namespaces only)
//!
//! - server host: [`SERVER_IPS`] (198.51.100.1 and .2/24) behind the core (198.51.100.254);
//! - core: a forwarding router (a real routing hop: it decrements TTL);
//! - router `i` attached to the core: WAN 203.0.113.(8i+2)/29, core side 203.0.113.(8i+1);
//!   a translating router's LAN is 10.(i+1).0.0/24 (router .1, hosts .2, .3, ...); a
//!   non-translating one (firewall, blocked) routes 192.0.2.(16i)/28 (the core routes it via
//!   the router's WAN address);
//! - a public host (`NatType::None`) at site `i`: 198.18.i.2/24 directly on the core;
//! - a carrier router (double NAT): LAN 100.64.i.0/24, the home router's WAN at 100.64.i.2.
//!
//! Every LAN is a bridge named `lan` in the router namespace, so several hosts (or a home
//! router) can share it.

pub mod chat;
mod harness;
mod nft;
pub mod probe;

pub use harness::{coturn_command, recv_text, serial, server_addrs, stun_server_command};

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::nat_types::{NatType, RouterOptions};

/// The prefix of every namespace a lab creates.
pub const NS_PREFIX: &str = "p2pl";

/// The server host's two addresses (the same as the simulator's).
pub const SERVER_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
];

/// The core's address on the server's network (the server's gateway).
const CORE_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

/// Why a lab cannot be built on this machine (not root, or a tool missing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("NAT lab unavailable: {0}")]
pub struct LabUnavailable(pub String);

/// A failure while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The machine cannot host a lab.
    #[error(transparent)]
    Unavailable(#[from] LabUnavailable),
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// A command or system call could not be run at all.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The shape asked for cannot be built.
    #[error("unsupported lab shape: {0}")]
    Unsupported(String),
}

/// Absolute paths of the tools a lab needs.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    nft: PathBuf,
    conntrack: PathBuf,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn tools() -> Result<&'static Tools, LabUnavailable> {
    static TOOLS: OnceLock<Result<Tools, LabUnavailable>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err(LabUnavailable("not running as root".into()));
            }
            let get = |name| {
                find_tool(name).ok_or_else(|| {
                    LabUnavailable(format!(
                        "`{name}` not found (apt-get install iproute2 nftables conntrack)"
                    ))
                })
            };
            Ok(Tools {
                ip: get("ip")?,
                nft: get("nft")?,
                conntrack: get("conntrack")?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether a lab can be built here (root, with `ip`, `nft` and `conntrack`).
pub fn available() -> Result<(), LabUnavailable> {
    tools().map(|_| ())
}

/// The shared prologue of every lab test: `true` if a lab can be built. Otherwise prints a
/// loud `SKIPPED: needs root and nftables` line to stderr and returns `false`, except when
/// the environment has `CI=true`, where it panics (a CI run must not silently skip).
pub fn require_lab() -> bool {
    match available() {
        Ok(()) => true,
        Err(e) => {
            let line = format!("SKIPPED: needs root and nftables ({e})");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{line}; lab prerequisites are mandatory when CI=true");
            }
            // Straight to the stderr handle: libtest captures `eprintln!`, and this line must
            // be seen.
            let _ = writeln!(io::stderr(), "{line}");
            false
        }
    }
}

/// Whether `NATLAB_TRACE` is set: every lab command is then printed with its duration.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("NATLAB_TRACE").is_some())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` (with `input` on stdin if given) and fails with its stderr unless it succeeds.
fn run(cmd: &mut Command, input: Option<&str>) -> Result<Output, LabError> {
    let command = describe(cmd);
    let io_err = |source| LabError::Io {
        what: format!("run `{command}`"),
        source,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(io_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(io_err)?;
    }
    let out = child.wait_with_output().map_err(io_err)?;
    if trace() {
        eprintln!("natlab: {:>5} ms  {command}", started.elapsed().as_millis());
    }
    if out.status.success() {
        Ok(out)
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if let Some(text) = input {
            stderr.push_str("\n--- input ---\n");
            stderr.push_str(text);
        }
        Err(LabError::Command {
            command,
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// A host (a namespace with addresses) in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host's role in the shape (`server`, `client0`, `client1`, ...).
    pub role: String,
    /// The namespace's name (`ip netns exec NS ...`).
    pub ns: String,
    /// The host's addresses, primary first.
    pub ips: Vec<Ipv4Addr>,
}

impl Host {
    /// The primary address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ips[0]
    }
}

/// A router in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// The router's index in the lab (its subnets derive from it).
    pub index: u8,
    /// The namespace's name.
    pub ns: String,
    /// The router's options.
    pub options: RouterOptions,
    /// The outside address (the address translated traffic leaves with).
    pub wan_ip: Ipv4Addr,
    /// The inside address (the gateway of the LAN's hosts).
    pub lan_ip: Ipv4Addr,
    /// The inside network and its prefix length.
    pub lan_net: (Ipv4Addr, u8),
    /// Hosts or routers attached to the LAN so far.
    lan_ports: u8,
}

impl Router {
    fn lan_cidr(&self) -> String {
        format!("{}/{}", self.lan_net.0, self.lan_net.1)
    }
}

/// Where a new node attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// The internet core.
    Core,
    /// The LAN of router `i` (an index into [`Lab::routers`]).
    Lan(usize),
}

fn add(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n)
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A set of namespaces forming one lab; deleted on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    core: String,
    server: Host,
    clients: Vec<Host>,
    routers: Vec<Router>,
    /// Attachments to the core so far (site indices).
    sites: u8,
    /// Setup steps not run yet (see [`Lab::flush`]).
    pending: Vec<Step>,
    /// Namespaces created whose loopback is not up yet.
    fresh: Vec<String>,
}

/// One queued setup step.
#[derive(Debug)]
enum Step {
    /// `ip [-n NS] LINE` (`None`: the root namespace).
    Ip(Option<String>, String),
    /// A sysctl (namespace, key, value, skipped if the key does not exist).
    Sysctl(String, String, String, bool),
    /// An nftables ruleset loaded in a namespace.
    Nft(String, String),
}

impl Lab {
    /// The core and the two-address server host, with no sites yet; fails with
    /// [`LabUnavailable`] unless running as root with `ip`, `nft` and `conntrack` present.
    /// Deletes stale namespaces of dead processes first.
    pub fn new() -> Result<Lab, LabError> {
        tools()?;
        let pid = std::process::id();
        cleanup_stale(&[]);
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NS_PREFIX}{pid}-{n}");
        let mut lab = Lab {
            core: format!("{prefix}-core"),
            server: Host {
                role: "server".into(),
                ns: format!("{prefix}-srv"),
                ips: SERVER_IPS.to_vec(),
            },
            prefix,
            namespaces: Vec::new(),
            clients: Vec::new(),
            routers: Vec::new(),
            sites: 0,
            pending: Vec::new(),
            fresh: Vec::new(),
        };
        let core = lab.core.clone();
        lab.add_ns(&core)?;
        let srv = lab.server.ns.clone();
        lab.add_ns(&srv)?;
        lab.veth(&core, "srv", &srv, "eth0")?;
        lab.ip(
            &core,
            &[
                "addr",
                "add",
                &format!("{CORE_SERVER_SIDE}/24"),
                "dev",
                "srv",
            ],
        )?;
        lab.ip(&core, &["link", "set", "srv", "up"])?;
        for ip in SERVER_IPS {
            lab.ip(&srv, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        }
        lab.ip(&srv, &["link", "set", "eth0", "up"])?;
        lab.ip(
            &srv,
            &[
                "route",
                "add",
                "default",
                "via",
                &CORE_SERVER_SIDE.to_string(),
            ],
        )?;
        lab.sysctl(&core, &[("net.ipv4.ip_forward", "1")])?;
        lab.flush()?;
        Ok(lab)
    }

    /// One client behind one router of `options` (a public host on the core for
    /// `NatType::None`).
    pub fn one_client(options: RouterOptions) -> Result<Lab, LabError> {
        let mut lab = Lab::new()?;
        lab.add_site(options)?;
        lab.flush()?;
        Ok(lab)
    }

    /// Two sites, each a client behind its own router, separated by the core.
    pub fn two_peers(a: RouterOptions, b: RouterOptions) -> Result<Lab, LabError> {
        let mut lab = Lab::new()?;
        lab.add_site(a)?;
        lab.add_site(b)?;
        lab.flush()?;
        Ok(lab)
    }

    /// Two clients on one LAN behind one router (two public hosts for `NatType::None`).
    pub fn same_nat(options: RouterOptions) -> Result<Lab, LabError> {
        let mut lab = Lab::new()?;
        if options.nat == NatType::None {
            lab.add_site(options)?;
            lab.add_site(options)?;
        } else {
            let r = lab.add_router(options, Upstream::Core, false)?;
            lab.add_client(Upstream::Lan(r))?;
            lab.add_client(Upstream::Lan(r))?;
        }
        lab.flush()?;
        Ok(lab)
    }

    /// One client behind a home router whose WAN is inside a carrier router's LAN
    /// (100.64.i.0/24). Router 0 is the carrier, router 1 the home router.
    pub fn double_nat(home: RouterOptions, carrier: RouterOptions) -> Result<Lab, LabError> {
        if !carrier.nat.translates() || home.nat == NatType::None {
            return Err(LabError::Unsupported(format!(
                "double NAT needs a translating carrier and a home router (got {} behind {})",
                home.nat.name(),
                carrier.nat.name()
            )));
        }
        let mut lab = Lab::new()?;
        let c = lab.add_router(carrier, Upstream::Core, true)?;
        let h = lab.add_router(home, Upstream::Lan(c), false)?;
        lab.add_client(Upstream::Lan(h))?;
        lab.flush()?;
        Ok(lab)
    }

    /// The server host (addresses [`SERVER_IPS`]).
    pub fn server(&self) -> &Host {
        &self.server
    }

    /// Client `i`, in the order the shape created them.
    pub fn client(&self, i: usize) -> &Host {
        &self.clients[i]
    }

    /// Every client.
    pub fn clients(&self) -> &[Host] {
        &self.clients
    }

    /// Every router, in creation order (for `double_nat`: carrier, then home).
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }

    /// The router in front of client `i`, if it has one.
    pub fn router_of(&self, i: usize) -> Option<&Router> {
        let client = self.clients.get(i)?;
        let ip = u32::from(client.ip());
        self.routers.iter().find(|r| {
            let (net, len) = r.lan_net;
            let mask = u32::MAX << (32 - u32::from(len));
            ip & mask == u32::from(net)
        })
    }

    /// The internet core router's namespace.
    pub fn core_ns(&self) -> &str {
        &self.core
    }

    /// Every namespace of the lab, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// A command running `args` inside namespace `ns` (`ip netns exec ns args...`).
    pub fn command<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> Command {
        let ip = tools()
            .map(|t| t.ip.clone())
            .unwrap_or_else(|_| "ip".into());
        let mut cmd = Command::new(ip);
        cmd.args(["netns", "exec", ns]).args(args);
        cmd
    }

    /// Runs `args` inside `host`'s namespace to completion (whatever its exit status).
    pub fn exec<S: AsRef<OsStr>>(&self, host: &Host, args: &[S]) -> Result<Output, LabError> {
        let mut cmd = self.command(&host.ns, args);
        let what = describe(&cmd);
        cmd.stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Io { what, source })
    }

    /// Runs `args` inside `host`'s namespace, killing it (by pid) after `timeout`.
    /// Returns its output, or `None` if it had to be killed. Its stdout and stderr are read
    /// while it runs, so a chatty command cannot block on a full pipe.
    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        host: &Host,
        args: &[S],
        timeout: Duration,
    ) -> Result<Option<Output>, LabError> {
        use std::io::Read as _;
        let what = describe(&self.command(&host.ns, args));
        let mut child = self.spawn(host, args)?;
        let drain = |pipe: Option<Box<dyn io::Read + Send>>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut buf);
                }
                let _ = tx.send(buf);
            });
            rx
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        );
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LabError::Io { what, source });
                }
            }
        };
        // The pipes close when the command exits, unless something it started in the
        // background still holds them: then give up on that output after a second (the lab's
        // drop kills whatever is left in its namespaces).
        let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
        };
        let (stdout, stderr) = (collect(stdout), collect(stderr));
        Ok(status.map(|status| Output {
            status,
            stdout,
            stderr,
        }))
    }

    /// Starts `args` inside `host`'s namespace (stdin null, stdout and stderr piped). `ip
    /// netns exec` execs the command, so the child's pid is the command's. Whatever still runs
    /// in the namespace when the lab drops is killed.
    pub fn spawn<S: AsRef<OsStr>>(&self, host: &Host, args: &[S]) -> Result<Child, LabError> {
        let mut cmd = self.command(&host.ns, args);
        let what = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Io { what, source })
    }

    /// Forgets all NAT state of `router`: its conntrack table and its learnt mappings
    /// (`conntrack -F`, and the `ext` map and `contacted` set emptied).
    pub fn flush_nat(&self, router: &Router) -> Result<(), LabError> {
        let t = tools()?;
        let mut script = String::new();
        if router.options.nat.translates() {
            script.push_str("flush map ip lab ext\n");
        }
        if router.options.nat == NatType::RestrictedCone {
            script.push_str("flush set ip lab contacted\n");
        }
        if !script.is_empty() {
            let mut cmd = self.command(
                &router.ns,
                &[t.nft.as_os_str(), OsStr::new("-f"), OsStr::new("-")],
            );
            run(&mut cmd, Some(&script))?;
        }
        let mut cmd = self.command(&router.ns, &[t.conntrack.as_os_str(), OsStr::new("-F")]);
        // conntrack -F prints a summary to stderr and succeeds also on an empty table.
        run(&mut cmd, None)?;
        Ok(())
    }

    /// Flushes every router (see [`Lab::flush_nat`]).
    pub fn flush_all(&self) -> Result<(), LabError> {
        for r in &self.routers {
            self.flush_nat(r)?;
        }
        Ok(())
    }

    /// The UDP conntrack entries of `router` (`conntrack -L -p udp` output lines).
    pub fn conntrack_udp(&self, router: &Router) -> Result<Vec<String>, LabError> {
        let t = tools()?;
        let mut cmd = self.command(
            &router.ns,
            &[
                t.conntrack.as_os_str(),
                OsStr::new("-L"),
                OsStr::new("-p"),
                OsStr::new("udp"),
            ],
        );
        let out = run(&mut cmd, None)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// A UDP socket bound to `addr` inside `host`'s namespace (see [`udp_socket_in`]).
    pub fn udp_socket(&self, host: &Host, addr: SocketAddr) -> io::Result<UdpSocket> {
        udp_socket_in(&host.ns, addr)
    }

    // -----------------------------------------------------------------------------------
    // Building blocks.

    /// Queues `ip -n ns args...` (run by the next [`Lab::flush`]); the namespace's loopback
    /// is brought up first if it is new.
    fn ip(&mut self, ns: &str, args: &[&str]) -> Result<(), LabError> {
        if let Some(k) = self.fresh.iter().position(|f| f == ns) {
            self.fresh.swap_remove(k);
            self.pending
                .push(Step::Ip(Some(ns.to_owned()), "link set lo up".into()));
        }
        self.pending
            .push(Step::Ip(Some(ns.to_owned()), args.join(" ")));
        Ok(())
    }

    /// Queues sysctls in namespace `ns`.
    fn sysctl(&mut self, ns: &str, settings: &[(&str, &str)]) -> Result<(), LabError> {
        for (key, value) in settings {
            self.pending.push(Step::Sysctl(
                ns.to_owned(),
                (*key).to_owned(),
                (*value).to_owned(),
                false,
            ));
        }
        Ok(())
    }

    /// Queues a sysctl in namespace `ns` that is skipped where the key does not exist.
    fn sysctl_if_present(&mut self, ns: &str, key: &str, value: &str) {
        self.pending.push(Step::Sysctl(
            ns.to_owned(),
            key.to_owned(),
            value.to_owned(),
            true,
        ));
    }

    /// Queues the creation of namespace `name`.
    fn add_ns(&mut self, name: &str) -> Result<(), LabError> {
        self.pending
            .push(Step::Ip(None, format!("netns add {name}")));
        self.namespaces.push(name.to_owned());
        self.fresh.push(name.to_owned());
        Ok(())
    }

    /// Runs the queued steps in order. Consecutive `ip` commands for one namespace go to one
    /// `ip [-n NS] -batch -` process and sysctls are written to `/proc/sys` from a thread
    /// inside the namespace (`/proc/sys/net` shows the writer's namespace): process spawns
    /// are the slow part of building a lab on a loaded machine.
    fn flush(&mut self) -> Result<(), LabError> {
        let t = tools()?;
        for ns in std::mem::take(&mut self.fresh) {
            self.pending
                .push(Step::Ip(Some(ns), "link set lo up".into()));
        }
        let pending = std::mem::take(&mut self.pending);
        let mut rest = pending.as_slice();
        while let Some(step) = rest.first() {
            match step {
                Step::Ip(ns, _) => {
                    let group: Vec<&str> = rest
                        .iter()
                        .map_while(|s| match s {
                            Step::Ip(other, line) if other == ns => Some(line.as_str()),
                            _ => None,
                        })
                        .collect();
                    let mut script = group.join("\n");
                    script.push('\n');
                    let mut cmd = Command::new(&t.ip);
                    if let Some(ns) = ns {
                        cmd.args(["-n", ns]);
                    }
                    cmd.args(["-batch", "-"]);
                    run(&mut cmd, Some(&script))?;
                    rest = &rest[group.len()..];
                }
                Step::Sysctl(ns, key, value, optional) => {
                    write_sysctl(ns, key, value, *optional)?;
                    rest = &rest[1..];
                }
                Step::Nft(ns, rules) => {
                    let mut cmd =
                        self.command(ns, &[t.nft.as_os_str(), OsStr::new("-f"), OsStr::new("-")]);
                    run(&mut cmd, Some(rules))?;
                    rest = &rest[1..];
                }
            }
        }
        Ok(())
    }

    /// A veth pair: `name_a` in `ns_a`, `name_b` in `ns_b`.
    fn veth(&mut self, ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> Result<(), LabError> {
        self.ip(
            ns_a,
            &[
                "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b,
            ],
        )
        .map(|_| ())
    }

    /// Connects a new namespace `ns` (interface `iface`) to `upstream`; returns the address
    /// given to it (with prefix length) and its gateway.
    fn attach(
        &mut self,
        ns: &str,
        iface: &str,
        upstream: Upstream,
        routed_lan: Option<(Ipv4Addr, u8)>,
    ) -> Result<(Ipv4Addr, u8, Ipv4Addr), LabError> {
        match upstream {
            Upstream::Core => {
                let i = u32::from(self.sites);
                self.sites += 1;
                let core = self.core.clone();
                let core_if = format!("s{i}");
                self.veth(&core, &core_if, ns, iface)?;
                // A router: WAN 203.0.113.(8i+2)/29; a public host: 198.18.i.2/24.
                let (base, len) = if iface == nft::WAN {
                    (add(Ipv4Addr::new(203, 0, 113, 0), 8 * i), 29)
                } else {
                    (add(Ipv4Addr::new(198, 18, 0, 0), 256 * i), 24)
                };
                let (gw, me) = (add(base, 1), add(base, 2));
                self.ip(
                    &core,
                    &["addr", "add", &format!("{gw}/{len}"), "dev", &core_if],
                )?;
                self.ip(&core, &["link", "set", &core_if, "up"])?;
                if let Some((net, nlen)) = routed_lan {
                    self.ip(
                        &core,
                        &[
                            "route",
                            "add",
                            &format!("{net}/{nlen}"),
                            "via",
                            &me.to_string(),
                        ],
                    )?;
                }
                Ok((me, len, gw))
            }
            Upstream::Lan(r) => {
                let router = &mut self.routers[r];
                let port = router.lan_ports;
                router.lan_ports += 1;
                let (rns, gw, (net, len)) = (router.ns.clone(), router.lan_ip, router.lan_net);
                let me = add(net, 2 + u32::from(port));
                let rif = format!("lp{port}");
                self.veth(&rns, &rif, ns, iface)?;
                self.ip(&rns, &["link", "set", &rif, "master", nft::LAN])?;
                self.ip(&rns, &["link", "set", &rif, "up"])?;
                if let Some((lnet, llen)) = routed_lan {
                    self.ip(
                        &rns,
                        &[
                            "route",
                            "add",
                            &format!("{lnet}/{llen}"),
                            "via",
                            &me.to_string(),
                        ],
                    )?;
                }
                Ok((me, len, gw))
            }
        }
    }

    /// A client host on `upstream` (a public host when that is the core).
    fn add_client(&mut self, upstream: Upstream) -> Result<usize, LabError> {
        let i = self.clients.len();
        let ns = format!("{}-c{i}", self.prefix);
        self.add_ns(&ns)?;
        let (ip, len, gw) = self.attach(&ns, "eth0", upstream, None)?;
        self.ip(&ns, &["addr", "add", &format!("{ip}/{len}"), "dev", "eth0"])?;
        self.ip(&ns, &["link", "set", "eth0", "up"])?;
        self.ip(&ns, &["route", "add", "default", "via", &gw.to_string()])?;
        self.clients.push(Host {
            role: format!("client{i}"),
            ns,
            ips: vec![ip],
        });
        Ok(i)
    }

    /// A client behind a router of `options` on the core (a public host for `None`).
    fn add_site(&mut self, options: RouterOptions) -> Result<usize, LabError> {
        if options.nat == NatType::None {
            self.add_client(Upstream::Core)
        } else {
            let r = self.add_router(options, Upstream::Core, false)?;
            self.add_client(Upstream::Lan(r))
        }
    }

    /// A router of `options` whose WAN attaches to `upstream`; returns its index. A carrier
    /// router's LAN is 100.64.i.0/24.
    fn add_router(
        &mut self,
        options: RouterOptions,
        upstream: Upstream,
        carrier: bool,
    ) -> Result<usize, LabError> {
        if options.nat == NatType::None {
            return Err(LabError::Unsupported("a router of type none".into()));
        }
        let index = u8::try_from(self.routers.len())
            .ok()
            .filter(|&i| i < 16)
            .ok_or_else(|| LabError::Unsupported("more than 16 routers".into()))?;
        let ns = format!("{}-r{index}", self.prefix);
        self.add_ns(&ns)?;
        // Sysctls that must hold before the interfaces exist (copied from `default`).
        self.sysctl(
            &ns,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
            ],
        )?;
        let lan_net = if carrier {
            (Ipv4Addr::new(100, 64, index, 0), 24)
        } else if options.nat.translates() {
            (Ipv4Addr::new(10, index + 1, 0, 0), 24)
        } else {
            (add(Ipv4Addr::new(192, 0, 2, 0), 16 * u32::from(index)), 28)
        };
        self.ip(&ns, &["link", "add", nft::LAN, "type", "bridge"])?;
        let lan_ip = add(lan_net.0, 1);
        self.ip(
            &ns,
            &[
                "addr",
                "add",
                &format!("{lan_ip}/{}", lan_net.1),
                "dev",
                nft::LAN,
            ],
        )?;
        self.ip(&ns, &["link", "set", nft::LAN, "up"])?;
        let routed = (!options.nat.translates()).then_some(lan_net);
        let (wan_ip, len, gw) = self.attach(&ns, nft::WAN, upstream, routed)?;
        self.ip(
            &ns,
            &["addr", "add", &format!("{wan_ip}/{len}"), "dev", nft::WAN],
        )?;
        self.ip(&ns, &["link", "set", nft::WAN, "up"])?;
        self.ip(&ns, &["route", "add", "default", "via", &gw.to_string()])?;
        let router = Router {
            index,
            ns,
            options,
            wan_ip,
            lan_ip,
            lan_net,
            lan_ports: 0,
        };
        self.configure(&router)?;
        self.routers.push(router);
        Ok(self.routers.len() - 1)
    }

    /// Queues the router's ruleset and conntrack settings.
    fn configure(&mut self, router: &Router) -> Result<(), LabError> {
        let rules = nft::ruleset(&router.options, router.wan_ip, &router.lan_cidr());
        self.pending.push(Step::Nft(router.ns.clone(), rules));
        let to = nft::timeout_secs(&router.options).to_string();
        // These exist once nf_conntrack is loaded, which every ruleset that uses conntrack
        // does (a blocking router without the input rule needs no conntrack).
        for key in [
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream",
        ] {
            self.sysctl_if_present(&router.ns, key, &to);
        }
        // br_netfilter (when loaded) would pass bridged frames through the IP hooks.
        self.sysctl_if_present(&router.ns, "net.bridge.bridge-nf-call-iptables", "0");
        Ok(())
    }
}

/// Writes one sysctl inside namespace `ns` (nothing if `optional` and the key is absent).
fn write_sysctl(ns: &str, key: &str, value: &str, optional: bool) -> Result<(), LabError> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    in_namespace(ns, || {
        if optional && !path.exists() {
            return Ok(());
        }
        std::fs::write(&path, value)
    })
    .map_err(|source| LabError::Io {
        what: format!("sysctl {key}={value} in {ns}"),
        source,
    })
}

/// Runs `f` on a fresh thread that has entered the named network namespace (`setns` on
/// `/run/netns/NS`, which changes only that thread's namespace) and returns its result.
/// Sockets created by `f` stay in that namespace for their whole life.
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(&path)?;
                // SAFETY: the fd is a valid open namespace file for the duration of the call;
                // setns only changes this (short-lived, scoped) thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = delete_ns(ns) {
                eprintln!("natlab: could not delete namespace {ns}: {e}");
            }
        }
    }
}

/// Kills (SIGKILL, by pid) every process inside namespace `ns`, then deletes it.
fn delete_ns(ns: &str) -> Result<(), LabError> {
    let t = tools()?;
    if let Ok(out) = run(Command::new(&t.ip).args(["netns", "pids", ns]), None) {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
            // Never ourselves (a main thread that entered the namespace would be listed).
            .filter(|&p| u32::try_from(p).ok() != Some(std::process::id()))
        {
            // SAFETY: kill has no memory-safety preconditions; the pid was just listed as
            // running inside one of our namespaces.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    run(Command::new(&t.ip).args(["netns", "del", ns]), None).map(|_| ())
}

/// The pid encoded in a lab namespace name (`p2pl<pid>-...`).
pub fn ns_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let digits = rest.split('-').next()?;
    digits.parse().ok()
}

/// Every lab namespace on the machine (names starting with [`NS_PREFIX`]).
pub fn lab_namespaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(NS_PREFIX))
        .collect();
    names.sort();
    names
}

/// Deletes lab namespaces whose pid is no longer alive, and those of the given pids (never
/// our own process's); returns the names deleted.
pub fn cleanup_stale(pids: &[u32]) -> Vec<String> {
    let me = std::process::id();
    let mut deleted = Vec::new();
    for name in lab_namespaces() {
        let Some(pid) = ns_pid(&name) else { continue };
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        if pid != me && (dead || pids.contains(&pid)) {
            match delete_ns(&name) {
                Ok(()) => deleted.push(name),
                Err(e) => eprintln!("natlab: could not delete stale namespace {name}: {e}"),
            }
        }
    }
    deleted
}

/// A UDP socket bound to `addr` inside the named network namespace.
///
/// On a fresh thread: opens `/run/netns/NS`, `setns(fd, CLONE_NEWNET)` (which changes only
/// that thread's namespace), binds the socket and returns it. A socket belongs to the
/// namespace it was created in for its whole life, so it can be used from any thread after.
pub fn udp_socket_in(ns: &str, addr: SocketAddr) -> io::Result<UdpSocket> {
    in_namespace(ns, || UdpSocket::bind(addr))
}
