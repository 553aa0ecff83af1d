//! Fuzzing of what the exchange receives (issue 13): the gRPC messages a peer sends
//! (`WatchRequest`, `PullRequest`, `IdentifyRequest` to a server; `ExportEvent`, `SyncData`
//! to a client), decoded from junk and from mutated real encodings, and converted to the
//! plugin API's model, never panic; what converts has passed validation.
//!
//! Stable Rust, with proptest: `SYNCER_FUZZ_CASES` inputs per target (default 500 in the
//! suite). The long run, at least 10^6 inputs per target:
//! `SYNCER_FUZZ_CASES=1000000 cargo test --release --test fuzz_exchange`.

mod support;

use proptest::prelude::*;
use prost::Message;
use syncer::exchange::convert::{event_from_wire, snapshot_from_wire, snapshot_to_wire};
use syncer::exchange::proto::{
    ExportEvent, IdentifyRequest, InstanceRef, PullRequest, SyncData, WatchRequest,
};
use syncer_plugin_api::{Instance, Service, Snapshot};

use support::fuzz::config;

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9/_.:-]{0,12}", "\\PC{0,8}", Just(String::new())]
}

/// A snapshot with arbitrary ids, names and endpoints.
fn snapshot() -> impl Strategy<Value = Snapshot> {
    let service =
        (text(), text(), text(), text(), text()).prop_map(|(id, app, name, version, dp)| Service {
            service_id: id,
            app_id: app,
            service_name: name,
            version,
            domain_project: dp,
            ..Default::default()
        });
    let instance = (
        text(),
        text(),
        proptest::collection::vec(text(), 0..3),
        text(),
    )
        .prop_map(|(id, sid, endpoints, host)| Instance {
            instance_id: id,
            service_id: sid,
            endpoints,
            host_name: host,
            ..Default::default()
        });
    (
        proptest::collection::vec(service, 0..4),
        proptest::collection::vec(instance, 0..6),
    )
        .prop_map(|(services, instances)| Snapshot {
            services,
            instances,
        })
}

/// A real encoding with a few byte edits.
fn mutate(mut data: Vec<u8>, edits: Vec<(u8, usize, u8)>) -> Vec<u8> {
    for (kind, at, byte) in edits {
        let at = at % (data.len() + 1);
        match kind {
            0 if at < data.len() => data[at] = byte,
            1 => data.insert(at, byte),
            _ => data.truncate(at),
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    proptest::collection::vec((0u8..3, any::<usize>(), any::<u8>()), 0..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_never_panic_when_decoded(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = WatchRequest::decode(bytes.as_slice());
        let _ = PullRequest::decode(bytes.as_slice());
        let _ = IdentifyRequest::decode(bytes.as_slice());
    }

    #[test]
    fn junk_events_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(event) = ExportEvent::decode(bytes.as_slice()) {
            let _ = event_from_wire(event);
        }
        if let Ok(data) = SyncData::decode(bytes.as_slice()) {
            let _ = snapshot_from_wire(data);
        }
    }

    #[test]
    fn mutated_exports_never_panic(snapshot in snapshot(), edits in edits(), removed in text()) {
        let data = snapshot_to_wire("site-a", "servicecenter", &snapshot);
        let event = ExportEvent {
            cluster: "site-a".into(),
            epoch: 1,
            revision: 2,
            full: false,
            data: Some(data.clone()),
            removed: vec![InstanceRef { service_id: removed.clone(), instance_id: removed }],
            more: false,
            changed_at_ms: 1_700_000_000_000,
        };
        let bytes = mutate(event.encode_to_vec(), edits.clone());
        if let Ok(event) = ExportEvent::decode(bytes.as_slice()) {
            let _ = event_from_wire(event);
        }
        let bytes = mutate(data.encode_to_vec(), edits);
        if let Ok(data) = SyncData::decode(bytes.as_slice()) {
            let _ = snapshot_from_wire(data);
        }
    }
}
