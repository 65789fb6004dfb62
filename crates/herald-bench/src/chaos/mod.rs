//! The `chaos` scenario: herald's cluster-mode promise checked under faults.
//!
//! Replicas of the herald binary on Redis (a primary and a replica with AOF, each behind a fault
//! proxy, three Sentinels) sit behind a round-robin TCP balancer, in front of the testkit's legacy
//! API, whose task list changes every `--change-every` (200–500 ms; task 1's title is `v<n>`,
//! `n` counting the changes, so that any copy says which change it has reached). SSE subscribers keep live copies
//! of `/tasks` (item events) and `/board` (JSON Patch) through the balancer; webhook
//! subscriptions on `/tasks` deliver to testkit receivers. Meanwhile, a seeded schedule injects
//! one fault at a time (see [`faults::Kind`]). At the end, changes stop and, once everything is
//! quiet, the run checks that:
//! - every subscriber's copy equals the upstream's representation;
//! - no subscriber was skipped past an event or given one twice (ids `<epoch>-<seq>` are
//!   consecutive between snapshots), and no event id carried two different events;
//! - every change a `/tasks` subscriber received as an event was delivered to every webhook
//!   subscription, each subscription's last delivery is the final change, and no `webhook-id`
//!   carried two different bodies;
//! - the upstream saw no more polls per interval per watch than one, plus one per lease
//!   takeover (`herald_cluster_lease_changes_total`, summed over every replica process);
//! - no replica exited unless told to.
//!
//! The figures and the verdict are printed as a table and one JSON line; the exit status is
//! non-zero when a check fails. The run's directory (configurations, herald's and Redis's logs)
//! is kept and named when a check fails or with `--keep`.

mod faults;
mod redis;
mod replicas;
mod subscriber;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::{Balancer, LegacyApi, Receiver};
use serde_json::{json, Value};

use crate::percentile;
pub use faults::Kind;
use replicas::Replica;
use subscriber::{Record, Resource};

const KEY: &str = "chaos-api-key-0123456789";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// `sse.heartbeat`: a subscriber gives a stream up after three silent ones.
const HEARTBEAT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Clone)]
pub struct Args {
    /// How long the upstream changes and faults are injected.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// herald replicas.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// SSE subscribers (half on `/tasks`, half on `/board`).
    #[arg(long, default_value_t = 300)]
    pub subs: usize,
    /// Webhook subscriptions on `/tasks`, each with a receiver of its own.
    #[arg(long, default_value_t = 3)]
    pub webhooks: usize,
    /// Time between faults, a range: `20s..40s`.
    #[arg(long, default_value = "20s..40s", value_parser = parse_range)]
    pub fault_every: (Duration, Duration),
    /// The seed of the fault schedule and the changes (random, and printed, when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The faults to choose from (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<Kind>,
    /// The `redis-server` binary (also run as Sentinel).
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: PathBuf,
    /// Redis's `appendfsync`: `always` loses nothing when Redis is killed; `everysec` may lose
    /// the last second.
    #[arg(long, default_value = "always")]
    pub appendfsync: String,
    /// Redis's `min-replicas-to-write` (docs/operations.md recommends 1 with Sentinel).
    #[arg(long, default_value_t = 1)]
    pub min_replicas_to_write: u32,
    /// `storage.lease`.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// The routes' poll interval.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// How long to wait, after the last change, for every copy and receiver to catch up.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub quiesce: Duration,
    /// Keep the run's directory (logs, configurations) even when every check passes.
    #[arg(long)]
    pub keep: bool,
    /// Time between two changes of the upstream, a range.
    #[arg(long, default_value = "200ms..500ms", value_parser = parse_range)]
    pub change_every: (Duration, Duration),
    /// Tasks besides task 1 retitled with each change: each is one more item event to every
    /// stream and one more message to every webhook subscription (the webhook load).
    #[arg(long, default_value_t = 0)]
    pub touch: usize,
    /// Count a change that streams carried but webhooks delivered only merged into a later
    /// message (the final state delivered) instead of failing on it: for experiments beyond
    /// what herald keeps (docs/webhooks.md "Durability" says when changes still merge).
    #[arg(long)]
    pub allow_merged_webhooks: bool,
}

