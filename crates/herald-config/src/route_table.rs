//! Matching request paths against the configured route patterns.

use crate::{parse_pattern, Route, Segment};

pub struct RouteTable {
    /// Each route's segments, and how many of them are literal (more literal wins).
    patterns: Vec<(Vec<Segment>, usize)>,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        // An invalid pattern (reported by validation) matches nothing.
        RouteTable::from_patterns(routes.iter().map(|r| parse_pattern(&r.path).unwrap_or_else(|| vec![invalid()])))
    }

    fn from_patterns(patterns: impl Iterator<Item = Vec<Segment>>) -> Self {
        let literals = |p: &[Segment]| p.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        RouteTable {
            patterns: patterns
                .map(|p| {
                    let n = literals(&p);
                    (p, n)
                })
                .collect(),
        }
    }

    /// The index of the route `path` matches, preferring the pattern with the most literal
    /// segments, then the first one configured. Runs for every request: allocates nothing.
    pub fn find(&self, path: &str) -> Option<usize> {
        let rest = path.strip_prefix('/')?;
        let len = if rest.is_empty() { 0 } else { rest.split('/').count() };
        let mut best: Option<(usize, usize)> = None;
        for (i, (pattern, literals)) in self.patterns.iter().enumerate() {
            let matches = pattern.len() == len
                && pattern.iter().zip(rest.split('/')).all(|(p, s)| match p {
                    Segment::Literal(l) => l == s,
                    Segment::Param(_) => !s.is_empty(),
                });
            if matches && best.is_none_or(|(_, most)| *literals > most) {
                best = Some((i, *literals));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// A segment no path segment equals (paths never hold `{`).
fn invalid() -> Segment {
    Segment::Literal("{".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[&str]) -> RouteTable {
        RouteTable::from_patterns(paths.iter().map(|p| parse_pattern(p).unwrap()))
    }

    #[test]
    fn literal_segments_win() {
        let t = table(&["/tasks", "/tasks/{id}", "/tasks/open", "/"]);
        assert_eq!(t.find("/tasks"), Some(0));
        assert_eq!(t.find("/tasks/42"), Some(1));
        assert_eq!(t.find("/tasks/open"), Some(2));
        assert_eq!(t.find("/"), Some(3));
        assert_eq!(t.find("/tasks/"), None);
        assert_eq!(t.find("/tasks/1/x"), None);
        assert_eq!(t.find("/other"), None);
    }
}
