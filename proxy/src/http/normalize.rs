//! Request path normalization, before any filter or route sees the request; the normalized
//! path is also what is forwarded, so the application sees exactly what authorization checked.
//!
//! Steps, in Envoy's order (each as configured by the connection manager, see
//! [`PathNormalization`]):
//! 1. the fragment (`#...`) is dropped; the query (`?...`) is set aside, never changed;
//! 2. `%00` anywhere in the path refuses the request, whatever the settings (a NUL that an
//!    application decodes could cut the path it checks short);
//! 3. `%2F` / `%5C` (any case): left as they are, refused, or decoded to `/` and `\`
//!    (`path_with_escaped_slashes_action`);
//! 4. `normalize_path` (RFC 3986, as Envoy's canonicalizer does): percent-encoded unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes get upper-case hex,
//!    backslashes become slashes, bytes that may not appear in a path are percent-encoded,
//!    and `.` / `..` segments are removed;
//! 5. `merge_slashes`: runs of `/` become one.
//!
//! Paths that are not in origin form (`*`, or without a leading `/`) are left alone.

use std::borrow::Cow;

use xds_client::model::{EscapedSlashes, PathNormalization};

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path holds `%00`.
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
    /// The path holds `%2F` or `%5C` and the settings refuse them.
    #[error("the path contains an encoded slash or backslash (%2F, %5C)")]
    EscapedSlash,
    /// The normalized path is not a valid request target.
    #[error("the normalized path is not a valid request target")]
    Unparsable,
}

/// The normalized form of `path_and_query` (borrowed when nothing changes).
pub fn normalize(path_and_query: &str, opts: PathNormalization) -> Result<Cow<'_, str>, PathError> {
    let without_fragment = match path_and_query.find('#') {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    };
    let (path, query) = match without_fragment.find('?') {
        Some(i) => without_fragment.split_at(i),
        None => (without_fragment, ""),
    };
    let bytes = path.as_bytes();
    if contains_escape(bytes, |h, l| h == b'0' && l == b'0') {
        return Err(PathError::EncodedNul);
    }
    let escaped_slash = |h: u8, l: u8| {
        (h == b'2' && l.eq_ignore_ascii_case(&b'f')) || (h == b'5' && l.eq_ignore_ascii_case(&b'c'))
    };
    let mut current: Cow<'_, str> = Cow::Borrowed(path);
    match opts.escaped_slashes {
        EscapedSlashes::Keep => {}
        EscapedSlashes::Reject => {
            if contains_escape(bytes, escaped_slash) {
                return Err(PathError::EscapedSlash);
            }
        }
        EscapedSlashes::UnescapeAndForward => {
            if contains_escape(bytes, escaped_slash) {
                current = Cow::Owned(unescape_slashes(path));
            }
        }
    }
    let origin_form = current.starts_with('/');
    if opts.normalize && origin_form {
        let canonical = canonicalize(&current);
        if canonical != current {
            current = Cow::Owned(canonical);
        }
    }
    if opts.merge_slashes && origin_form && current.contains("//") {
        current = Cow::Owned(merge_slashes(&current));
    }
    match current {
        Cow::Borrowed(_) if without_fragment.len() == path_and_query.len() => {
            Ok(Cow::Borrowed(path_and_query))
        }
        Cow::Borrowed(p) => Ok(Cow::Owned(format!("{p}{query}"))),
        Cow::Owned(mut p) => {
            p.push_str(query);
            Ok(Cow::Owned(p))
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether `bytes` holds a `%XY` escape with `is(X, Y)`.
fn contains_escape(bytes: &[u8], is: impl Fn(u8, u8) -> bool) -> bool {
    bytes.windows(3).any(|w| {
        w[0] == b'%' && hex_value(w[1]).is_some() && hex_value(w[2]).is_some() && is(w[1], w[2])
    })
}

fn unescape_slashes(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let (h, l) = (b[i + 1], b[i + 2]);
            if h == b'2' && l.eq_ignore_ascii_case(&b'f') {
                out.push(b'/');
                i += 3;
                continue;
            }
            if h == b'5' && l.eq_ignore_ascii_case(&b'c') {
                out.push(b'\\');
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes written as they are in a normalized path; anything else is percent-encoded.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'`' | b'#' | b'?' | b'\\')
}

/// RFC 3986 normalization of an origin-form path (see the module's step 4).
fn canonicalize(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_value),
                b.get(i + 2).copied().and_then(hex_value),
            ) {
                let v = h * 16 + l;
                if is_unreserved(v) {
                    decoded.push(v);
                } else {
                    decoded.extend_from_slice(&[b'%', HEX[h as usize], HEX[l as usize]]);
                }
                i += 3;
                continue;
            }
            // A lone '%' is not an escape: encode it so that it cannot become one later.
            decoded.extend_from_slice(b"%25");
        } else if c == b'\\' {
            decoded.push(b'/');
        } else if is_path_char(c) {
            decoded.push(c);
        } else {
            decoded.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        }
        i += 1;
    }
    // Every byte is ASCII now.
    let text = String::from_utf8_lossy(&decoded);
    remove_dot_segments(&text)
}

