//! The upstream's own quota, as its answers announce it (`RateLimit`/`RateLimit-Policy` of the
//! IETF httpapi draft, the older draft's `RateLimit-*` fields, `X-RateLimit-*`): when the
//! remaining requests fall under a reserve, the polls drawing from that quota are spread so
//! that they last until its reset, instead of being spent at once and answered 429.
//!
//! One budget per credential sent: herald's own polls (with the service credential, if any) are
//! one budget, each subscriber credential its own (its quota is likely per user), and requests
//! made for subscribers who sent no credential one more, so that what the upstream answers them
//! never holds back herald's own polls. Every request the upstream client sends — polls, pages,
//! admission checks — draws from its budget.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderMap;
use tokio::time::Instant;

/// A reset this far away is taken for garbage and capped: one reading never stops polling for
/// longer than this.
const MAX_RESET: Duration = Duration::from_secs(3600);
/// `X-RateLimit-Reset` values above this are a Unix time (GitHub), below it delta-seconds.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;
/// ... and above this, a Unix time in milliseconds (2001-09-09 in milliseconds; in seconds, the
/// year 33658).
const EPOCH_MS_THRESHOLD: u64 = 1_000_000_000_000;
/// When the upstream names no limit, pacing starts this many requests before the end.
const DEFAULT_RESERVE: u64 = 10;
/// Subscriber budgets remembered at most; beyond it, expired readings go first, then any.
const MAX_BUDGETS: usize = 10_000;

/// One reading of the upstream's quota, from one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests left in the current window.
    pub remaining: u64,
    /// Until the window resets (from the answer's arrival).
    pub reset: Duration,
    /// The window's quota, when the answer names it.
    pub limit: Option<u64>,
}

impl RateLimit {
    /// Reads the first form present, in this order: the IETF draft's structured `RateLimit`
    /// (`"default";r=50;t=30`, with `q` from `RateLimit-Policy`), the older draft's
    /// `RateLimit: limit=100, remaining=50, reset=30`, its separate `RateLimit-Remaining` /
    /// `RateLimit-Reset` / `RateLimit-Limit`, and `X-RateLimit-Remaining` / `X-RateLimit-Reset`
    /// / `X-RateLimit-Limit`. Anything unreadable is ignored, never an error.
    pub fn from_headers(h: &HeaderMap, now: SystemTime) -> Option<RateLimit> {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let int = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = text("ratelimit") {
            if let Some(r) = structured(v, text("ratelimit-policy")).or_else(|| dictionary(v)) {
                return Some(r);
            }
        }
        for prefix in ["ratelimit", "x-ratelimit"] {
            let (Some(remaining), Some(reset)) = (int(&format!("{prefix}-remaining")), int(&format!("{prefix}-reset")))
            else {
                continue;
            };
            let reset = match reset {
                _ if prefix != "x-ratelimit" => reset,
                ms if ms > EPOCH_MS_THRESHOLD => {
                    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                    // Rounded up: a client that waits that long finds a new window.
                    u64::try_from(u128::from(ms).saturating_sub(now).div_ceil(1000)).unwrap_or(u64::MAX)
                }
                secs if secs > EPOCH_THRESHOLD => {
                    secs.saturating_sub(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
                }
                delta => delta,
            };
            return Some(RateLimit::new(remaining, reset, int(&format!("{prefix}-limit"))));
        }
        None
    }

    fn new(remaining: u64, reset_secs: u64, limit: Option<u64>) -> Self {
        RateLimit { remaining, reset: Duration::from_secs(reset_secs).min(MAX_RESET), limit }
    }
}

/// `RateLimit: "default";r=50;t=30` (a list: the most constrained item counts) with
/// `RateLimit-Policy: "default";q=100;w=60` for the limit of the policy of the same name.
fn structured(v: &str, policy: Option<&str>) -> Option<RateLimit> {
    let list: sfv::List = sfv::Parser::new(v).parse().ok()?;
    let policies: sfv::List = policy.and_then(|p| sfv::Parser::new(p).parse().ok()).unwrap_or_default();
    let name = |item: &sfv::Item| match &item.bare_item {
        sfv::BareItem::String(s) => Some(s.as_str().to_string()),
        sfv::BareItem::Token(t) => Some(t.as_str().to_string()),
        _ => None,
    };
    let param = |item: &sfv::Item, key: &str| {
        item.params.iter().find(|(k, _)| k.as_str() == key).and_then(|(_, v)| v.as_integer()).map(i64::from)
    };
    let mut best: Option<RateLimit> = None;
    for entry in &list {
        let sfv::ListEntry::Item(item) = entry else { continue };
        let (Some(r), Some(t)) = (param(item, "r"), param(item, "t")) else { continue };
        let (Ok(r), Ok(t)) = (u64::try_from(r), u64::try_from(t)) else { continue };
        let limit = policies.iter().find_map(|p| match p {
            sfv::ListEntry::Item(p) if name(p).is_some() && name(p) == name(item) => {
                param(p, "q").and_then(|q| u64::try_from(q).ok())
            }
            _ => None,
        });
        let reading = RateLimit::new(r, t, limit);
        if best.is_none_or(|b| reading.remaining < b.remaining) {
            best = Some(reading);
        }
    }
    best
}

/// The older draft's `RateLimit: limit=100, remaining=50, reset=30` (a dictionary).
fn dictionary(v: &str) -> Option<RateLimit> {
    let dict: sfv::Dictionary = sfv::Parser::new(v).parse().ok()?;
    let int = |key: &str| match dict.iter().find(|(k, _)| k.as_str() == key)?.1 {
        sfv::ListEntry::Item(item) => item.bare_item.as_integer().and_then(|i| u64::try_from(i64::from(i)).ok()),
        sfv::ListEntry::InnerList(_) => None,
    };
    Some(RateLimit::new(int("remaining")?, int("reset")?, int("limit")))
}

/// Whose quota a request draws from: whose credential it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKey {
    /// herald's own polls (of public and shared watches): the service credential, or none
    /// configured.
    Service,
    /// A subscriber's own credential, by a hash of it (never the credential itself).
    Subscriber(u64),
    /// Requests made for subscribers who sent no credential: the upstream's answers to them
    /// (an anonymous quota, often per address) never hold back herald's own polls.
    Anonymous,
}

