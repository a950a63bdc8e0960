//! The WAF's normaliser and patterns (crates/floodgate-proxy/src/waf.rs) over any bytes:
//! never a panic (percent, JSON and HTML decoding of broken or partial escapes included).
#![no_main]

use floodgate_proxy::waf::WafPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static WAF: std::sync::OnceLock<WafPolicy> = std::sync::OnceLock::new();
    let waf = WAF.get_or_init(|| {
        WafPolicy::compile(&floodgate_config::waf::Waf {
            mode: floodgate_config::waf::WafMode::Block,
            rules: vec![
                floodgate_config::waf::WafRule::Sqli,
                floodgate_config::waf::WafRule::Xss,
            ],
            inspect_body: floodgate_config::value::ByteSize(65536),
        })
    });
    let _ = waf.check_text(data);
});
