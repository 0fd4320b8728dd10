//! tfplugin5 requests as Terraform sends them: the protobuf message of each RPC that carries
//! values, then every `DynamicValue` in it decoded as the provider decodes them, against the
//! schema of the type the request names; configurations that decode are validated, and raw
//! states go through the provider's state upgrade.
#![no_main]

use std::sync::OnceLock;

use gpucap_provider::provider::Provider;
use gpucap_provider::value::{Type, Value};
use gpucap_provider::wire::convert::decode;
use gpucap_provider::wire::proto as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn provider() -> &'static Provider {
    static PROVIDER: OnceLock<Provider> = OnceLock::new();
    PROVIDER.get_or_init(Provider::new)
}

/// The state type of a resource or data source by name; the provider block's otherwise.
fn type_of(name: &str) -> &'static Type {
    let p = provider();
    p.resources()
        .find(|r| r.type_name() == name)
        .map(|r| r.state_type())
        .or_else(|| {
            p.data_sources()
                .find(|d| d.type_name() == name)
                .map(|d| d.state_type())
        })
        .unwrap_or_else(|| Provider::provider_type())
}

fn values(name: &str, values: &[Option<&pb::DynamicValue>]) {
    let ty = type_of(name);
    for v in values {
        let _ = decode(*v, ty);
    }
}

/// A configuration decoded and, when it decodes, validated as the RPC validates it.
fn config(name: &str, config: Option<&pb::DynamicValue>, validate: impl Fn(&Value)) {
    if let Ok(value) = decode(config, type_of(name)) {
        validate(&value);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    match pick % 9 {
        0 => {
            if let Ok(r) = pb::plan_resource_change::Request::decode(bytes) {
                let v = [
                    r.prior_state.as_ref(),
                    r.proposed_new_state.as_ref(),
                    r.config.as_ref(),
                    r.provider_meta.as_ref(),
                ];
                values(&r.type_name, &v);
            }
        }
        1 => {
            if let Ok(r) = pb::apply_resource_change::Request::decode(bytes) {
                let v = [
                    r.prior_state.as_ref(),
                    r.planned_state.as_ref(),
                    r.config.as_ref(),
                ];
                values(&r.type_name, &v);
            }
        }
        2 => {
            if let Ok(r) = pb::read_resource::Request::decode(bytes) {
                values(
                    &r.type_name,
                    &[r.current_state.as_ref(), r.provider_meta.as_ref()],
                );
            }
        }
        3 => {
            if let Ok(r) = pb::validate_resource_type_config::Request::decode(bytes) {
                config(&r.type_name, r.config.as_ref(), |v| {
                    let _ = provider().validate_resource(&r.type_name, v);
                });
            }
        }
        4 => {
            if let Ok(r) = pb::validate_data_source_config::Request::decode(bytes) {
                config(&r.type_name, r.config.as_ref(), |v| {
                    let _ = provider().validate_data_source(&r.type_name, v);
                });
            }
        }
        5 => {
            if let Ok(r) = pb::configure::Request::decode(bytes) {
                values("", &[r.config.as_ref()]);
            }
        }
        6 => {
            if let Ok(r) = pb::prepare_provider_config::Request::decode(bytes) {
                config("", r.config.as_ref(), |v| {
                    let _ = provider().validate_config(v);
                });
            }
        }
        7 => {
            if let Ok(r) = pb::read_data_source::Request::decode(bytes) {
                values(&r.type_name, &[r.config.as_ref(), r.provider_meta.as_ref()]);
            }
        }
        _ => {
            if let Ok(r) = pb::upgrade_resource_state::Request::decode(bytes) {
                let raw = r.raw_state.as_ref().map_or(&[][..], |s| &s.json[..]);
                let _ = provider().upgrade_resource_state(&r.type_name, r.version, raw);
            }
        }
    }
});