/// RFC 3986 section 5.2.4 on a path starting with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };
    const MERGE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Keep,
    };
    const DECODE: PathNormalization = PathNormalization {
        normalize: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::UnescapeAndForward,
    };
    const NONE: PathNormalization = PathNormalization {
        normalize: false,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };

    fn n(p: &str, o: PathNormalization) -> String {
        normalize(p, o).unwrap().into_owned()
    }

    #[test]
    fn base() {
        for (input, want) in [
            ("/admin", "/admin"),
            ("/./admin", "/admin"),
            ("/admin/../admin", "/admin"),
            ("/a/b/../../admin", "/admin"),
            ("/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/%2E/admin", "/admin"),
            ("/a\\..\\admin", "/admin"),
            ("//admin", "//admin"),
            ("/admin%2Fx", "/admin%2Fx"),
            ("/admin%2fx", "/admin%2Fx"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a?x=/../b", "/a?x=/../b"),
            ("/a/../b?q#frag", "/b?q"),
            ("/a#/../admin", "/a"),
            ("/100%", "/100%25"),
            ("/é", "/%C3%A9"),
            ("*", "*"),
        ] {
            assert_eq!(n(input, BASE), want, "{input}");
        }
    }

    #[test]
    fn merge_and_decode() {
        assert_eq!(n("//admin", MERGE), "/admin");
        assert_eq!(n("/a///b//", MERGE), "/a/b/");
        assert_eq!(n("/admin%2Fx", MERGE), "/admin%2Fx");
        assert_eq!(n("/admin%2Fx", DECODE), "/admin/x");
        assert_eq!(n("/admin%5c..%5cx", DECODE), "/x");
        assert_eq!(n("%2Fadmin", DECODE), "/admin");
        assert_eq!(n("/%2F/admin", DECODE), "/admin");
    }

    #[test]
    fn refused() {
        assert_eq!(normalize("/a%00b", BASE), Err(PathError::EncodedNul));
        assert_eq!(normalize("/a%00b", NONE), Err(PathError::EncodedNul));
        let reject = PathNormalization {
            escaped_slashes: EscapedSlashes::Reject,
            ..BASE
        };
        assert_eq!(normalize("/a%2fb", reject), Err(PathError::EscapedSlash));
        assert_eq!(n("/a?x=%2F", reject), "/a?x=%2F");
    }

    #[test]
    fn unchanged_is_borrowed() {
        assert!(matches!(normalize("/a/b?c", BASE), Ok(Cow::Borrowed(_))));
        assert_eq!(n("/a/./b", NONE), "/a/./b");
    }
}
