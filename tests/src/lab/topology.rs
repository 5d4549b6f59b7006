//! Building a lab's shape: the namespaces, the veth pairs between them, their addresses and
//! routes, queued as steps and run in batches (process spawns are the slow part).

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::namespaces::{cleanup_stale, write_sysctl};
use super::{
    CORE_SERVER_SIDE, CORE_SERVER_SIDE6, Host, Lab, LabError, NS_PREFIX, SERVER_IPS, SERVER_IPS6,
    nft, run, tools,
};
use crate::nat_types::{NatType, RouterOptions};

/// Where a new node attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upstream {
    /// The internet core.
    Core,
    /// The LAN of router `i` (an index into [`Lab::routers`]).
    Lan(usize),
}

pub(super) fn add(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n)
}

pub(super) fn add6(base: Ipv6Addr, n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(base) + u128::from(n))
}

/// The transfer net of the core's site `i` (2001:db8:ff:i::/64).
fn transfer_net6(i: u32) -> Ipv6Addr {
    let i = u16::try_from(i).unwrap_or(u16::MAX);
    Ipv6Addr::new(0x2001, 0xdb8, 0xff, i, 0, 0, 0, 0)
}

/// The LAN of router `r` (2001:db8:1:r::/64).
pub(super) fn lan_net6(r: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, u16::from(r), 0, 0, 0, 0)
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One queued setup step.
#[derive(Debug)]
pub(super) enum Step {
    /// `ip [-n NS] LINE` (`None`: the root namespace).
    Ip(Option<String>, String),
    /// A sysctl (namespace, key, value, skipped if the key does not exist).
    Sysctl(String, String, String, bool),
    /// An nftables ruleset loaded in a namespace.
    Nft(String, String),
}

