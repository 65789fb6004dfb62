//! Representations: what the upstream last answered, normalized and hashed for change detection.

use std::sync::Arc;

use bytes::Bytes;

/// The state of one watched resource.
#[derive(Debug, Clone)]
pub struct Representation {
    /// The normalized body, parsed: what the diff engines compare.
    pub value: Arc<serde_json::Value>,
    /// The body as events carry it: compact one-line JSON with the `ignore` pointers removed.
    /// A body that is not JSON is carried as a JSON string.
    pub data: Bytes,
    /// blake3 of `data`: equal hashes mean no change worth an event.
    pub hash: blake3::Hash,
    /// The upstream's ETag and Last-Modified, for conditional polls.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The body as the upstream sent it, and its content type: what legacy pollers are answered.
    pub body: Bytes,
    pub content_type: Option<String>,
    /// What diffing towards this representation learnt about it, reused by the next diff.
    pub prints: Arc<crate::diff::Prints>,
}

impl Representation {
    /// Normalizes an upstream body: JSON is re-encoded compactly without the `ignore` pointers,
    /// anything else becomes a JSON string of its (lossy UTF-8) text.
    pub fn from_body(body: Bytes, ignore: &[String]) -> Representation {
        let value = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(mut value) => {
                for ptr in ignore {
                    remove_pointer(&mut value, ptr);
                }
                value
            }
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()),
        };
        let data = serde_json::to_vec(&value).expect("a JSON value always serializes");
        let hash = blake3::hash(&data);
        Representation {
            value: Arc::new(value),
            data: Bytes::from(data),
            hash,
            etag: None,
            last_modified: None,
            body,
            content_type: None,
            prints: Arc::default(),
        }
    }

    /// A representation herald assembled itself (a collection merged from a delta): `value`
    /// is normalized like an upstream body, and the body legacy pollers get is its encoding.
    pub fn from_value(mut value: serde_json::Value, ignore: &[String]) -> Representation {
        for ptr in ignore {
            remove_pointer(&mut value, ptr);
        }
        let data = Bytes::from(serde_json::to_vec(&value).expect("a JSON value always serializes"));
        Representation {
            value: Arc::new(value),
            hash: blake3::hash(&data),
            body: data.clone(),
            data,
            etag: None,
            last_modified: None,
            content_type: Some("application/json".into()),
            prints: Arc::default(),
        }
    }

    /// herald's own strong ETag for this representation.
    pub fn strong_etag(&self) -> String {
        format!("\"{}\"", &self.hash.to_hex()[..32])
    }
}

/// Removes what a JSON Pointer (RFC 6901) designates; a pointer that designates nothing is fine.
pub fn remove_pointer(value: &mut serde_json::Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(serde_json::Value::Object(map)) => {
            map.remove(&last);
        }
        Some(serde_json::Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < items.len() {
                    items.remove(i);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_pointers_do_not_change_the_hash() {
        let ignore = vec!["/meta/generated_at".to_string()];
        let a = Representation::from_body(
            Bytes::from_static(br#"{"items":[1,2],"meta":{"generated_at":"10:00"}}"#),
            &ignore,
        );
        let b = Representation::from_body(
            Bytes::from_static(br#"{ "items": [1, 2], "meta": {"generated_at": "10:05"} }"#),
            &ignore,
        );
        let c = Representation::from_body(
            Bytes::from_static(br#"{"items":[1,3],"meta":{"generated_at":"10:05"}}"#),
            &ignore,
        );
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert_eq!(&a.data[..], br#"{"items":[1,2],"meta":{}}"#);
    }

    /// Found by fuzzing (fuzz/corpus/diff): without serde_json's `float_roundtrip`, a number
    /// could reach subscribers one bit off from what the upstream sent.
    #[test]
    fn numbers_reach_subscribers_as_the_upstream_wrote_them() {
        for n in ["6.666666666666667e85", "0.1", "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308"] {
            let r = Representation::from_body(Bytes::from(format!("[{n}]")), &[]);
            let back: f64 = serde_json::from_slice::<Vec<f64>>(&r.data).unwrap()[0];
            assert_eq!(back, n.parse::<f64>().unwrap(), "{n} became {}", String::from_utf8_lossy(&r.data));
        }
    }

    #[test]
    fn non_json_bodies_become_strings() {
        let r = Representation::from_body(Bytes::from_static(b"hello\nworld"), &[]);
        assert_eq!(&r.data[..], br#""hello\nworld""#);
    }

    #[test]
    fn pointer_escapes_and_arrays() {
        let mut v = serde_json::json!({"a/b": 1, "m~n": 2, "list": [1, 2, 3]});
        remove_pointer(&mut v, "/a~1b");
        remove_pointer(&mut v, "/m~0n");
        remove_pointer(&mut v, "/list/1");
        remove_pointer(&mut v, "/nothing/here");
        assert_eq!(v, serde_json::json!({"list": [1, 3]}));
    }
}
