//! `--presence-stores`: what a login's presence read and a presence change would cost in the
//! two shared stores issue 15 names as the place for presence read at login, beside what the
//! cluster does (docs/CLUSTER.md: each node keeps a replica fed by NATS messages).
//!
//! - **Replica**: a login reads its contacts' states from a `HashMap` in the node's memory;
//!   a change is one core NATS publish, fire and forget (timed until the client has written
//!   it to its socket, `flush`; no round trip, which is the point of it).
//! - **PostgreSQL**: a `presence (name PRIMARY KEY, node, state)` table; a login is one
//!   `SELECT ... WHERE name = ANY($1)` with the contacts' names, a change one upsert.
//! - **JetStream KV**: a bucket (a JetStream stream `KV_presence` of subjects
//!   `$KV.presence.>`, one message per subject, direct gets allowed, memory storage), spoken
//!   through core NATS requests as the KV clients do; a login is one direct get per contact
//!   (all 20 in flight at once, and one after the other), a change one acknowledged publish.
//!
//! Both stores are filled with `--clients` users first. Each operation runs `--changes` times
//! from one client, one at a time, so the figures are latencies on an idle store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Args;
use super::procs::{self, Postgres, TempDir};
use super::tally::print_percentiles;

/// The JetStream stream behind the KV bucket `presence`.
const STREAM: &str = "KV_presence";

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = TempDir::new("presence-stores")?;
    let cpu = args.server_cpu.map(|c| c.to_string());
    let pg = Postgres::start(&dir.0, cpu.as_deref())?;
    let js_dir = dir.0.join("jetstream");
    std::fs::create_dir_all(&js_dir)?;
    let js_dir = js_dir.to_str().context("temporary path")?.to_owned();
    let (nats, nats_port) = procs::start_nats(cpu.as_deref(), &["-js", "-sd", &js_dir])?;
    let users = args.clients;
    let ops = args.changes;
    let contacts = args.contacts;
    println!(
        "presence stores: {users} users, {contacts} contacts a login, {ops} operations each, \
         one client, one operation at a time"
    );
    let names: Vec<String> = (0..users).map(|i| format!("u{i:06}")).collect();
    // The contacts of a login: `contacts` names around a random user, as in the cluster mode.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let logins: Vec<Vec<String>> = (0..ops)
        .map(|_| {
            let me = (next() % users as u64) as usize;
            (1..=contacts / 2)
                .flat_map(|d| [(me + d) % users, (me + users - d) % users])
                .map(|i| names[i].clone())
                .collect()
        })
        .collect();
    let changers: Vec<String> = (0..ops)
        .map(|_| names[(next() % users as u64) as usize].clone())
        .collect();

    // The replica: a map in memory.
    let replica: HashMap<String, (u64, &str)> =
        names.iter().map(|n| (n.clone(), (1, "NLN"))).collect();
    let mut read = Vec::with_capacity(ops);
    let mut seen = 0usize;
    for login in &logins {
        let t = Instant::now();
        seen += login.iter().filter(|n| replica.contains_key(*n)).count();
        read.push(t.elapsed());
    }
    if seen != ops * contacts {
        bail!("the replica misses users");
    }

    // PostgreSQL.
    let mut db = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls)?;
    db.batch_execute(&format!(
        "CREATE TABLE presence (name TEXT COLLATE \"C\" PRIMARY KEY, node BIGINT NOT NULL, \
         state TEXT NOT NULL);
         INSERT INTO presence SELECT 'u' || lpad(i::text, 6, '0'), 1, 'NLN'
           FROM generate_series(0, {}) AS i;
         ANALYZE presence;",
        users - 1
    ))?;
    let select = db.prepare("SELECT name, state FROM presence WHERE name = ANY($1)")?;
    let upsert = db.prepare(
        "INSERT INTO presence (name, node, state) VALUES ($1, 2, $2) \
         ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node, state = EXCLUDED.state",
    )?;
    let mut pg_read = Vec::with_capacity(ops);
    for login in &logins {
        let t = Instant::now();
        let rows = db.query(&select, &[login])?;
        pg_read.push(t.elapsed());
        if rows.len() != contacts {
            bail!("PostgreSQL returned {} rows, not {contacts}", rows.len());
        }
    }
    let mut pg_write = Vec::with_capacity(ops);
    for (i, name) in changers.iter().enumerate() {
        let state = if i % 2 == 0 { "AWY" } else { "BSY" };
        let t = Instant::now();
        db.execute(&upsert, &[name, &state])?;
        pg_write.push(t.elapsed());
    }

    // NATS: the replica's publish, and JetStream KV.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let nats_figures = runtime.block_on(nats_side(nats_port, &names, &logins, &changers))?;
    drop(nats);
    drop(pg);

    println!("\nA login reads {contacts} contacts' presence:");
    print_percentiles("  replica (in memory)     ", &mut read);
    print_percentiles("  PostgreSQL, one SELECT  ", &mut pg_read);
    let [mut kv_parallel, mut kv_serial, mut publish, mut kv_put] = nats_figures;
    print_percentiles("  KV, 20 gets at once     ", &mut kv_parallel);
    print_percentiles("  KV, 20 gets in a row    ", &mut kv_serial);
    println!("A presence change is written:");
    print_percentiles("  replica: NATS publish   ", &mut publish);
    print_percentiles("  PostgreSQL upsert       ", &mut pg_write);
    print_percentiles("  KV put, acknowledged    ", &mut kv_put);
    Ok(())
}

