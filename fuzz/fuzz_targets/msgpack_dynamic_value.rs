//! Terraform's msgpack `DynamicValue`s, decoded against every type the provider declares
//! (resources, data sources, the provider block). A value that decodes must encode and decode
//! back to itself.
#![no_main]

use std::sync::OnceLock;

use gpucap_provider::provider::Provider;
use gpucap_provider::value::Type;
use gpucap_provider::wire::codec::{decode_msgpack, encode_msgpack};
use libfuzzer_sys::fuzz_target;

fn types() -> &'static [Type] {
    static TYPES: OnceLock<Vec<Type>> = OnceLock::new();
    TYPES.get_or_init(|| {
        let provider = Provider::new();
        let mut types: Vec<Type> = provider
            .resources()
            .map(|r| r.state_type().clone())
            .collect();
        types.extend(provider.data_sources().map(|d| d.state_type().clone()));
        types.push(Provider::provider_type().clone());
        types.push(Type::Dynamic);
        types
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let types = types();
    let ty = &types[pick as usize % types.len()];
    if let Ok(value) = decode_msgpack(bytes, ty) {
        // NaN is not equal to itself; everything else must survive the round trip.
        if format!("{value:?}").contains("NaN") {
            return;
        }
        let encoded = encode_msgpack(&value, ty).expect("a decoded value encodes");
        let again = decode_msgpack(&encoded, ty).expect("an encoded value decodes");
        assert_eq!(again, value);
    }
});
