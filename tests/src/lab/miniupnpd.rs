//! miniupnpd (Debian's `miniupnpd-nftables`) on a lab router: the port-mapping service a
//! home router offers, started by the test with its own config file, pid file and log in a
//! temporary directory, and stopped by its pid. Never the system service.
//!
//! What the router needs for it, measured with miniupnpd 2.3.1 (docs/PORTMAP.md):
//! - miniupnpd refuses to map while its WAN address is private or reserved, and the lab's WAN
//!   addresses are in 203.0.113.0/24. It accepts once its own STUN check (`ext_perform_stun`)
//!   against a two-address STUN server finds the WAN address unchanged. A symmetric router's
//!   `masquerade random` would change the port of that check, so the router's own traffic to
//!   and from a second STUN server (ports [`STUN_PORTS`], not the test's server) is `notrack`:
//!   it is neither translated nor blocked by the input guard.
//! - It does not create its nftables table: `inet filter` with the chains `miniupnpd`
//!   (forward), `prerouting_miniupnpd` (DNAT) and `postrouting_miniupnpd`, hooked from base
//!   chains we create here. The router's own forward filter drops new inbound flows, so it is
//!   told to accept flows miniupnpd DNATed.
//! - `enable_natpmp=yes` serves NAT-PMP and PCP on UDP 5351 (2.3.1 has no separate PCP
//!   switch); `enable_upnp=yes` serves SSDP and SOAP, as IGDv2 unless `force_igd_desc_v1=yes`.

use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::commands::describe;
use super::{Lab, LabError, LabServer, Router, SERVER_IPS, run, tools};

/// Where the miniupnpd binary is.
pub const MINIUPNPD: &str = "/usr/sbin/miniupnpd";
/// The ports of the STUN server that miniupnpd's own check uses (primary, alternate).
pub const STUN_PORTS: (u16, u16) = (3490, 3491);

/// Which service miniupnpd offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapService {
    /// NAT-PMP and PCP on UDP 5351.
    NatPmpPcp,
    /// UPnP-IGD (SSDP and SOAP), describing itself as IGDv2 (miniupnpd's default).
    Upnp,
    /// UPnP-IGD describing itself as IGDv1 (`force_igd_desc_v1=yes`), as older routers do.
    UpnpV1,
}

/// A miniupnpd running on a router, with the STUN server its check uses; stopped on drop.
pub struct Miniupnpd {
    child: Child,
    dir: PathBuf,
    ns: String,
    _stun: LabServer,
}

impl Miniupnpd {
    /// The rules miniupnpd's DNAT chain holds now: one per mapping it keeps.
    pub fn dnat_rules(&self, lab: &Lab) -> Result<Vec<String>, LabError> {
        let t = tools()?;
        let mut cmd = lab.command(
            &self.ns,
            &[
                t.nft.as_os_str(),
                OsStr::new("list"),
                OsStr::new("chain"),
                OsStr::new("inet"),
                OsStr::new("filter"),
                OsStr::new("prerouting_miniupnpd"),
            ],
        );
        let out = run(&mut cmd, None)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("dnat"))
            .map(|l| l.trim().to_owned())
            .collect())
    }

    /// miniupnpd's log so far (it runs with `-d`: debug output on stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Miniupnpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn io_err(what: &str, source: std::io::Error) -> LabError {
    LabError::Io {
        what: what.to_owned(),
        source,
    }
}

