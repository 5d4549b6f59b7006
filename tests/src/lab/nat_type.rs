//! `p2p-client nat-type --json` run inside a lab, as the lab tests of the classifier's
//! sections (port mapping, IPv6) use it.

use std::time::Duration;

use super::Lab;

/// `p2p-client nat-type ARGS --json` in client 0's namespace (60 s at most), its JSON report.
/// `verdicts` are the exit statuses that carry a report (0, and 2 for the `udp-blocked`
/// verdict where a test expects it); any other status fails the test with both outputs.
pub fn nat_type_json(lab: &Lab, args: &[&str], verdicts: &[i32]) -> serde_json::Value {
    let bin = super::chat::binaries().expect("the client binary is built");
    let mut argv = vec![
        bin.client.to_str().expect("a UTF-8 path").to_owned(),
        "nat-type".to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv.push("--json".to_owned());
    let out = lab
        .exec_timeout(lab.client(0), &argv, Duration::from_secs(60))
        .expect("nat-type could be started in the lab")
        .expect("nat-type finished within 60 s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code().is_some_and(|c| verdicts.contains(&c)),
        "nat-type failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("nat-type --json printed one JSON object")
}
