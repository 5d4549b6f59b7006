//! The NAT routers of a lab: creating one with its ruleset and conntrack settings, and
//! inspecting or forgetting its NAT state while a test runs.

use std::ffi::OsStr;
use std::net::Ipv4Addr;

use super::topology::{Step, Upstream, add, add6, lan_net6};
use super::{Lab, LabError, Router, nft, run, tools};
use crate::nat_types::{NatType, RouterOptions};

impl Lab {
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
        // conntrack -F prints a summary to stderr and succeeds also on an empty table. It
        // flushes IPv4 only unless told the family.
        let families: &[&str] = if router.options.ipv6 {
            &["ipv4", "ipv6"]
        } else {
            &["ipv4"]
        };
        for family in families {
            let args = [
                t.conntrack.as_os_str(),
                OsStr::new("-F"),
                OsStr::new("-f"),
                OsStr::new(family),
            ];
            run(&mut self.command(&router.ns, &args), None)?;
        }
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

    /// A router of `options` whose WAN attaches to `upstream`; returns its index. A carrier
    /// router's LAN is 100.64.i.0/24.
    pub(super) fn add_router(
        &mut self,
        options: RouterOptions,
        upstream: Upstream,
        carrier: bool,
    ) -> Result<usize, LabError> {
        if options.nat == NatType::None {
            return Err(LabError::Unsupported("a router of type none".into()));
        }
        if options.ipv6 && (carrier || upstream != Upstream::Core) {
            return Err(LabError::Unsupported(
                "IPv6 on a router that is not attached to the core".into(),
            ));
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
        if options.ipv6 {
            // `all` also sets `default`, so the interfaces created below forward.
            self.sysctl(&ns, &[("net.ipv6.conf.all.forwarding", "1")])?;
        }
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
        let net6 = options.ipv6.then(|| lan_net6(index));
        if let Some(net6) = net6 {
            let me = add6(net6, 1);
            self.ip(
                &ns,
                &["addr", "add", &format!("{me}/64"), "dev", nft::LAN, "nodad"],
            )?;
        }
        self.ip(&ns, &["link", "set", nft::LAN, "up"])?;
        let routed = (!options.nat.translates()).then_some(lan_net);
        let (wan_ip, len, gw) = self.attach(&ns, nft::WAN, upstream, routed)?;
        self.ip(
            &ns,
            &["addr", "add", &format!("{wan_ip}/{len}"), "dev", nft::WAN],
        )?;
        let wan6 = match net6 {
            Some(net6) => Some(self.attach6(&ns, nft::WAN, Some(net6))?),
            None => None,
        };
        self.ip(&ns, &["link", "set", nft::WAN, "up"])?;
        self.ip(&ns, &["route", "add", "default", "via", &gw.to_string()])?;
        if let Some((_, gw6)) = wan6 {
            self.ip(&ns, &["route", "add", "::/0", "via", &gw6.to_string()])?;
        }
        let wan_ip6 = wan6.map(|(me, _)| me);
        let router = Router {
            index,
            ns,
            options,
            wan_ip,
            lan_ip,
            lan_net,
            lan_net6: net6,
            wan_ip6,
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
        if router.options.ipv6 {
            let rules6 = nft::ruleset6(&router.options);
            self.pending.push(Step::Nft(router.ns.clone(), rules6));
        }
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
