//! API keys and their roles.
//!
//! A keys file (or the `HUNT_API_KEYS` variable) holds one key per line:
//! `<name> <role>[,<role>…] <secret>`, with `#` comments. Roles are `ingest` (post
//! events), `read` (queries) and `admin` (hunts file versions; implies the others).
//! Keys are compared in constant time, against every key, so the time taken says
//! nothing about which key or how much of it matched.

use std::fmt;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        })
    }
}

/// The shortest secret accepted: shorter ones are guessable.
pub const SECRET_BYTES_MIN: usize = 16;

#[derive(Clone)]
struct Key {
    name: String,
    secret: Vec<u8>,
    roles: Vec<Role>,
}

/// The configured keys (none: development mode, loopback only).
#[derive(Clone, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.name))
            .finish()
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no API key: send `Authorization: Bearer <key>` or `X-Api-Key: <key>`")]
    Missing,
    #[error("the API key is not one this server knows")]
    Unknown,
    #[error("the API key `{name}` lacks the `{role}` role")]
    Forbidden { name: String, role: Role },
}

impl Keys {
    /// Reads keys; `source` names where they came from, for errors.
    pub fn parse(text: &str, source: &str) -> Result<Keys, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{source}:{}", n + 1);
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, roles, secret] = parts[..] else {
                return Err(format!(
                    "{at}: expected `<name> <role>[,<role>…] <secret>`, got {} field(s)",
                    parts.len()
                ));
            };
            let roles = roles
                .split(',')
                .map(|r| match r {
                    "ingest" => Ok(Role::Ingest),
                    "read" => Ok(Role::Read),
                    "admin" => Ok(Role::Admin),
                    other => Err(format!(
                        "{at}: unknown role `{other}` (roles: ingest, read, admin)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if secret.len() < SECRET_BYTES_MIN {
                return Err(format!(
                    "{at}: the secret of `{name}` is {} bytes; use at least {SECRET_BYTES_MIN}",
                    secret.len()
                ));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(format!("{at}: a second key named `{name}`"));
            }
            keys.push(Key {
                name: name.to_string(),
                secret: secret.as_bytes().to_vec(),
                roles,
            });
        }
        Ok(Keys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The name of the key presented, if it exists and has `role`.
    pub fn check(&self, presented: Option<&[u8]>, role: Role) -> Result<&str, Denied> {
        let presented = presented.ok_or(Denied::Missing)?;
        let mut found = None;
        for k in &self.keys {
            if constant_time_eq(&k.secret, presented) {
                found = Some(k);
            }
        }
        let k = found.ok_or(Denied::Unknown)?;
        if k.roles.contains(&role) || k.roles.contains(&Role::Admin) {
            Ok(&k.name)
        } else {
            Err(Denied::Forbidden {
                name: k.name.clone(),
                role,
            })
        }
    }
}

/// Equal bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // Keep the compiler from ending the loop early.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_secrets() {
        let keys = Keys::parse(
            "# shop keys\nstorefront ingest 0123456789abcdef\nops admin fedcba9876543210fedc\n",
            "keys",
        )
        .unwrap();
        assert_eq!(
            keys.check(Some(b"0123456789abcdef"), Role::Ingest),
            Ok("storefront")
        );
        assert!(matches!(
            keys.check(Some(b"0123456789abcdef"), Role::Read),
            Err(Denied::Forbidden { .. })
        ));
        assert_eq!(
            keys.check(Some(b"fedcba9876543210fedc"), Role::Read),
            Ok("ops")
        );
        assert_eq!(
            keys.check(Some(b"0123456789abcdeF"), Role::Ingest),
            Err(Denied::Unknown)
        );
        assert_eq!(
            keys.check(Some(b"0123456789abcde"), Role::Ingest),
            Err(Denied::Unknown)
        );
        assert_eq!(keys.check(None, Role::Ingest), Err(Denied::Missing));
    }

    #[test]
    fn bad_key_files_name_the_line() {
        let e =
            Keys::parse("a ingest 0123456789abcdef\nb reader 0123456789abcdef0", "k").unwrap_err();
        assert!(e.contains("k:2") && e.contains("reader"), "{e}");
        let e = Keys::parse("a ingest short", "k").unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        let e = Keys::parse("a ingest", "k").unwrap_err();
        assert!(e.contains("k:1"), "{e}");
    }

    #[test]
    fn comparison_ignores_nothing() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"\0"));
    }
}