impl BudgetKey {
    /// The budget of a request for a subscriber (`for_subscriber`: a per-subscriber poll, an
    /// admission check) carrying `credentials`, or of one of herald's own polls.
    pub fn of(for_subscriber: bool, credentials: &[(http::HeaderName, http::HeaderValue)]) -> Self {
        if !for_subscriber {
            return BudgetKey::Service;
        }
        if credentials.is_empty() {
            return BudgetKey::Anonymous;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (name, value) in credentials {
            name.as_str().hash(&mut h);
            value.as_bytes().hash(&mut h);
        }
        BudgetKey::Subscriber(h.finish())
    }
}

/// The budgets, each with its latest reading and the requests drawn from it still in flight.
#[derive(Debug, Default)]
pub struct Quota {
    budgets: Mutex<HashMap<BudgetKey, Budget>>,
    /// Requests left at which pacing starts; `None`: a tenth of the limit (at least 1), or
    /// [`DEFAULT_RESERVE`] when the upstream names no limit.
    reserve: Option<u64>,
}

#[derive(Debug, Default)]
struct Budget {
    reading: Option<Reading>,
    /// Requests drawn and not yet answered: a reading counts none of them for sure, so each
    /// one is taken off what it says is left.
    in_flight: u64,
    /// The last request drawn while pacing.
    last: Option<Instant>,
    /// Requests drawn so far, each numbered by it; and the number of the request whose answer
    /// gave the reading, so that an older answer, arriving late, is known for one.
    drawn: u64,
    read_from: u64,
}

#[derive(Debug)]
struct Reading {
    /// Left in the window, as last read, less the requests drawn since.
    remaining: u64,
    reserve: u64,
    /// When the window resets: the reading expires then.
    reset_at: Instant,
}

/// A request drawn from a budget: give it the reading its answer carried, if any, or drop it.
#[must_use]
pub struct Draw<'a> {
    quota: &'a Quota,
    key: BudgetKey,
    /// Its number among its budget's requests (0: not paced, not counted).
    seq: u64,
}

impl Quota {
    pub fn new(reserve: Option<u64>) -> Self {
        Quota { budgets: Mutex::default(), reserve }
    }