impl Lab {
    /// The core and the two-address server host, with no sites yet; fails with
    /// [`LabUnavailable`](super::LabUnavailable) unless running as root with `ip`, `nft` and `conntrack` present.
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
                ips6: SERVER_IPS6.to_vec(),
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
        lab.ip(
            &core,
            &[
                "addr",
                "add",
                &format!("{CORE_SERVER_SIDE6}/64"),
                "dev",
                "srv",
                "nodad",
            ],
        )?;
        for ip in SERVER_IPS6 {
            lab.ip(
                &srv,
                &["addr", "add", &format!("{ip}/64"), "dev", "eth0", "nodad"],
            )?;
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
        lab.ip(
            &srv,
            &[
                "route",
                "add",
                "::/0",
                "via",
                &CORE_SERVER_SIDE6.to_string(),
            ],
        )?;
        // `all` also sets `default`, so the sites' interfaces added later forward too.
        lab.sysctl(
            &core,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ],
        )?;
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
            lab.add_client(Upstream::Lan(r), options.ipv6)?;
            lab.add_client(Upstream::Lan(r), options.ipv6)?;
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
        lab.add_client(Upstream::Lan(h), false)?;
        lab.flush()?;
        Ok(lab)
    }

    /// Queues `ip -n ns args...` (run by the next [`Lab::flush`]); the namespace's loopback
    /// is brought up first if it is new.
    pub(super) fn ip(&mut self, ns: &str, args: &[&str]) -> Result<(), LabError> {
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
    pub(super) fn sysctl(&mut self, ns: &str, settings: &[(&str, &str)]) -> Result<(), LabError> {
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
    pub(super) fn sysctl_if_present(&mut self, ns: &str, key: &str, value: &str) {
        self.pending.push(Step::Sysctl(
            ns.to_owned(),
            key.to_owned(),
            value.to_owned(),
            true,
        ));
    }

    /// Queues the creation of namespace `name`.
    pub(super) fn add_ns(&mut self, name: &str) -> Result<(), LabError> {
        self.pending
            .push(Step::Ip(None, format!("netns add {name}")));
        // No duplicate address detection: while an interface's link-local address is
        // tentative (a second or two), the kernel sends no neighbour solicitation for
        // forwarded packets, so the first IPv6 packets through a fresh lab would be lost.
        // `default` covers the interfaces created later (a veth's peer is created directly in
        // its namespace, with that namespace's defaults).
        self.sysctl(
            name,
            &[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ],
        )?;
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
    pub(super) fn attach(
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

    /// Gives namespace `ns` (interface `iface`, just attached to the core as the newest site)
    /// the address ::2 of the site's IPv6 transfer net, and the core a route to
    /// `routed_lan` (a /64) through it; returns the address and the gateway (the core, ::1).
    /// The caller adds the default route once the interface is up (the kernel refuses an IPv6
    /// gateway on a link that is down).
    pub(super) fn attach6(
        &mut self,
        ns: &str,
        iface: &str,
        routed_lan: Option<Ipv6Addr>,
    ) -> Result<(Ipv6Addr, Ipv6Addr), LabError> {
        let i = u32::from(self.sites) - 1;
        let net = transfer_net6(i);
        let (gw, me) = (add6(net, 1), add6(net, 2));
        let core = self.core.clone();
        let core_if = format!("s{i}");
        self.ip(
            &core,
            &["addr", "add", &format!("{gw}/64"), "dev", &core_if, "nodad"],
        )?;
        if let Some(lan) = routed_lan {
            self.ip(
                &core,
                &["route", "add", &format!("{lan}/64"), "via", &me.to_string()],
            )?;
        }
        self.ip(
            ns,
            &["addr", "add", &format!("{me}/64"), "dev", iface, "nodad"],
        )?;
        Ok((me, gw))
    }

    /// A client host on `upstream` (a public host when that is the core).
    /// With `ipv6`, a public host is dual stack; a host on a LAN is when its router is.
    fn add_client(&mut self, upstream: Upstream, ipv6: bool) -> Result<usize, LabError> {
        let i = self.clients.len();
        let ns = format!("{}-c{i}", self.prefix);
        self.add_ns(&ns)?;
        let (ip, len, gw) = self.attach(&ns, "eth0", upstream, None)?;
        self.ip(&ns, &["addr", "add", &format!("{ip}/{len}"), "dev", "eth0"])?;
        let mut ips6 = Vec::new();
        let mut gw6 = None;
        match upstream {
            Upstream::Core if ipv6 => {
                let (me, gw) = self.attach6(&ns, "eth0", None)?;
                ips6.push(me);
                gw6 = Some(gw);
            }
            Upstream::Lan(r) => {
                let router = &self.routers[r];
                if let Some(net6) = router.lan_net6 {
                    // The same host number as in IPv4.
                    let n = u32::from(ip) - u32::from(router.lan_net.0);
                    let me = add6(net6, n);
                    self.ip(
                        &ns,
                        &["addr", "add", &format!("{me}/64"), "dev", "eth0", "nodad"],
                    )?;
                    ips6.push(me);
                    gw6 = Some(add6(net6, 1));
                }
            }
            Upstream::Core => {}
        }
        self.ip(&ns, &["link", "set", "eth0", "up"])?;
        self.ip(&ns, &["route", "add", "default", "via", &gw.to_string()])?;
        if let Some(gw6) = gw6 {
            self.ip(&ns, &["route", "add", "::/0", "via", &gw6.to_string()])?;
        }
        self.clients.push(Host {
            role: format!("client{i}"),
            ns,
            ips: vec![ip],
            ips6,
        });
        Ok(i)
    }

    /// A client behind a router of `options` on the core (a public host for `None`).
    fn add_site(&mut self, options: RouterOptions) -> Result<usize, LabError> {
        if options.nat == NatType::None {
            self.add_client(Upstream::Core, options.ipv6)
        } else {
            let r = self.add_router(options, Upstream::Core, false)?;
            self.add_client(Upstream::Lan(r), options.ipv6)
        }
    }
}
