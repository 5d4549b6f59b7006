//! The `--cluster-*` options: how a node reaches the cluster's NATS server (docs/CLUSTER.md,
//! "Securing NATS").

use p2p_servers::rendezvous::ClusterConnect;

use super::Settings;

impl Settings {
    /// The `--cluster-*` options go with `--cluster`, in their pairs.
    pub(super) fn check_cluster_access(&self) -> anyhow::Result<()> {
        let given = [
            ("--cluster-ca", self.cluster_ca.is_some()),
            ("--cluster-cert", self.cluster_cert.is_some()),
            ("--cluster-key", self.cluster_key.is_some()),
            ("--cluster-user", self.cluster_user.is_some()),
            (
                "--cluster-password-file",
                self.cluster_password_file.is_some(),
            ),
        ];
        if self.cluster.is_none()
            && let Some((flag, _)) = given.iter().find(|(_, on)| *on)
        {
            anyhow::bail!("{flag} needs --cluster");
        }
        if self.cluster_cert.is_some() != self.cluster_key.is_some() {
            anyhow::bail!("--cluster-cert and --cluster-key go together");
        }
        if self.cluster_user.is_some() != self.cluster_password_file.is_some() {
            anyhow::bail!("--cluster-user and --cluster-password-file go together");
        }
        for path in [&self.cluster_ca, &self.cluster_cert, &self.cluster_key]
            .into_iter()
            .flatten()
        {
            if let Err(e) = std::fs::metadata(path) {
                anyhow::bail!("cannot read {}: {e}", path.display());
            }
        }
        Ok(())
    }

    /// How to reach the cluster's NATS server, the password read from its file.
    pub(super) fn cluster_connect(&self) -> anyhow::Result<Option<ClusterConnect>> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let credentials = match (&self.cluster_user, &self.cluster_password_file) {
            (Some(user), Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                let password = text.lines().next().unwrap_or_default().to_owned();
                if password.is_empty() {
                    anyhow::bail!("{}: the first line (the password) is empty", file.display());
                }
                Some((user.clone(), password))
            }
            _ => None,
        };
        Ok(Some(ClusterConnect {
            url: url.clone(),
            ca: self.cluster_ca.clone(),
            client_cert: self.cluster_cert.clone().zip(self.cluster_key.clone()),
            credentials,
        }))
    }
}