    /// Draws a request from `key`'s budget, to be sent at the instant returned with it (now,
    /// or its turn while the quota is spread: each request drawn takes the next turn, so that
    /// requests waiting together do not all wake at one). A turn later than `latest`, or no
    /// request left before the reset, is not taken: the error says when to ask again. Waiting
    /// is the caller's: it decides how long a request may wait, and what it holds meanwhile.
    pub fn draw(&self, key: BudgetKey, latest: Instant) -> Result<(Draw<'_>, Instant), Instant> {
        let (turn, seq) = self.try_admit(key, Instant::now(), latest)?;
        Ok((Draw { quota: self, key, seq }, turn))
    }

    /// The instant the request may go, and its number; or when to ask again.
    fn try_admit(&self, key: BudgetKey, now: Instant, latest: Instant) -> Result<(Instant, u64), Instant> {
        let mut budgets = self.budgets.lock().unwrap();
        if !budgets.contains_key(&key) && !fits(&mut budgets, key, now) {
            // Too many credentials at once to remember each: this one is not paced.
            return Ok((now, 0));
        }
        let b = budgets.entry(key).or_default();
        if b.reading.as_ref().is_some_and(|r| now >= r.reset_at) {
            b.reading = None;
            b.last = None;
        }
        let mut turn = now;
        if let Some(r) = &mut b.reading {
            if r.remaining == 0 {
                return Err(r.reset_at);
            }
            if r.remaining <= r.reserve {
                // What is left, spread evenly over what is left of the window after the last
                // turn taken.
                let left = u32::try_from(r.remaining).unwrap_or(u32::MAX);
                turn = match b.last {
                    Some(last) => (last + r.reset_at.saturating_duration_since(last.max(now)) / left).max(now),
                    None => now,
                };
                if turn > latest {
                    return Err(turn);
                }
                b.last = Some(turn);
            }
            r.remaining -= 1;
        }
        b.in_flight += 1;
        b.drawn += 1;
        Ok((turn, b.drawn))
    }

    /// Replaces `key`'s reading with one read now (as new as the newest request).
    #[cfg(test)]
    fn update(&self, key: BudgetKey, reading: RateLimit) {
        let seq = self.budgets.lock().unwrap().get(&key).map_or(0, |b| b.drawn);
        self.update_from(key, reading, seq);
    }

    /// Replaces `key`'s reading with the one the answer to its request number `seq` carried.
    fn update_from(&self, key: BudgetKey, reading: RateLimit, seq: u64) {
        let reserve =
            self.reserve.unwrap_or_else(|| reading.limit.map_or(DEFAULT_RESERVE, |limit| (limit / 10).max(1)));
        let mut budgets = self.budgets.lock().unwrap();
        if !budgets.contains_key(&key) && !fits(&mut budgets, key, Instant::now()) {
            return;
        }
        let b = budgets.entry(key).or_default();
        // The other requests in flight may have reached the upstream after this one.
        let others = b.in_flight.saturating_sub(1);
        let mut remaining = reading.remaining.saturating_sub(others);
        // Answers arrive out of order: an answer older than the one the reading came from never
        // gives back what the newer one, or a request drawn since, took.
        match b.reading.as_ref() {
            Some(held) if seq < b.read_from => remaining = remaining.min(held.remaining),
            _ => b.read_from = seq,
        }
        b.reading = Some(Reading { remaining, reserve, reset_at: Instant::now() + reading.reset });
    }

    /// What is left of the service budget (for a gauge), while a reading holds.
    pub fn service_remaining(&self) -> Option<u64> {
        let budgets = self.budgets.lock().unwrap();
        let reading = budgets.get(&BudgetKey::Service)?.reading.as_ref()?;
        (reading.reset_at > Instant::now()).then_some(reading.remaining)
    }
}

/// Whether a budget for `key` may be added: herald's own and the anonymous one always (so that
/// subscribers' credentials can never crowd them out), a subscriber's while fewer than
/// [`MAX_BUDGETS`] are held once the lapsed ones are let go.
fn fits(budgets: &mut HashMap<BudgetKey, Budget>, key: BudgetKey, now: Instant) -> bool {
    if !matches!(key, BudgetKey::Subscriber(_)) || budgets.len() < MAX_BUDGETS {
        return true;
    }
    budgets.retain(|_, b| b.in_flight > 0 || b.reading.as_ref().is_some_and(|r| r.reset_at > now));
    budgets.len() < MAX_BUDGETS
}

