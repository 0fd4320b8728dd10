//! The gateway's configuration as it arrives from outside: an endpoint's keys file (JSON, from
//! the daemon's admin API or a hand) and the router config's `[auth]` and `[tls]` tables (TOML).
//! Any text is parsed and checked into keys or an error that names where, never a panic; keys
//! that check write back to a file that reads the same.
#![no_main]

use gpucap_fabric::config::{AuthSection, TlsSection};
use gpucap_fabric::gateway::keys::KeysFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => match KeysFile::parse(text) {
            Ok(file) => {
                if let Ok(keys) = file.check() {
                    let written = serde_json::to_string(&file).expect("keys write as JSON");
                    let again = KeysFile::parse(&written).expect("written keys parse");
                    assert_eq!(again, file, "keys changed on a round trip");
                    assert_eq!(again.check().expect("written keys check").len(), keys.len());
                }
            }
            Err(e) => assert!(!e.is_empty()),
        },
        1 => {
            if let Ok(auth) = toml::from_str::<AuthSection>(text) {
                let written = toml::to_string(&auth).expect("[auth] writes as TOML");
                assert_eq!(toml::from_str::<AuthSection>(&written).expect("reads back"), auth);
            }
        }
        _ => {
            if let Ok(tls) = toml::from_str::<TlsSection>(text) {
                let written = toml::to_string(&tls).expect("[tls] writes as TOML");
                assert_eq!(toml::from_str::<TlsSection>(&written).expect("reads back"), tls);
            }
        }
    }
});
