//! The fabric's router config (TOML): any text is parsed and validated into a fabric or an error,
//! never a panic; a config that parses writes back to text that parses to the same config.
#![no_main]

use gpucap_fabric::config::FabricConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<FabricConfig>(text) else {
        return;
    };
    let _ = config.validate_for_simulation();
    let _ = config.validate("digest");
    if let Ok((written, _)) = config.to_file_text() {
        let again: FabricConfig = toml::from_str(&written).expect("written config parses");
        // NaN is not equal to itself; every other value must survive the round trip.
        if !format!("{config:?}").contains("NaN") {
            assert_eq!(again, config, "a config changed on a round trip:\n{written}");
        }
        assert_eq!(
            again.to_file_text().expect("writes again").0,
            written,
            "a config's text changed on a second round trip"
        );
    }
});