impl Draw<'_> {
    /// The answer came with `reading` (or none): it replaces the budget's.
    pub fn answered(self, reading: Option<RateLimit>) {
        if let Some(reading) = reading {
            self.quota.update_from(self.key, reading, self.seq);
        }
    }
}

impl Drop for Draw<'_> {
    fn drop(&mut self) {
        let mut budgets = self.quota.budgets.lock().unwrap();
        if let Some(b) = budgets.get_mut(&self.key) {
            b.in_flight = b.in_flight.saturating_sub(1);
            if b.in_flight == 0 && b.reading.is_none() {
                budgets.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn read(fields: &[(&'static str, &str)]) -> Option<RateLimit> {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        RateLimit::from_headers(&h, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    /// Draws a request from `key`'s budget, waiting as long as it says; whether it waited.
    async fn admit(quota: &Quota, key: BudgetKey) -> (Draw<'_>, bool) {
        let mut waited = false;
        loop {
            match quota.draw(key, Instant::now() + Duration::from_secs(86_400)) {
                Ok((draw, turn)) => {
                    waited |= turn > Instant::now();
                    tokio::time::sleep_until(turn).await;
                    return (draw, waited);
                }
                Err(until) => {
                    waited = true;
                    tokio::time::sleep_until(until).await;
                }
            }
        }
    }

    fn rl(remaining: u64, reset: u64, limit: Option<u64>) -> Option<RateLimit> {
        Some(RateLimit { remaining, reset: Duration::from_secs(reset), limit })
    }

    #[test]
    fn the_current_draft_structured_form() {
        assert_eq!(
            read(&[("ratelimit", "\"default\";r=50;t=30"), ("ratelimit-policy", "\"default\";q=100;w=60")]),
            rl(50, 30, Some(100))
        );
        assert_eq!(read(&[("ratelimit", "\"default\";r=50;t=30")]), rl(50, 30, None));
        // Several policies: the most constrained one counts, with its own limit.
        assert_eq!(
            read(&[
                ("ratelimit", "\"hour\";r=900;t=3000, \"minute\";r=3;t=20"),
                ("ratelimit-policy", "\"hour\";q=1000;w=3600, \"minute\";q=60;w=60"),
            ]),
            rl(3, 20, Some(60))
        );
    }

    #[test]
    fn the_older_draft_forms() {
        assert_eq!(read(&[("ratelimit", "limit=100, remaining=50, reset=30")]), rl(50, 30, Some(100)));
        assert_eq!(
            read(&[("ratelimit-remaining", "7"), ("ratelimit-reset", "12"), ("ratelimit-limit", "10")]),
            rl(7, 12, Some(10))
        );
    }

    #[test]
    fn x_ratelimit_with_a_delta_or_a_unix_time() {
        assert_eq!(read(&[("x-ratelimit-remaining", "4"), ("x-ratelimit-reset", "9")]), rl(4, 9, None));
        assert_eq!(
            read(&[("x-ratelimit-remaining", "4"), ("x-ratelimit-reset", "1700000042"), ("x-ratelimit-limit", "60")]),
            rl(4, 42, Some(60))
        );
        // A reset in the past is now.
        assert_eq!(read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1600000000")]), rl(0, 0, None));
        // A Unix time in milliseconds (some APIs), rounded up to the second.
        assert_eq!(read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000042000")]), rl(0, 42, None));
        assert_eq!(read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000041001")]), rl(0, 42, None));
        assert_eq!(read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1600000000000")]), rl(0, 0, None));
        // A far reset is capped.
        assert_eq!(read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "999999999")]), rl(0, 3600, None));
    }

    #[test]
    fn garbage_is_ignored() {
        for fields in [
            &[("ratelimit", "r=;;t")][..],
            &[("ratelimit", "\"default\";r=-5;t=30")],
            &[("ratelimit", "\"default\";r=5")],
            &[("ratelimit", "\"default\";r=5.5;t=3")],
            &[("ratelimit", "limit=ten, remaining=x")],
            &[("x-ratelimit-remaining", "-1"), ("x-ratelimit-reset", "9")],
            &[("x-ratelimit-remaining", "99999999999999999999999"), ("x-ratelimit-reset", "9")],
            &[("x-ratelimit-remaining", "5")],
            &[("x-ratelimit-reset", "5")],
            &[],
        ] {
            assert_eq!(read(fields), None, "{fields:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn under_the_reserve_the_rest_is_spread_until_the_reset() {
        let quota = Quota::new(Some(10));
        quota.update(BudgetKey::Service, RateLimit { remaining: 5, reset: Duration::from_secs(10), limit: None });
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..5 {
            drop(admit(&quota, BudgetKey::Service).await);
            times.push(start.elapsed());
        }
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_secs(2), "{times:?}");
        }
        // Other budgets are not held back.
        let other = Instant::now();
        assert!(!admit(&quota, BudgetKey::Subscriber(1)).await.1);
        assert_eq!(other.elapsed(), Duration::ZERO);
    }

    // Requests drawn together while the quota is spread each take the next turn, and a turn
    // past the caller's latest is not taken at all (the caller defers instead of waiting).
    #[tokio::test(start_paused = true)]
    async fn requests_drawn_together_take_successive_turns_up_to_the_latest() {
        let quota = Quota::new(Some(10));
        quota.update(BudgetKey::Service, RateLimit { remaining: 5, reset: Duration::from_secs(50), limit: None });
        let now = Instant::now();
        let latest = now + Duration::from_secs(25);
        let turns: Vec<_> = (0..3).map(|_| quota.draw(BudgetKey::Service, latest).unwrap()).collect();
        let at: Vec<_> = turns.iter().map(|(_, turn)| turn.duration_since(now).as_secs()).collect();
        // What is left after each turn is spread over what is left of the window.
        assert_eq!(at, [0, 12, 25]);
        assert_eq!(quota.draw(BudgetKey::Service, latest).err(), Some(now + Duration::from_millis(37_500)));
    }

    // Two requests in flight, answered in the other order: the older answer (more left, as the
    // upstream counted before the newer request) does not raise what is left; a newer one does.
    #[tokio::test(start_paused = true)]
    async fn an_older_answer_never_gives_back_what_a_newer_one_took() {
        let quota = Quota::new(Some(1));
        let far = Instant::now() + Duration::from_secs(60);
        let (older, _) = quota.draw(BudgetKey::Service, far).unwrap();
        let (newer, _) = quota.draw(BudgetKey::Service, far).unwrap();
        newer.answered(Some(RateLimit { remaining: 4, reset: Duration::from_secs(10), limit: None }));
        older.answered(Some(RateLimit { remaining: 5, reset: Duration::from_secs(10), limit: None }));
        // The newer answer counts the older request as possibly not seen: 4 − 1.
        assert_eq!(quota.service_remaining(), Some(3));
        let (next, _) = quota.draw(BudgetKey::Service, far).unwrap();
        next.answered(Some(RateLimit { remaining: 29, reset: Duration::from_secs(15), limit: None }));
        assert_eq!(quota.service_remaining(), Some(29), "a newer answer");
    }

    // Subscribers' credentials, however many, never crowd out herald's own budget.
    #[test]
    fn subscribers_never_crowd_out_herald_s_own_budget() {
        let quota = Quota::new(Some(10));
        let far = Instant::now() + Duration::from_secs(3600);
        for n in 0..MAX_BUDGETS as u64 {
            let (draw, _) = quota.draw(BudgetKey::Subscriber(n), far).unwrap();
            draw.answered(Some(RateLimit { remaining: 0, reset: Duration::from_secs(3600), limit: None }));
        }
        quota.update(BudgetKey::Service, RateLimit { remaining: 0, reset: Duration::from_secs(60), limit: None });
        assert!(quota.draw(BudgetKey::Service, far).is_err(), "herald's own budget is still read and kept");
    }

    #[tokio::test(start_paused = true)]
    async fn above_the_reserve_nothing_waits() {
        let quota = Quota::new(Some(10));
        quota.update(BudgetKey::Service, RateLimit { remaining: 50, reset: Duration::from_secs(10), limit: None });
        let start = Instant::now();
        for _ in 0..40 {
            assert!(!admit(&quota, BudgetKey::Service).await.1);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The 41st is the reserve's first: still at once, the next one spaced.
        drop(admit(&quota, BudgetKey::Service).await);
        drop(admit(&quota, BudgetKey::Service).await);
        assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn none_left_means_none_until_the_reset_and_a_new_reading_replaces_the_old() {
        let quota = Quota::new(None);
        quota.update(BudgetKey::Service, RateLimit { remaining: 0, reset: Duration::from_secs(7), limit: Some(100) });
        let start = Instant::now();
        assert!(admit(&quota, BudgetKey::Service).await.1);
        assert!(start.elapsed() >= Duration::from_secs(7), "{:?}", start.elapsed());
        // The reading expired at its reset: no pacing until the next one.
        let again = Instant::now();
        assert!(!admit(&quota, BudgetKey::Service).await.1);
        assert_eq!(again.elapsed(), Duration::ZERO);

        quota.update(BudgetKey::Service, RateLimit { remaining: 0, reset: Duration::from_secs(30), limit: Some(100) });
        quota.update(BudgetKey::Service, RateLimit { remaining: 90, reset: Duration::from_secs(30), limit: Some(100) });
        let replaced = Instant::now();
        assert!(!admit(&quota, BudgetKey::Service).await.1);
        assert_eq!(replaced.elapsed(), Duration::ZERO);
        assert_eq!(quota.service_remaining(), Some(89));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_takes_off_the_other_requests_in_flight() {
        let quota = Quota::new(Some(1));
        let draws: Vec<_> = draw_n(&quota, 4).await;
        let mut draws = draws.into_iter();
        // The first answer says 5 are left: the other three in flight may not be counted yet.
        draws.next().unwrap().answered(Some(RateLimit { remaining: 5, reset: Duration::from_secs(10), limit: None }));
        assert_eq!(quota.service_remaining(), Some(2));
        drop(draws);
        let budgets = quota.budgets.lock().unwrap();
        assert_eq!(budgets[&BudgetKey::Service].in_flight, 0, "a dropped draw is no longer in flight");
    }

    async fn draw_n(quota: &Quota, n: usize) -> Vec<Draw<'_>> {
        let mut draws = Vec::new();
        for _ in 0..n {
            draws.push(admit(quota, BudgetKey::Service).await.0);
        }
        draws
    }

    #[test]
    fn credentials_pick_the_budget() {
        use http::HeaderName;
        let cred = |v: &'static str| vec![(HeaderName::from_static("authorization"), HeaderValue::from_static(v))];
        // herald's own polls draw from the service budget.
        assert_eq!(BudgetKey::of(false, &[]), BudgetKey::Service);
        assert_eq!(BudgetKey::of(true, &cred("Bearer a")), BudgetKey::of(true, &cred("Bearer a")));
        assert_ne!(BudgetKey::of(true, &cred("Bearer a")), BudgetKey::of(true, &cred("Bearer b")));
        assert!(matches!(BudgetKey::of(true, &cred("Bearer a")), BudgetKey::Subscriber(_)));
        // A request for a subscriber who sent no credential is not herald's own.
        assert_eq!(BudgetKey::of(true, &[]), BudgetKey::Anonymous);
    }

    // An anonymous subscriber's request answered "none left for an hour" stops neither
    // herald's own polls nor a subscriber's with a credential.
    #[tokio::test(start_paused = true)]
    async fn an_anonymous_reading_holds_back_anonymous_requests_only() {
        let quota = Quota::new(None);
        let (draw, _) = admit(&quota, BudgetKey::of(true, &[])).await;
        draw.answered(Some(RateLimit { remaining: 0, reset: Duration::from_secs(3600), limit: None }));
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(quota.draw(BudgetKey::of(true, &[]), soon).is_err(), "anonymous requests wait for the reset");
        assert!(quota.draw(BudgetKey::Service, soon).is_ok(), "herald's own polls are not held back");
        assert!(quota.draw(BudgetKey::Subscriber(1), soon).is_ok());
        assert_eq!(quota.service_remaining(), None, "the gauge shows the service budget only");
    }
}
