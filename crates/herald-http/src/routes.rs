//! Matching request paths against the configured route patterns.

use herald_config::{parse_pattern, Route, Segment};

pub(crate) struct RouteTable {
    patterns: Vec<Vec<Segment>>,
}

impl RouteTable {
    pub(crate) fn new(routes: &[Route]) -> Self {
        RouteTable {
            patterns: routes.iter().map(|r| parse_pattern(&r.path).expect("validated by herald-config")).collect(),
        }
    }

    /// The index of the route `path` matches, preferring the pattern with the most literal segments.
    pub(crate) fn find(&self, path: &str) -> Option<usize> {
        let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let segs: &[&str] = if segs == [""] { &[] } else { &segs };
        self.patterns
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.len() == segs.len()
                    && p.iter().zip(segs).all(|(p, s)| match p {
                        Segment::Literal(l) => l == s,
                        Segment::Param(_) => !s.is_empty(),
                    })
            })
            .max_by_key(|(i, p)| (p.iter().filter(|s| matches!(s, Segment::Literal(_))).count(), usize::MAX - i))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[&str]) -> RouteTable {
        RouteTable { patterns: paths.iter().map(|p| parse_pattern(p).unwrap()).collect() }
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