impl Lab {
    /// Starts miniupnpd offering `service` on `router` (a translating router), waits until it
    /// listens, and returns it.
    pub fn start_miniupnpd(
        &self,
        router: &Router,
        service: MapService,
    ) -> Result<Miniupnpd, LabError> {
        let t = tools()?;
        let stun = LabServer::start_ours(self, true, STUN_PORTS.0, STUN_PORTS.1).map_err(|e| {
            io_err(
                "miniupnpd's STUN server",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let (s1, s2) = (SERVER_IPS[0], SERVER_IPS[1]);
        let (p1, p2) = STUN_PORTS;
        let mut rules = format!(
            "table inet filter {{\n\
             \x20 chain forward {{ type filter hook forward priority filter; policy accept; jump miniupnpd; }}\n\
             \x20 chain miniupnpd {{ }}\n\
             \x20 chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd; }}\n\
             \x20 chain postrouting {{ type nat hook postrouting priority srcnat - 5; policy accept; jump postrouting_miniupnpd; }}\n\
             \x20 chain prerouting_miniupnpd {{ }}\n\
             \x20 chain postrouting_miniupnpd {{ }}\n\
             }}\n\
             table ip upnpstun {{\n\
             \x20 chain out {{ type filter hook output priority raw; policy accept; \
             ip daddr {{ {s1}, {s2} }} udp dport {{ {p1}, {p2} }} notrack; }}\n\
             \x20 chain in {{ type filter hook prerouting priority raw; policy accept; \
             ip saddr {{ {s1}, {s2} }} udp sport {{ {p1}, {p2} }} notrack; }}\n\
             }}\n\
             insert rule ip lab filt iifname \"wan\" ct status dnat accept\n"
        );
        if router.options.drop_unsolicited {
            rules.push_str("insert rule ip lab guard ct state untracked accept\n");
        }
        let mut cmd = self.command(
            &router.ns,
            &[t.nft.as_os_str(), OsStr::new("-f"), OsStr::new("-")],
        );
        run(&mut cmd, Some(&rules))?;

        let dir = std::env::temp_dir().join(format!("p2pl-upnp-{}", router.ns));
        std::fs::create_dir_all(&dir).map_err(|e| io_err("miniupnpd's directory", e))?;
        let (natpmp, upnp, v1) = match service {
            MapService::NatPmpPcp => ("yes", "no", "no"),
            MapService::Upnp => ("no", "yes", "no"),
            MapService::UpnpV1 => ("no", "yes", "yes"),
        };
        let lan = router.lan_cidr();
        let config = format!(
            "ext_ifname=wan\n\
             listening_ip=lan\n\
             http_port=0\n\
             enable_natpmp={natpmp}\n\
             enable_upnp={upnp}\n\
             force_igd_desc_v1={v1}\n\
             ext_perform_stun=yes\n\
             ext_stun_host={s1}\n\
             ext_stun_port={p1}\n\
             secure_mode=yes\n\
             system_uptime=no\n\
             min_lifetime=60\n\
             max_lifetime=3600\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             allow 1024-65535 {lan} 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n"
        );
        let conf = dir.join("miniupnpd.conf");
        std::fs::write(&conf, config).map_err(|e| io_err("miniupnpd.conf", e))?;
        let log = File::create(dir.join("log")).map_err(|e| io_err("miniupnpd's log", e))?;
        let log2 = log.try_clone().map_err(|e| io_err("miniupnpd's log", e))?;
        let pid = dir.join("miniupnpd.pid");
        let args = [
            OsStr::new(MINIUPNPD),
            OsStr::new("-f"),
            conf.as_os_str(),
            OsStr::new("-P"),
            pid.as_os_str(),
            OsStr::new("-d"),
        ];
        let mut cmd = self.command(&router.ns, &args);
        let what = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| LabError::Io { what, source })?;
        let mut m = Miniupnpd {
            child,
            dir,
            ns: router.ns.clone(),
            _stun: stun,
        };
        // Bounded wait until it listens (UDP 5351, or its HTTP port on the LAN address).
        let deadline = Instant::now() + Duration::from_secs(10);
        let lan_ip = IpAddr::V4(router.lan_ip);
        loop {
            let mut ss = self.command(&router.ns, &["ss", "-Hlnut"]);
            let listing = run(&mut ss, None)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ready = match service {
                MapService::NatPmpPcp => listing.contains(":5351 "),
                MapService::Upnp | MapService::UpnpV1 => listing
                    .lines()
                    .any(|l| l.contains(&format!("{lan_ip}:")) && !l.contains(":1900 ")),
            };
            if ready {
                break;
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(io_err(
                    "miniupnpd",
                    std::io::Error::other(format!("exited {status}: {}", m.log())),
                ));
            }
            if Instant::now() > deadline {
                let log = m.log();
                drop(m);
                return Err(io_err(
                    "miniupnpd",
                    std::io::Error::other(format!("not listening after 10 s: {log}")),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(m)
    }
}