/// `20s..40s` (or one duration: always that).
fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let parse =
        |v: &str| humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?}: {e} (expected e.g. 20s..40s)"));
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(format!("{s}: the range's start is after its end"));
    }
    Ok((lo, hi))
}

/// The last value of each counter of each replica process, so that a process killed keeps
/// counting: `(replica, incarnation, sample) → value`.
#[derive(Default)]
struct Scraper {
    last: Mutex<HashMap<(usize, u32, String), f64>>,
}

const LEASE_CHANGES: &str = "herald_cluster_lease_changes_total";

impl Scraper {
    async fn scrape(&self, r: &Replica) {
        if let Some(samples) = r.metrics(&[LEASE_CHANGES]).await {
            let mut last = self.last.lock().unwrap();
            for (sample, value) in samples {
                last.insert((r.index, r.incarnation, sample), value);
            }
        }
    }

    /// Lease takeovers per route, over every process.
    fn takeovers(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((_, _, sample), value) in self.last.lock().unwrap().iter() {
            let route = sample.split("route=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            *out.entry(route.to_string()).or_insert(0.0) += value;
        }
        out
    }
}

/// One fault as injected.
struct Injected {
    at: Duration,
    /// When it was healed (from the start of the changes, as `at`).
    ended: Duration,
    kind: Kind,
    /// What was done, or why it could not be (a replica that would not stop is a finding).
    outcome: Result<String, String>,
}

pub async fn run(args: Args, herald: PathBuf) -> anyhow::Result<Value> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let kinds: Vec<Kind> = if args.kinds.is_empty() { Kind::ALL.to_vec() } else { args.kinds.clone() };
    eprintln!(
        "chaos: seed {seed}, {} replicas, {} subscribers, {} webhooks, faults every {:?}..{:?} from {:?}",
        args.replicas,
        args.subs,
        args.webhooks,
        args.fault_every.0,
        args.fault_every.1,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    let dir = tempfile::Builder::new().prefix("herald-chaos-").tempdir()?;
    let started = Instant::now();

    let redis = redis::Topology::start(
        dir.path(),
        &redis::Options {
            bin: args.redis_bin.clone(),
            appendfsync: args.appendfsync.clone(),
            min_replicas_to_write: args.min_replicas_to_write,
        },
    )
    .await?;
    eprintln!("chaos: redis primary, replica and 3 sentinels up ({:.1}s)", started.elapsed().as_secs_f64());

    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    let mut receivers = Vec::new();
    for _ in 0..args.webhooks {
        let r = Receiver::new();
        let addr = r.serve("127.0.0.1:0".parse()?).await?;
        r.trust(SECRET);
        receivers.push((r, addr));
    }

    let yaml = config(&args, upstream, &redis.url());
    let mut replicas = Vec::new();
    for i in 0..args.replicas {
        let mut r = Replica::new(i, dir.path(), &herald, &yaml)?;
        r.start(Duration::from_secs(60)).await?;
        replicas.push(r);
    }
    let balancer = Balancer::start(replicas.iter().map(|r| r.public).collect()).await?;
    let base = format!("http://{}", balancer.addr());
    eprintln!("chaos: {} replicas ready behind {base} ({:.1}s)", args.replicas, started.elapsed().as_secs_f64());

    for (_, addr) in &receivers {
        subscribe_webhook(&base, &format!("http://{addr}/hook")).await?;
    }

    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let stop_subs = Arc::new(AtomicBool::new(false));
    let mut records: subscriber::Records = BTreeMap::new();
    let mut sub_tasks = Vec::new();
    for i in 0..args.subs {
        let resource = if i % 2 == 0 { Resource::Tasks } else { Resource::Board };
        let record = Arc::new(Mutex::new(Record::default()));
        records.entry(resource).or_default().push(record.clone());
        sub_tasks.push(tokio::spawn(subscriber::run(
            client.clone(),
            base.clone(),
            resource,
            HEARTBEAT,
            record,
            stop_subs.clone(),
        )));
    }
    redis::wait_for(Duration::from_secs(120), "every subscriber has its snapshot", || {
        records.values().flatten().all(|r| r.lock().unwrap().copy.is_some())
    })
    .await?;
    // The webhook watch records its starting point at its first poll: changes start after it.
    tokio::time::sleep(args.poll * 4 + Duration::from_secs(2)).await;
    eprintln!("chaos: {} subscribers have their snapshot ({:.1}s)", args.subs, started.elapsed().as_secs_f64());

    let replicas = tokio::sync::Mutex::new(replicas);
    let redis = tokio::sync::Mutex::new(redis);
    let scraper = Scraper::default();
    let unexpected_exits: Mutex<Vec<String>> = Mutex::default();
    let mut rng = fastrand::Rng::with_seed(seed);

    // The upstream's changes, each at a known time (`made[n - 1]`: when `v<n>` was made).
    let made: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop_changes = Arc::new(AtomicBool::new(false));
    let changer = tokio::spawn(change(api.clone(), made.clone(), stop_changes.clone(), rng.u64(..), args.clone()));

    // Scrapes every replica each second and notices one that exited without being told to (an
    // injected fault holds the lock, so a replica it stops is not noticed here).
    let watching = AtomicBool::new(true);
    let watch = async {
        while watching.load(Ordering::Relaxed) {
            {
                let mut replicas = replicas.lock().await;
                for r in replicas.iter_mut() {
                    if let Some(status) = r.exited() {
                        let line = format!("replica {} exited on its own ({status}); see {}", r.index, r.log.display());
                        eprintln!("\nchaos: {line}");
                        unexpected_exits.lock().unwrap().push(line);
                        let _ = r.start(Duration::from_secs(60)).await;
                    }
                    scraper.scrape(r).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };

    let targets = faults::Targets { replicas: &replicas, redis: &redis, scraper: &scraper, lease: args.lease };
    let chaos_started = Instant::now();
    let schedule = async {
        let mut injected = Vec::new();
        loop {
            let (lo, hi) = args.fault_every;
            let wait = lo + (hi - lo).mul_f64(rng.f64());
            if chaos_started.elapsed() + wait >= args.duration {
                tokio::time::sleep(args.duration.saturating_sub(chaos_started.elapsed())).await;
                break;
            }
            tokio::time::sleep(wait).await;
            let kind = kinds[rng.usize(..kinds.len())];
            let at = chaos_started.elapsed();
            eprintln!("chaos: {:>6.1}s {} …", at.as_secs_f64(), kind.name());
            let outcome = faults::inject(kind, &targets, &mut rng).await.map_err(|e| format!("{e:#}"));
            match &outcome {
                Ok(line) => eprintln!("chaos: {:>6.1}s   {line}", chaos_started.elapsed().as_secs_f64()),
                Err(e) => eprintln!("chaos: {:>6.1}s   FAILED: {e}", chaos_started.elapsed().as_secs_f64()),
            }
            injected.push(Injected { at, kind, ended: chaos_started.elapsed(), outcome });
        }
        stop_changes.store(true, Ordering::Relaxed);
        injected
    };
    let (injected, ()) = tokio::join!(
        async {
            let injected = schedule.await;
            watching.store(false, Ordering::Relaxed);
            injected
        },
        watch,
    );
    changer.await?;
    let changes = made.lock().unwrap().len() as u64;
    eprintln!("chaos: {changes} changes made; waiting for quiet (at most {:?})", args.quiesce);

    // Quiet: every copy equals the upstream's and every receiver has the last change.
    let want: BTreeMap<Resource, Value> = [Resource::Tasks, Resource::Board]
        .into_iter()
        .map(|r| {
            let body = if r == Resource::Tasks { api.tasks() } else { api.board() };
            (r, subscriber::comparable(r, &body))
        })
        .collect();
    let quiet_started = Instant::now();
    let quiet = loop {
        let copies_done =
            records.iter().all(|(res, recs)| recs.iter().all(|r| r.lock().unwrap().copy.as_ref() == Some(&want[res])));
        let hooks_done = receivers.iter().all(|(r, _)| webhook_versions(r).0.last() == Some(&changes));
        if copies_done && hooks_done {
            break true;
        }
        if quiet_started.elapsed() > args.quiesce {
            break false;
        }
        {
            let mut replicas = replicas.lock().await;
            for r in replicas.iter_mut() {
                scraper.scrape(r).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let quiet_after = quiet_started.elapsed();
    stop_subs.store(true, Ordering::Relaxed);
    for t in sub_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    for r in replicas.lock().await.iter_mut() {
        if let Some(status) = r.exited() {
            unexpected_exits.lock().unwrap().push(format!("replica {} exited on its own ({status})", r.index));
        }
        scraper.scrape(r).await;
    }

    let made = made.lock().unwrap().clone();
    let result = check(Check {
        args: &args,
        seed,
        kinds: &kinds,
        injected: &injected,
        records: &records,
        want: &want,
        receivers: &receivers,
        api: &api,
        scraper: &scraper,
        made: &made,
        chaos_started,
        quiet: quiet.then_some(quiet_after),
        unexpected_exits: &unexpected_exits.lock().unwrap(),
        balancer_turned_away: balancer.turned_away(),
    });
    let failed = !result["failures"].as_array().is_some_and(Vec::is_empty);
    let mut result = result;
    if failed || args.keep {
        result["run_dir"] = json!(dir.keep().display().to_string());
    }
    Ok(result)
}

/// herald's configuration, with `{listen}` and `{admin}` left for each replica.
fn config(args: &Args, upstream: std::net::SocketAddr, redis: &str) -> String {
    let poll = humantime::format_duration(args.poll);
    let lease = humantime::format_duration(args.lease);
    let every = format!("{{ interval: {poll}, min_interval: {poll}, adaptive: false, jitter: 0 }}");
    format!(
        "server: {{ listen: '{{listen}}', admin_listen: '{{admin}}', shutdown_grace: 5s, max_connections: 100000 }}\n\
         upstream: {{ url: 'http://{upstream}', timeout: 2s }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {{ kind: redis, url: '{redis}', prefix: chaos, lease: {lease} }}\n\
         sse: {{ heartbeat: {heartbeat}, max_subscribers: 100000 }}\n\
         webhooks:\n  api_keys: [{KEY}]\n  timeout: 2s\n  \
         retry_schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 5s, 5s, 5s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s]\n  \
         allow_private_destinations: [127.0.0.0/8]\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    webhooks: true\n    \
         poll: {every}\n    events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n  \
         - name: board\n    path: /board\n    access: public\n    \
         poll: {every}\n    events: {{ format: json-patch, array_id: /id }}\n",
        heartbeat = humantime::format_duration(HEARTBEAT),
    )
}

/// Creates a webhook subscription on `/tasks` through the balancer (retried: a replica may be
/// starting).
async fn subscribe_webhook(base: &str, url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let body = json!({"url": url, "path": "/tasks", "secret": SECRET, "description": "chaos"});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client
            .post(format!("{base}/_herald/v1/webhooks"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 201 => return Ok(()),
            Ok(r) if Instant::now() > deadline => anyhow::bail!("creating a webhook subscription: {}", r.status()),
            Err(e) if Instant::now() > deadline => anyhow::bail!("creating a webhook subscription: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Changes the task list every `--change-every` until `stop`: task 1 is retitled `v<n>` (and
/// `--touch` others), and now and then a task is added (titled `v<n>` too), one other than
/// task 1 removed, or one toggled.
async fn change(api: LegacyApi, made: Arc<Mutex<Vec<Instant>>>, stop: Arc<AtomicBool>, seed: u64, args: Args) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0u64;
    if args.touch > 0 {
        api.add_tasks(args.touch);
    }
    let (lo, hi) = (args.change_every.0.as_millis() as u64, args.change_every.1.as_millis() as u64);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let roll = rng.u8(..10);
        let touched: Vec<usize> = (0..args.touch).map(|_| rng.usize(..)).collect();
        api.edit(|tasks, new_task| {
            for t in tasks.iter_mut().filter(|t| t["id"] == "1") {
                t["title"] = json!(format!("v{n}"));
            }
            if tasks.len() > 1 {
                for i in &touched {
                    let i = 1 + i % (tasks.len() - 1);
                    tasks[i]["title"] = json!(format!("touched {n}"));
                }
            }
            match roll {
                0 | 1 => tasks.push(new_task(&format!("v{n}"))),
                2 if tasks.len() > 3 => {
                    let i = 1 + rng.usize(..tasks.len() - 1);
                    tasks.remove(i);
                }
                3 => {
                    let i = rng.usize(..tasks.len());
                    let done = tasks[i]["done"].as_bool().unwrap_or(false);
                    tasks[i]["done"] = json!(!done);
                }
                _ => {}
            }
        });
        made.lock().unwrap().push(Instant::now());
        tokio::time::sleep(Duration::from_millis(rng.u64(lo..=hi))).await;
    }
}

/// The change numbers a receiver got for task 1 (sorted, deduplicated by `webhook-id`), the
/// ids that carried more than one body, and how many distinct ids it accepted.
fn webhook_versions(r: &Receiver) -> (Vec<u64>, Vec<String>, usize) {
    let mut bodies: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut versions = BTreeSet::new();
    for d in r.accepted() {
        let data = &d.body["data"];
        if d.event_type == "task.updated" && data["resourceId"] == "1" {
            if let Some(v) = data["resourceDetails"]["title"].as_str().and_then(|t| t.strip_prefix('v')) {
                versions.extend(v.parse::<u64>().ok());
            }
        }
        bodies.entry(d.id.clone()).or_default().insert(d.body.to_string());
    }
    let distinct = bodies.len();
    let conflicting = bodies.into_iter().filter(|(_, b)| b.len() > 1).map(|(id, _)| id).collect();
    (versions.into_iter().collect(), conflicting, distinct)
}

struct Check<'a> {
    args: &'a Args,
    seed: u64,
    kinds: &'a [Kind],
    injected: &'a [Injected],
    records: &'a subscriber::Records,
    want: &'a BTreeMap<Resource, Value>,
    receivers: &'a [(Receiver, std::net::SocketAddr)],
    api: &'a LegacyApi,
    scraper: &'a Scraper,
    made: &'a [Instant],
    /// When changes and faults started: fault times count from it.
    chaos_started: Instant,
    /// How long the end took to become quiet (`None`: it did not within `--quiesce`).
    quiet: Option<Duration>,
    unexpected_exits: &'a [String],
    balancer_turned_away: u64,
}

impl Check<'_> {
    /// When change `v` was made, and the fault in progress then (or ended at most 5 s before).
    fn when(&self, v: u64) -> String {
        let Some(made) = v.checked_sub(1).and_then(|i| self.made.get(i as usize)) else { return "never made".into() };
        let t = made.saturating_duration_since(self.chaos_started);
        let near = self.injected.iter().find(|f| f.at <= t && t <= f.ended + Duration::from_secs(5));
        match near {
            Some(f) => format!(
                "made at {:.1}s, {} at {:.1}s-{:.1}s",
                t.as_secs_f64(),
                f.kind.name(),
                f.at.as_secs_f64(),
                f.ended.as_secs_f64()
            ),
            None => format!("made at {:.1}s, no fault near", t.as_secs_f64()),
        }
    }
}

/// Every check, and the figures; `failures` lists what failed (empty: the promise held).
fn check(c: Check<'_>) -> Value {
    let mut failures: Vec<String> = Vec::new();
    let changes = c.made.len() as u64;

    // Subscribers: copies, the order of ids, one event per id.
    let mut delays = Vec::new();
    let mut sse = json!({});
    let mut streamed_versions = BTreeSet::new();
    for (resource, recs) in c.records {
        let mut by_id: HashMap<(String, u64), u64> = HashMap::new();
        let (mut wrong, mut events, mut snapshots, mut resumed, mut connections, mut silent) = (0, 0, 0, 0, 0, 0);
        let (mut conflicts, mut violations) = (Vec::new(), Vec::new());
        for rec in recs {
            let rec = rec.lock().unwrap();
            if rec.copy.as_ref() != Some(&c.want[resource]) {
                wrong += 1;
            }
            violations.extend(rec.violations.iter().cloned());
            snapshots += rec.snapshots;
            resumed += rec.snapshots_on_resume;
            connections += rec.connections;
            silent += rec.silent_drops;
            for ev in &rec.events {
                if let Some(&digest) = by_id.get(&ev.id) {
                    if digest != ev.digest && !ev.snapshot {
                        conflicts.push(format!("{}-{}", ev.id.0, ev.id.1));
                    }
                } else if !ev.snapshot {
                    by_id.insert(ev.id.clone(), ev.digest);
                }
                if ev.snapshot {
                    continue;
                }
                events += 1;
                if ev.raised {
                    if let Some(at) = ev.version.checked_sub(1).and_then(|v| c.made.get(v as usize)) {
                        delays.push(ev.at.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                    }
                    if *resource == Resource::Tasks {
                        streamed_versions.insert(ev.version);
                    }
                }
            }
        }
        let name = resource.path().trim_start_matches('/');
        if wrong > 0 {
            failures.push(format!("{wrong} of {} /{name} subscribers' copies differ from the upstream's", recs.len()));
        }
        if !violations.is_empty() {
            failures.push(format!(
                "{} stream violations on /{name}, e.g. {}",
                violations.len(),
                violations.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        conflicts.sort();
        conflicts.dedup();
        if !conflicts.is_empty() {
            failures.push(format!(
                "{} event ids on /{name} carried two different events, e.g. {}",
                conflicts.len(),
                conflicts.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        sse[name] = json!({
            "subscribers": recs.len(),
            "wrong_copies": wrong,
            "events": events,
            "snapshots": snapshots,
            "snapshots_on_resume": resumed,
            "connections": connections,
            "silent_drops": silent,
            "violations": violations.len(),
            "conflicting_ids": conflicts.len(),
        });
    }

    // Webhooks: no change that reached streams lost, the last one delivered, one body per id.
    let mut hooks = Vec::new();
    for (i, (r, _)) in c.receivers.iter().enumerate() {
        let (versions, conflicting, distinct) = webhook_versions(r);
        let have: BTreeSet<u64> = versions.iter().copied().collect();
        let missing: Vec<u64> = streamed_versions.difference(&have).copied().collect();
        let last = versions.last().copied().unwrap_or(0);
        // Merged into a later message: allowed only when asked, and only if that one came.
        let merged_ok = c.args.allow_merged_webhooks && last == changes;
        if !missing.is_empty() && !merged_ok {
            let named: Vec<String> = missing.iter().take(8).map(|&v| format!("v{v} ({})", c.when(v))).collect();
            failures.push(format!(
                "webhook subscription {i}: {} changes streamed to subscribers never delivered: {}",
                missing.len(),
                named.join(", ")
            ));
        }
        if last != changes {
            failures.push(format!("webhook subscription {i}: last delivered v{last}, the upstream is at v{changes}"));
        }
        if !conflicting.is_empty() {
            failures.push(format!(
                "webhook subscription {i}: {} webhook-ids carried two different bodies, e.g. {}",
                conflicting.len(),
                conflicting[0]
            ));
        }
        hooks.push(json!({
            "accepted": r.accepted_count(),
            "distinct_ids": distinct,
            "task1_versions": versions.len(),
            "missing_versions": missing.len(),
            "last_version": last,
            "conflicting_ids": conflicting.len(),
            "rejected_signatures": r.rejected(),
        }));
    }

    // Polls: no more than one per interval per watch, plus one per takeover.
    let takeovers = c.scraper.takeovers();
    let mut polls = json!({});
    for (route, path) in [("tasks", "/tasks"), ("board", "/board")] {
        let seen: Vec<Instant> = c.api.seen(path).into_iter().map(|r| r.at).collect();
        // Closer than nine tenths of an interval: a timer a little early is not a second poller.
        let early = seen.windows(2).filter(|w| w[1] - w[0] < c.args.poll.mul_f64(0.9)).count();
        let taken = takeovers.get(route).copied().unwrap_or(0.0);
        let span = match (seen.first(), seen.last()) {
            (Some(a), Some(b)) => (*b - *a).as_secs_f64(),
            _ => 0.0,
        };
        if early as f64 > taken {
            failures.push(format!(
                "/{route}: {early} polls came less than an interval after the previous one, with {taken} lease takeovers"
            ));
        }
        polls[route] = json!({
            "requests": seen.len(),
            "per_interval": seen.len() as f64 / (span / c.args.poll.as_secs_f64()).max(1.0),
            "early": early,
            "takeovers": taken,
        });
    }

    for e in c.unexpected_exits {
        failures.push(e.clone());
    }
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for f in c.injected {
        *by_kind.entry(f.kind.name()).or_default() += 1;
        if let Err(e) = &f.outcome {
            failures.push(format!(
                "fault {} at {:.1}s could not be carried out: {e}",
                f.kind.name(),
                f.at.as_secs_f64()
            ));
        }
    }
    if c.quiet.is_none() {
        failures.push(format!("not quiet within {:?} of the last change", c.args.quiesce));
    }
    delays.sort_by(f64::total_cmp);
    json!({
        "scenario": "chaos",
        "seed": c.seed,
        "duration_s": c.args.duration.as_secs_f64(),
        "replicas": c.args.replicas,
        "kinds": c.kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "faults": by_kind,
        "fault_log": c.injected.iter().map(|f| json!({
            "at_s": (f.at.as_secs_f64() * 10.0).round() / 10.0,
            "kind": f.kind.name(),
            "took_s": ((f.ended - f.at).as_secs_f64() * 10.0).round() / 10.0,
            "outcome": match &f.outcome { Ok(s) => s.clone(), Err(e) => format!("FAILED: {e}") },
        })).collect::<Vec<_>>(),
        "changes": changes,
        "sse": sse,
        "sse_events": sse.as_object().map_or(0, |o| o.values().map(|v| v["events"].as_u64().unwrap_or(0)).sum::<u64>()),
        "snapshots_on_resume": sse.as_object().map_or(0, |o| o.values().map(|v| v["snapshots_on_resume"].as_u64().unwrap_or(0)).sum::<u64>()),
        "webhooks": hooks,
        "webhook_deliveries": c.receivers.iter().map(|(r, _)| r.accepted_count()).sum::<usize>(),
        "takeovers": takeovers,
        "polls": polls,
        "delay_ms": {"p50": percentile(&delays, 50.0), "p99": percentile(&delays, 99.0), "max": delays.last().copied().unwrap_or(0.0)},
        "quiet_after_s": c.quiet.map(|d| d.as_secs_f64()),
        "balancer_turned_away": c.balancer_turned_away,
        "failures": failures,
    })
}

/// The table, then the JSON line (without the fault log, which the table shows).
pub fn print(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "chaos: seed {}, {} s, {} replicas, {} changes",
        r["seed"],
        f(&r["duration_s"]),
        r["replicas"],
        r["changes"]
    );
    for entry in r["fault_log"].as_array().into_iter().flatten() {
        println!(
            "  fault {:>6.1}s {:<14} {}",
            f(&entry["at_s"]),
            entry["kind"].as_str().unwrap_or(""),
            entry["outcome"].as_str().unwrap_or("")
        );
    }
    println!("  faults by kind: {}", r["faults"]);
    for (name, s) in r["sse"].as_object().into_iter().flatten() {
        println!(
            "  /{name:<5}: {} subscribers, {} wrong copies, {} events, {} snapshots ({} on resume), {} connections, {} silent drops, {} violations, {} conflicting ids",
            s["subscribers"], s["wrong_copies"], s["events"], s["snapshots"], s["snapshots_on_resume"], s["connections"], s["silent_drops"], s["violations"], s["conflicting_ids"]
        );
    }
    for (i, h) in r["webhooks"].as_array().into_iter().flatten().enumerate() {
        println!(
            "  webhook {i}: {} accepted, {} distinct ids, {} versions of task 1, {} missing, last v{}, {} conflicting ids",
            h["accepted"], h["distinct_ids"], h["task1_versions"], h["missing_versions"], h["last_version"], h["conflicting_ids"]
        );
    }
    for (route, p) in r["polls"].as_object().into_iter().flatten() {
        println!(
            "  polls /{route:<5}: {} requests, {:.2} per interval, {} early, {} takeovers",
            p["requests"],
            f(&p["per_interval"]),
            p["early"],
            p["takeovers"]
        );
    }
    let d = &r["delay_ms"];
    println!("  change → event: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", f(&d["p50"]), f(&d["p99"]), f(&d["max"]));
    match r["quiet_after_s"].as_f64() {
        Some(s) => println!("  quiet {s:.1} s after the last change"),
        None => println!("  never quiet"),
    }
    for failure in r["failures"].as_array().into_iter().flatten() {
        println!("  FAILED: {}", failure.as_str().unwrap_or(""));
    }
    if let Some(dir) = r["run_dir"].as_str() {
        println!("  logs and configurations kept in {dir}");
    }
    let mut line = r.clone();
    if let Some(o) = line.as_object_mut() {
        o.remove("fault_log");
    }
    println!("{line}");
}

/// Fails when any invariant failed.
pub fn verdict(r: &Value) -> anyhow::Result<()> {
    let failures = r["failures"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(failures == 0, "{failures} invariant(s) failed (seed {})", r["seed"]);
    Ok(())
}
