//! Holding `data` and `traits` to the limits: nesting depth, string lengths and size,
//! with the path to the value at fault.

use serde_json::{Map, Value as Json};

use super::{Limits, kind};

/// An optional object, checked for depth and string lengths; errors name the path.
pub(super) fn object(
    v: Option<Json>,
    name: &str,
    limits: &Limits,
) -> Result<Map<String, Json>, (String, String)> {
    match v {
        None | Some(Json::Null) => Ok(Map::new()),
        Some(Json::Object(m)) => {
            if let Some(k) = m.keys().find(|k| k.len() > limits.string_bytes_max) {
                let e = OverLimit {
                    path: Vec::new(),
                    string_bytes: Some(k.len()),
                    key: true,
                };
                return Err(e.describe(name, limits));
            }
            for (k, v) in &m {
                if let Err(mut e) = check(v, 1, limits) {
                    e.path.push(Segment::Key(k));
                    return Err(e.describe(name, limits));
                }
            }
            Ok(m)
        }
        Some(other) => Err((
            name.to_string(),
            format!("`{name}` must be an object, found {}", kind(&other)),
        )),
    }
}

/// One step of the path to a value inside `data` or `traits`.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// A value over a limit: the path to it is collected innermost first, on the way out,
/// so a value within the limits costs no formatting.
struct OverLimit<'a> {
    path: Vec<Segment<'a>>,
    /// The string's length, or `None` when nested too deep.
    string_bytes: Option<usize>,
    /// The string is a key of the object at `path`, not a value.
    key: bool,
}

impl OverLimit<'_> {
    fn describe(&self, root: &str, limits: &Limits) -> (String, String) {
        let mut path = root.to_string();
        for seg in self.path.iter().rev() {
            match seg {
                Segment::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        let reason = match self.string_bytes {
            Some(n) if self.key => format!(
                "`{path}` has a key of {n} bytes, over the limit of {}",
                limits.string_bytes_max
            ),
            Some(n) => format!(
                "`{path}` is {n} bytes, over the limit of {}",
                limits.string_bytes_max
            ),
            None => format!(
                "`{path}` is nested deeper than the limit of {}",
                limits.depth_max
            ),
        };
        (path, reason)
    }
}

fn check<'a>(v: &'a Json, depth: usize, limits: &Limits) -> Result<(), OverLimit<'a>> {
    match v {
        Json::String(s) if s.len() > limits.string_bytes_max => Err(OverLimit {
            path: Vec::new(),
            string_bytes: Some(s.len()),
            key: false,
        }),
        Json::Array(_) | Json::Object(_) if depth >= limits.depth_max => Err(OverLimit {
            path: Vec::new(),
            string_bytes: None,
            key: false,
        }),
        Json::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                check(x, depth + 1, limits).map_err(|mut e| {
                    e.path.push(Segment::Index(i));
                    e
                })?;
            }
            Ok(())
        }
        Json::Object(m) => {
            if let Some(k) = m.keys().find(|k| k.len() > limits.string_bytes_max) {
                return Err(OverLimit {
                    path: Vec::new(),
                    string_bytes: Some(k.len()),
                    key: true,
                });
            }
            for (k, x) in m {
                check(x, depth + 1, limits).map_err(|mut e| {
                    e.path.push(Segment::Key(k));
                    e
                })?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The length of a map as compact JSON, counted without building the text.
pub(super) fn json_bytes(m: &Map<String, Json>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if m.is_empty() {
        return 0;
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, m);
    c.0
}
