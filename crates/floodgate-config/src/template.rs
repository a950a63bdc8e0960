//! Path templates (`/products/{id}`, `/files/{*rest}`) for matching, and text templates
//! (`https://x{path}{query}`, `/v2/items/{id}`) for rewrites and redirects. They live in the
//! config crate so validation and the router read them the same way.

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Matches one non-empty segment and binds it.
    Param(String),
    /// Matches the rest of the path (possibly empty) and binds it; only last.
    Rest(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The segments after the leading `/`.
    pub segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template; the message says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let body = s
            .strip_prefix('/')
            .ok_or_else(|| format!("path {s:?} must start with `/`"))?;
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (rest, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "invalid parameter `{{{inner}}}` in {s:?}: names use letters, digits and `_`"
                    ));
                }
                if rest && i + 1 != parts.len() {
                    return Err(format!("`{{*{name}}}` must be the last segment of {s:?}"));
                }
                if rest {
                    Segment::Rest(name.to_owned())
                } else {
                    Segment::Param(name.to_owned())
                }
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "segment {part:?} of {s:?}: a parameter must fill a whole segment, as in /items/{{id}}"
                ));
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(seg);
        }
        let mut names: Vec<&str> = segments.iter().filter_map(|s| s.name()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("{s:?} binds the same parameter twice"));
        }
        Ok(PathTemplate { segments })
    }

    /// Whether the template has no parameters (an exact path).
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Names of the parameters it binds.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| s.name())
    }

    /// Matches `path` (which starts with `/`), pushing bound parameters to `params`.
    pub fn matches<'p>(&self, path: &'p str, params: &mut Vec<(String, &'p str)>) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let start = params.len();
        for (i, seg) in self.segments.iter().enumerate() {
            if let Segment::Rest(name) = seg {
                params.push((name.clone(), rest));
                return true;
            }
            let (part, tail) = match rest.find('/') {
                Some(j) => (&rest[..j], Some(&rest[j + 1..])),
                None => (rest, None),
            };
            let ok = match seg {
                Segment::Literal(l) => l == part,
                Segment::Param(name) => {
                    let ok = !part.is_empty();
                    if ok {
                        params.push((name.clone(), part));
                    }
                    ok
                }
                Segment::Rest(_) => true,
            };
            let last = i + 1 == self.segments.len();
            match (ok, tail, last) {
                (true, None, true) => return true,
                (true, Some(t), false) => rest = t,
                _ => {
                    params.truncate(start);
                    return false;
                }
            }
        }
        params.truncate(start);
        false
    }
}

impl Segment {
    fn name(&self) -> Option<&str> {
        match self {
            Segment::Literal(_) => None,
            Segment::Param(n) | Segment::Rest(n) => Some(n),
        }
    }
}

/// A piece of a text template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copied as is.
    Literal(String),
    /// Replaced by the named value.
    Var(String),
}

/// A text with `{name}` placeholders; `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextTemplate {
    /// The pieces in order.
    pub parts: Vec<Part>,
}

impl TextTemplate {
    /// Parses a text template.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' => name.push(ch),
                            _ => {
                                return Err(format!(
                                    "invalid placeholder in {s:?}: expected {{name}}"
                                ));
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("empty placeholder `{{}}` in {s:?}"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in {s:?} (write `}}}}` for a literal brace)"
                    ));
                }
                other => lit.push(other),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(TextTemplate { parts })
    }

    /// Placeholder names used.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Renders the template, asking `value` for each placeholder (missing ones render empty).
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => out.push_str(value(v).unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'p>(t: &str, path: &'p str) -> Option<Vec<(String, &'p str)>> {
        let t = PathTemplate::parse(t).expect("template");
        let mut params = Vec::new();
        t.matches(path, &mut params).then_some(params)
    }

    #[test]
    fn path_templates() {
        assert_eq!(
            m("/products/{id}", "/products/42"),
            Some(vec![("id".into(), "42")])
        );
        assert_eq!(m("/products/{id}", "/products/"), None);
        assert_eq!(m("/products/{id}", "/products/42/x"), None);
        assert_eq!(m("/products", "/products"), Some(vec![]));
        assert_eq!(m("/products", "/products/"), None);
        assert_eq!(m("/", "/"), Some(vec![]));
        assert_eq!(
            m("/f/{*rest}", "/f/a/b"),
            Some(vec![("rest".into(), "a/b")])
        );
        assert_eq!(m("/f/{*rest}", "/f/"), Some(vec![("rest".into(), "")]));
        assert_eq!(
            m("/a/{x}/b/{y}", "/a/1/b/2"),
            Some(vec![("x".into(), "1"), ("y".into(), "2")])
        );
        assert!(PathTemplate::parse("/a/{*r}/b").is_err());
        assert!(PathTemplate::parse("/a/x{id}").is_err());
        assert!(PathTemplate::parse("a").is_err());
        assert!(PathTemplate::parse("/{a}/{a}").is_err());
    }

    #[test]
    fn text_templates() {
        let t = TextTemplate::parse("https://x{path}{query}?{{lit}}").expect("parses");
        let out = t.render(|v| match v {
            "path" => Some("/a"),
            "query" => Some("?b=1"),
            _ => None,
        });
        assert_eq!(out, "https://x/a?b=1?{lit}");
        assert!(TextTemplate::parse("/{").is_err());
        assert!(TextTemplate::parse("/}").is_err());
    }
}