/// `[KV login read, 20 at once; KV login read, one by one; core publish; KV put]`.
async fn nats_side(
    port: u16,
    names: &[String],
    logins: &[Vec<String>],
    changers: &[String],
) -> anyhow::Result<[Vec<Duration>; 4]> {
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}")).await?;
    let request = |subject: String, body: String| {
        let client = client.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                client.request(subject, body.into_bytes().into()),
            )
            .await
            .context("NATS request timed out")?
            .map_err(anyhow::Error::from)
        }
    };
    let config = serde_json::json!({
        "name": STREAM,
        "subjects": ["$KV.presence.>"],
        "retention": "limits",
        "max_msgs_per_subject": 1,
        "discard": "new",
        "storage": "memory",
        "num_replicas": 1,
        "allow_direct": true,
        "allow_rollup_hdrs": true,
        "deny_delete": true,
    });
    let created = request(
        format!("$JS.API.STREAM.CREATE.{STREAM}"),
        config.to_string(),
    )
    .await?;
    if String::from_utf8_lossy(&created.payload).contains("\"error\"") {
        bail!(
            "cannot create the KV bucket: {}",
            String::from_utf8_lossy(&created.payload)
        );
    }
    // Fill it: publishes without acknowledgement, then one acknowledged put to know all
    // before it are stored (one publisher, in order).
    for name in names {
        client
            .publish(format!("$KV.presence.{name}"), "NLN".into())
            .await?;
    }
    client.flush().await?;
    let ack = request(format!("$KV.presence.{}", names[0]), "NLN".to_owned()).await?;
    if !String::from_utf8_lossy(&ack.payload).contains("\"seq\"") {
        bail!(
            "KV put not acknowledged: {}",
            String::from_utf8_lossy(&ack.payload)
        );
    }
    let get = |name: &str| {
        request(
            format!("$JS.API.DIRECT.GET.{STREAM}.$KV.presence.{name}"),
            String::new(),
        )
    };
    let mut parallel = Vec::with_capacity(logins.len());
    let mut serial = Vec::with_capacity(logins.len());
    for login in logins {
        let t = Instant::now();
        let all = futures_util::future::join_all(login.iter().map(|n| get(n))).await;
        parallel.push(t.elapsed());
        for reply in all {
            if reply?.payload.as_ref() != b"NLN" {
                bail!("a KV get did not return the value put");
            }
        }
        let t = Instant::now();
        for name in login {
            get(name).await?;
        }
        serial.push(t.elapsed());
    }
    let mut publish = Vec::with_capacity(changers.len());
    let mut put = Vec::with_capacity(changers.len());
    for name in changers {
        let t = Instant::now();
        client
            .publish("p2p.rdv.all.presence", format!("{name} AWY").into())
            .await?;
        client.flush().await?;
        publish.push(t.elapsed());
        let t = Instant::now();
        let ack = request(format!("$KV.presence.{name}"), "BSY".to_owned()).await?;
        put.push(t.elapsed());
        if !String::from_utf8_lossy(&ack.payload).contains("\"seq\"") {
            bail!(
                "KV put not acknowledged: {}",
                String::from_utf8_lossy(&ack.payload)
            );
        }
    }
    Ok([parallel, serial, publish, put])
}
